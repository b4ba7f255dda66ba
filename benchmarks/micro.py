"""Micro-benchmarks behind three implementation choices, variants side by side.

1. k-means: scikit-learn with and without a one-thread OpenMP limit, right
   after torch work (the torch/sklearn OpenMP contention of PERF-NOTES.md).
2. Sparse vs dense ``A @ x`` in torch by density (``data._graph.DENSE_ABOVE``).
3. First layer: dense z-scored features ``X @ W`` vs the sparse form
   ``S @ W' - 1 (m^T W')`` (``module.CellFeatures``), forward + backward.

    python benchmarks/micro.py            # prints a markdown table; medians of 5 repeats
"""

from __future__ import annotations

import statistics
import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch

warnings.simplefilter("ignore")


def median_time(f, repeats: int = 5) -> float:
    f()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench_kmeans() -> list[str]:
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs
    from threadpoolctl import threadpool_limits

    x, _ = make_blobs(4271, 64, centers=12, cluster_std=4.0, random_state=0)
    x = x.astype(np.float32)
    w = torch.randn(2000, 512)

    def torch_then(fn):
        def run():
            (w @ w.T).sum()  # torch work first: its threads are now spinning
            fn()
        return run

    plain = torch_then(lambda: KMeans(12, n_init=20, random_state=0).fit(x))

    def limited_fit():
        with threadpool_limits(limits=1, user_api="openmp"):
            KMeans(12, n_init=20, random_state=0).fit(x)

    limited = torch_then(limited_fit)
    t_plain, t_lim = median_time(plain), median_time(limited)
    return [f"| k-means 4271x64, k=12, n_init=20, after a torch matmul | default threads {t_plain:.3f} s | "
            f"OpenMP limited to 1 {t_lim:.3f} s | {t_plain / t_lim:.1f}x |"]


def bench_spmm() -> list[str]:
    rows = []
    x = torch.randn(2000, 512)
    for dens in (0.02, 0.05, 0.10, 0.15, 0.20, 0.40):
        a = sp.random(2048, 2000, density=dens, format="csr", dtype=np.float32, random_state=0)
        a_csr = torch.sparse_csr_tensor(torch.from_numpy(a.indptr).long(), torch.from_numpy(a.indices).long(),
                                        torch.from_numpy(a.data), size=a.shape)
        a_dense = torch.from_numpy(a.toarray())
        ts, td = median_time(lambda a_csr=a_csr: a_csr @ x), median_time(lambda a_dense=a_dense: a_dense @ x)
        rows.append(f"| A @ x, 2048x2000 @ 2000x512, density {dens:.2f} | CSR {ts * 1e3:.1f} ms | dense {td * 1e3:.1f} ms | "
                    f"{'CSR' if ts < td else 'dense'} faster |")
    return rows


def bench_first_layer() -> list[str]:
    from scgpcl.module._network import CellFeatures

    rng = np.random.default_rng(0)
    s = sp.random(2048, 2000, density=0.10, format="csr", dtype=np.float32, random_state=1)
    s.data = np.log1p(rng.poisson(3, s.nnz).astype(np.float32) + 1)
    mean = torch.from_numpy(np.asarray(s.mean(0)).ravel().astype(np.float32))
    std = torch.ones(2000)
    feats = CellFeatures(s, mean, std)
    dense = feats.dense()
    w = torch.randn(512, 2000, requires_grad=True)

    def sparse_step():
        feats.project(w).sum().backward()

    def dense_step():
        (dense @ w.T).sum().backward()

    t_s, t_d = median_time(sparse_step), median_time(dense_step)
    return [f"| first layer 2048 cells x 2000 genes (10 % non-zero) -> 512, fwd+bwd | dense {t_d * 1e3:.1f} ms | "
            f"sparse form {t_s * 1e3:.1f} ms | {t_d / t_s:.1f}x |"]


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| what | variant A | variant B | ratio / verdict |")
    print("|---|---|---|---|")
    for row in bench_kmeans() + bench_spmm() + bench_first_layer():
        print(row)


if __name__ == "__main__":
    main()
