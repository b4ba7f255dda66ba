"""Fixtures shared by the tests (data and settings live in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scgpcl import SCGPCL

from helpers import toy_counts


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
