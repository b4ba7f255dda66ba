"""Keep torch's thread count when calling into scanpy.

scanpy's numba-parallel kernels (``normalize_total``, ``highly_variable_genes``,
``rank_genes_groups``, ...) start numba's OpenMP pool, and numba's
``omp_set_num_threads`` resolves to the ``libgomp.so.1`` that torch loaded
first: after one such call torch runs with ``NUMBA_NUM_THREADS`` (all cores)
threads, whatever ``OMP_NUM_THREADS`` or ``torch.set_num_threads`` asked for.
Measured with ``OMP_NUM_THREADS=1`` next to two other jobs: a short
``scgpcl cluster`` run on baron_mouse1 took 23 s instead of 10 s
(``benchmarks/results/core.md``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["thread_count_problem", "torch_threads_kept"]


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's intra-op thread count on exit, whatever the body did to it."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


def thread_count_problem() -> str | None:
    """Why torch's thread count is not the ``OMP_NUM_THREADS`` the user set, or None when it is (or none is set).

    scgpcl's own scanpy calls keep the count (:func:`torch_threads_kept`), but a numba-parallel scanpy call
    of the user's own (``sc.pp.neighbors``, ``sc.tl.umap``) raises it for the rest of the session: the
    next training then runs with another count, slower next to other jobs and with other results.
    """
    try:
        wanted = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:  # unset, or a nested list such as "4,2"
        return None
    have = torch.get_num_threads()
    if wanted < 1 or have == wanted:
        return None
    return (f"torch is using {have} threads although OMP_NUM_THREADS={wanted}; a numba-parallel scanpy call "
            f"in this session (sc.pp.neighbors, sc.tl.umap, ...) can raise it. Training with {have} threads is "
            f"slower next to other jobs and gives other results than with {wanted}: call "
            f"torch.set_num_threads({wanted}) first to train as OMP_NUM_THREADS says")
