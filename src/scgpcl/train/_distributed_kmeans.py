"""k-means over rows spread across processes: Lloyd's iterations with all-reduced sums (docs/distributed.md).

:func:`lloyd_kmeans` is scikit-learn's ``KMeans(algorithm="lloyd")`` for
data that no process holds in full: every process passes its own rows, and
each iteration assigns them locally and all-reduces the per-cluster sums and
counts (one small all-reduce of ``k x (d + 1)`` numbers per iteration), so the
centres are the same on every process. It follows scikit-learn step by step:
the data centred on their mean, greedy k-means++ starts
(``sklearn.cluster.kmeans_plusplus``, computed on rank 0 from a sample gathered
from every process and broadcast), the tolerance ``tol`` times the mean
per-feature variance, a stop when no label changes or the centres move less
than that, an empty cluster moved to the point farthest from its centre, and
the best of ``n_init`` starts by inertia. With one process (``comm=None``) it
is an ordinary k-means; from the same start it finds the same centres as
scikit-learn (tests/test_distributed.py).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import kmeans_plusplus

from ._kmeans import KMeansResult

__all__ = ["lloyd_kmeans"]


def lloyd_kmeans(x: torch.Tensor | np.ndarray, k: int, *, n_init: int = 1, seed: int = 0,
                 init: np.ndarray | torch.Tensor | None = None, max_iter: int = 300, tol: float = 1e-4,
                 init_sample: int = 100_000, comm=None) -> KMeansResult:
    """k-means of the rows of every process; ``x`` holds this process's rows.

    Parameters
    ----------
    x
        This process's rows (n_local x d); the row counts may differ between processes, and may be 0.
    k
        Number of clusters (at most the total number of rows).
    n_init
        k-means++ starts; the one with the lowest inertia wins.
    seed
        Seeds the k-means++ starts and the sample they are drawn from (the same on every process).
    init
        Also start once from these centres (k x d), as a warm start; with ``n_init=0`` only from them.
    max_iter, tol
        As scikit-learn: at most ``max_iter`` iterations; stop when the centres move (summed squared
        shift) by at most ``tol`` times the mean per-feature variance.
    init_sample
        At most this many rows, drawn from every process in proportion to its rows, are gathered for
        the k-means++ starts.
    comm
        A :class:`~scgpcl.distributed.Communicator`, or ``None`` for one process.

    Returns
    -------
    :class:`~scgpcl.train.KMeansResult` with this process's labels (int64), the centres (float32,
    the same on every process) and the total inertia.
    """
    from ..distributed import SINGLE

    comm = comm or SINGLE
    x = torch.as_tensor(x)
    if x.dtype != torch.float32:
        x = x.float()
    d = x.shape[1]
    # totals (count, sum, sum of squares) in float64: the mean, the tolerance, the number of rows
    n, mean, tol_abs = _summary(x, d, tol, comm)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= n_points, got k={k}, n={n}")
    if n_init <= 0 and init is None:
        raise ValueError("lloyd_kmeans needs n_init > 0 or init centres")
    xc = x - mean  # centred, as scikit-learn does for precision

    starts = []
    if n_init > 0:
        starts += list(_plusplus_starts(xc, k, n_init, seed, init_sample, comm))
    if init is not None:
        starts.append(torch.as_tensor(np.asarray(init, dtype=np.float32), device=x.device) - mean)
    best = None
    for centres in starts:
        labels, centres, inertia = _lloyd(xc, centres.to(x.device), max_iter, tol_abs, comm)
        if best is None or inertia < best[2]:
            best = (labels, centres, inertia)
    labels, centres, inertia = best
    return KMeansResult(labels=labels.cpu().numpy().astype(np.int64),
                        centres=(centres + mean).cpu().numpy().astype(np.float32), inertia=float(inertia))


def _summary(x: torch.Tensor, d: int, tol: float, comm) -> tuple[int, torch.Tensor, float]:
    """Rows over every process, their mean (float32), and ``tol`` times the mean per-feature variance.

    The totals (count, sum, sum of squares) are summed in float64.
    """
    x64 = x.double()
    stats = comm.all_reduce(torch.cat([x64.new_tensor([len(x)]), x64.sum(0), x64.pow(2).sum(0)]),
                            "the k-means data summary")
    n = int(stats[0].item())
    mean64 = stats[1 : 1 + d] / max(n, 1)
    variance = (stats[1 + d :] / max(n, 1) - mean64.pow(2)).clamp_min(0)
    return n, mean64.to(torch.float32), float(variance.mean().item()) * tol


def _plusplus_starts(xc: torch.Tensor, k: int, n_init: int, seed: int, init_sample: int, comm):
    """``n_init`` greedy k-means++ starts from a sample gathered from every process; computed on rank 0."""
    n_local = len(xc)
    total = sum(int(v) for v in comm.all_gather_rows(torch.tensor([n_local]), "the k-means row counts"))
    take = n_local if total <= init_sample else int(round(init_sample * n_local / total))
    if take < n_local:
        rng = np.random.default_rng(np.random.SeedSequence([seed, comm.rank, 0x6B6D]))
        rows = xc[torch.from_numpy(np.sort(rng.choice(n_local, take, replace=False))).to(xc.device)]
    else:
        rows = xc
    sample = comm.all_gather_rows(rows, "the k-means++ sample").cpu().numpy()
    starts = np.zeros((n_init, k, xc.shape[1]), dtype=np.float32)
    if comm.is_main:
        for i in range(n_init):
            starts[i], _ = kmeans_plusplus(sample, k, random_state=(seed + i) % 2**31)
    starts = comm.broadcast(torch.from_numpy(starts), "the k-means++ starts")
    return starts.to(xc.device).unbind(0)


def _assign(x: torch.Tensor, centres: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of every row and the squared distance to it."""
    labels, dists = [], []
    c_sq = centres.pow(2).sum(1)
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk]
        d2 = (part.pow(2).sum(1, keepdim=True) - 2 * part @ centres.T + c_sq).clamp_min(0)
        m = d2.min(1)
        labels.append(m.indices)
        dists.append(m.values)
    if not labels:
        return torch.zeros(0, dtype=torch.int64, device=x.device), torch.zeros(0, device=x.device)
    return torch.cat(labels), torch.cat(dists)


def _lloyd(x: torch.Tensor, centres: torch.Tensor, max_iter: int, tol_abs: float, comm):
    """One k-means run from ``centres`` (scikit-learn's ``_kmeans_single_lloyd``, spread over the ranks)."""
    k, d = centres.shape
    labels_old = torch.full((len(x),), -1, dtype=torch.int64, device=x.device)
    strict = False
    for _ in range(max_iter):
        labels, dist2 = _assign(x, centres)
        sums = torch.zeros(k, d, dtype=torch.float64, device=x.device).index_add_(0, labels, x.double())
        counts = torch.bincount(labels, minlength=k).double()
        changed = (labels != labels_old).sum().double().reshape(1)
        buf = comm.all_reduce(torch.cat([sums.reshape(-1), counts, changed]), "a k-means iteration")
        sums, counts, changed = buf[: k * d].reshape(k, d), buf[k * d : k * d + k], float(buf[-1].item())
        if (counts == 0).any():
            sums, counts = _relocate_empty(x, labels, dist2, sums, counts, comm)
        new = (sums / counts.clamp_min(1).unsqueeze(1)).to(torch.float32)
        shift = float((new - centres).pow(2).sum().item())
        centres = new
        if changed == 0:
            strict = True
            break
        if shift <= tol_abs:
            break
        labels_old = labels
    if not strict:  # labels that match the final centres
        labels, dist2 = _assign(x, centres)
    inertia = float(comm.all_reduce(dist2.double().sum().reshape(1), "the k-means inertia").item())
    return labels, centres, inertia


def _relocate_empty(x, labels, dist2, sums, counts, comm):
    """Move each empty cluster to one of the points farthest from their centres (scikit-learn's rule)."""
    empty = torch.nonzero(counts == 0).squeeze(1)
    m = len(empty)
    top = torch.topk(dist2, min(m, len(dist2))) if len(dist2) else None
    local = torch.zeros(min(m, len(dist2)), x.shape[1] + 2, dtype=torch.float64, device=x.device)
    if top is not None:
        local[:, 0] = top.values.double()
        local[:, 1] = labels[top.indices].double()
        local[:, 2:] = x[top.indices].double()
    cand = comm.all_gather_rows(local, "the k-means empty-cluster candidates")
    far = cand[torch.argsort(cand[:, 0], descending=True, stable=True)[:m]]
    sums, counts = sums.clone(), counts.clone()
    for e, row in zip(empty.tolist(), far, strict=False):
        old = int(row[1].item())
        sums[old] -= row[2:]
        counts[old] -= 1
        sums[e] = row[2:]
        counts[e] = 1
    return sums, counts
