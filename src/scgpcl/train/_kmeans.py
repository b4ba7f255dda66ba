"""k-means on the learned representation, via scikit-learn.

torch and scikit-learn each ship an OpenMP runtime; right after torch work,
torch's spinning threads can starve scikit-learn's and make ``KMeans`` 20x
slower on a small CPU (the project's early notes,
``PERF-NOTES.md`` in the shared folder beside the repository: three ``KMeans(n_init=20)`` on 1024 x 64 took
21 s instead of 0.11 s). Every call therefore runs under a one-thread OpenMP limit (``threadpoolctl``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

__all__ = ["KMeansResult", "assign", "central_run", "consensus_labels", "kmeans"]


@dataclass
class KMeansResult:
    labels: np.ndarray  # (n,) int64
    centres: np.ndarray  # (k, d) float32, mean of each cluster's points
    inertia: float


def kmeans(
    x: torch.Tensor | np.ndarray,
    k: int,
    *,
    n_init: int = 20,
    seed: int = 0,
    init: np.ndarray | None = None,
    threads: int = 1,
    select: str = "inertia",
) -> KMeansResult:
    """Best of ``n_init`` k-means++ restarts, plus one warm start from ``init`` if given.

    Deterministic for a given ``seed``. Runs scikit-learn's ``KMeans``. The
    best run has the lowest inertia (``select="inertia"``) or labels that agree
    best with the other runs' (``select="central"``, :func:`central_run`; not
    the default: ``benchmarks/results/clustering_step.md``).

    Parameters
    ----------
    x
        Points (n x d); a tensor is copied to the CPU.
    k
        Number of clusters, 1 <= k <= n.
    n_init
        k-means++ restarts (0: only the warm start).
    seed
        Seed of every run.
    init
        Centres (k x d) for one more run started from them, or ``None``.
    threads
        OpenMP threads for scikit-learn during the fit.
    select
        ``"inertia"`` or ``"central"`` (then ``n_init`` single-start runs are made).

    Returns
    -------
    KMeansResult
        Labels, centres and inertia of the best run.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n_points, got k={k}, n={n}")
    if select not in ("inertia", "central"):
        raise ValueError(f"select must be 'inertia' or 'central', not {select!r}")
    with threadpool_limits(limits=threads, user_api="openmp"), warnings.catch_warnings():
        # fewer different points than k (copies of cells; the finer prototype granularities on tiny data):
        # k-means then leaves clusters empty, which the callers allow; the data's K is checked before training
        warnings.filterwarnings("ignore", message="Number of distinct clusters", category=ConvergenceWarning)
        best = _restarts(x, k, n_init, seed, select)
        if init is not None:
            warm = KMeans(k, init=np.asarray(init, dtype=np.float32), n_init=1, random_state=seed).fit(x)
            if best is None or warm.inertia_ < best.inertia_:
                best = warm
    if best is None:
        raise ValueError("kmeans needs n_init > 0 or init centres")
    labels = best.labels_.astype(np.int64)
    return KMeansResult(labels=labels, centres=best.cluster_centers_.astype(np.float32), inertia=float(best.inertia_))


def _restarts(x: np.ndarray, k: int, n_init: int, seed: int, select: str):
    """The selected one of ``n_init`` k-means++ runs (``None`` when ``n_init`` is 0)."""
    if n_init > 0 and select == "central" and n_init > 2:
        runs = [KMeans(k, n_init=1, random_state=(seed + 7919 * i) % 2**31).fit(x) for i in range(n_init)]
        return runs[central_run([r.labels_ for r in runs])]
    if n_init > 0:
        return KMeans(k, n_init=n_init, random_state=seed).fit(x)
    return None


def consensus_labels(labelings: list[np.ndarray], k: int, *, seed: int = 0, n_init: int = 10,
                     threads: int = 1) -> np.ndarray:
    """One partition into ``k`` clusters that agrees best with several partitions of the same cells.

    k-means on each cell's concatenated one-hot memberships: the squared
    distance between two cells is twice the number of partitions that put
    them apart, so this clusters the co-association of the cells without
    forming the n x n matrix. Deterministic for a given ``seed``.

    Parameters
    ----------
    labelings
        Partitions of the same n cells (one label array each; labels of any kind).
    k
        Number of clusters of the result, 1 <= k <= n.
    seed
        Seed of the k-means.
    n_init
        k-means restarts.
    threads
        OpenMP threads for scikit-learn during the fit.
    select
        ``"inertia"`` or ``"central"`` (then ``n_init`` single-start runs are made).

    Returns
    -------
    numpy.ndarray
        Cluster index (int64) per cell.
    """
    if not labelings:
        raise ValueError("consensus_labels needs at least one labelling")
    blocks = []
    for lab in labelings:
        _, inv = np.unique(np.asarray(lab), return_inverse=True)
        blocks.append(np.eye(inv.max() + 1, dtype=np.float32)[inv])
    h = np.hstack(blocks)
    if not 1 <= k <= h.shape[0]:
        raise ValueError(f"consensus_labels needs 1 <= k <= n_points, got k={k}, n={h.shape[0]}")
    with threadpool_limits(limits=threads, user_api="openmp"):
        return KMeans(k, n_init=n_init, random_state=seed).fit(h).labels_.astype(np.int64)


def central_run(labelings: list[np.ndarray]) -> int:
    """Index of the partition with the highest mean adjusted Rand index to the others (a medoid of partitions).

    Parameters
    ----------
    labelings
        Two or more partitions of the same points.

    Returns
    -------
    int
        The position of the most central one in ``labelings`` (the first on ties).
    """
    from sklearn.metrics import adjusted_rand_score

    n = len(labelings)
    agree = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            agree[i, j] = agree[j, i] = adjusted_rand_score(labelings[i], labelings[j])
    return int(agree.sum(axis=1).argmax())


def assign(x: torch.Tensor | np.ndarray, centres: torch.Tensor | np.ndarray, *, chunk: int = 65536) -> np.ndarray:
    """The nearest of ``centres`` for every row of ``x`` (squared Euclidean distance), in chunks of rows.

    Parameters
    ----------
    x
        Points (n x d), a tensor or an array.
    centres
        Centres (k x d), converted to ``x``'s device and dtype.
    chunk
        Rows per distance computation (bounds the memory of the n x k distances).

    Returns
    -------
    numpy.ndarray
        Index (int64) of the nearest centre per row.
    """
    x = torch.as_tensor(x)
    c = torch.as_tensor(centres, device=x.device, dtype=x.dtype)
    out = [torch.cdist(x[i : i + chunk], c).argmin(1) for i in range(0, len(x), chunk)]
    return torch.cat(out).cpu().numpy().astype(np.int64) if out else np.zeros(0, dtype=np.int64)
