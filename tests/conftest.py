"""Fixtures shared by the tests (data and settings live in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from scgpcl import SCGPCL

from helpers import toy_counts

#: what the session started with; every test starts from it again (see _threads_as_at_the_start)
_SESSION_OMP = os.environ.get("OMP_NUM_THREADS")
_SESSION_THREADS = torch.get_num_threads()


def _restore_threads() -> None:
    if _SESSION_OMP is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = _SESSION_OMP
    if torch.get_num_threads() != _SESSION_THREADS:
        torch.set_num_threads(_SESSION_THREADS)


@pytest.fixture(autouse=True)
def _threads_as_at_the_start():
    """Each test starts with the session's OMP_NUM_THREADS and torch thread count.

    tools/bad_inputs.py's build(), which test_bad_inputs runs in this process, left OMP_NUM_THREADS=1 in
    os.environ while torch kept 2 threads (fixed there). Training warns when the two differ
    (scgpcl._threads.thread_count_problem), so later tests that allow no warning failed in CI; this keeps
    any such leak from reaching the next test.
    """
    _restore_threads()
    yield
    _restore_threads()


@pytest.fixture(scope="module")
def toy():
    """180 cells x 150 genes of negative-binomial counts in three groups (obs['cell_type'])."""
    return toy_counts()


@pytest.fixture(scope="module")
def small_toy():
    """60 cells x 60 genes of the same kind as ``toy``, for tests that train several times or on K = n cells."""
    return toy_counts(n_per=20, n_genes=60)


@pytest.fixture
def locked(tmp_path, monkeypatch):
    """A folder that os.access reports as not writable (chmod does not stop root, so patch it)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == folder.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)

    def no_training(self, **kwargs):
        raise AssertionError("training started although the output cannot be written")

    monkeypatch.setattr(SCGPCL, "train", no_training)
    return folder


def pytest_sessionfinish(session, exitstatus):
    """Collect reference cycles while every module is still loaded.

    An h5py object (a backed AnnData held by a stored traceback's frames) finalised during the interpreter's
    teardown can crash it after the last test has passed: CI saw one "Segmentation fault" after "995
    passed". The tests close the backed files they open; this clears whatever cycle is left, in time.
    """
    import gc

    gc.collect()
