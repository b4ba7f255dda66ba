"""Sparse (torch CSR) against dense products for the subgraph blocks of one training step.

    OMP_NUM_THREADS=1 python benchmarks/micro.py [--threads 1] > benchmarks/results/micro.md

A view of a minibatch holds blocks of about 2048 cells x 2000 genes; the step multiplies them by dense
matrices of width 512 (the projected cell features, forwards and, transposed, for the weight gradient)
and 256 / 64 (the messages). For densities from 5 % to 40 % this times ``A @ X`` and ``A.T @ Y`` with
``A`` as torch CSR and as a dense matrix (median of 15 repeats, after a warm-up), and the cost of building
the dense matrix. ``scgpcl.data._sparse.DENSE_ABOVE`` is chosen from this table.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import scipy.sparse as sp
import torch


def _median_time(fn, repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from scgpcl.data import SparseBlock, _sparse, spmm

    rows, cols = 2048, 2000
    print("# Sparse against dense products of a subgraph block\n")
    print(f"`OMP_NUM_THREADS={args.threads} python benchmarks/micro.py --threads {args.threads}`; "
          f"CPU {platform.processor() or 'see /proc/cpuinfo'}, torch {torch.__version__}, {args.threads} thread(s). "
          f"Block {rows} x {cols}; milliseconds, median of 15.\n")
    print("| density | width | A@X sparse | A@X dense | A.T@Y sparse | A.T@Y dense | build dense |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for density in (0.05, 0.10, 0.14, 0.20, 0.30, 0.40):
        m = sp.random(rows, cols, density=density, format="csr", random_state=rng, dtype=np.float32)
        old = _sparse.DENSE_ABOVE
        _sparse.DENSE_ABOVE = 2.0
        sparse_b = SparseBlock.from_scipy(m)
        _sparse.DENSE_ABOVE = -1.0
        dense_b = SparseBlock.from_scipy(m)
        crow, col = torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64))
        val = torch.from_numpy(m.data)
        build = _median_time(lambda c=crow, i=col, v=val: _sparse._dense(c, i, v, (rows, cols)))
        _sparse.DENSE_ABOVE = old
        for width in (512, 256, 64):
            x, y = torch.randn(cols, width), torch.randn(rows, width)
            t = [_median_time(lambda b=b, tr=tr, v=v: spmm(b, v, transpose=tr))
                 for b, tr, v in ((sparse_b, False, x), (dense_b, False, x), (sparse_b, True, y), (dense_b, True, y))]
            print(f"| {density:.2f} | {width} | " + " | ".join(f"{1000 * v:.1f}" for v in t) + f" | {1000 * build:.1f} |")


if __name__ == "__main__":
    main()
