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

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["torch_threads_kept"]


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's intra-op thread count on exit, whatever the body did to it."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
