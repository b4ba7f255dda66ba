"""Estimate the number of clusters K from a learned cell representation.

Each estimator is a pure function ``embedding -> AutoKResult`` (the chosen K,
the criterion's name and its curve over the candidates), deterministic for a
given seed. They run on the representation after the warm-up epochs, when
the prototypes first need K (:meth:`scgpcl.train.Trainer.pretrain`).

Criteria
--------
``"silhouette"``
    k-means for every K in ``2..k_max``; K maximises the mean silhouette
    width (on a fixed subsample of at most 3000 cells).
``"eigengap"``
    Eigenvalues of the normalised Laplacian of a symmetric kNN graph; K is
    the position of the largest gap among the first ``k_max + 1`` eigenvalues.
``"leiden_stability"``
    Leiden (modularity with a resolution parameter) on the kNN graph over a
    grid of resolutions, several seeds per resolution, each run on a random
    90 % of the cells; K is the median cluster count at the most stable
    resolution (highest mean pairwise ARI between runs on the cells they
    share), ties broken towards more clusters. Needs ``igraph``.
``"leiden_modularity"``
    Same runs; K comes from the resolution whose partitions have the highest
    standard (resolution-1) modularity. Needs ``igraph``.
``"consensus"``
    The geometric mean of the K of ``eigengap``, ``leiden_stability`` and
    ``leiden_modularity`` (one set of Leiden runs serves both), rounded. The
    three err in different directions on real data: the largest spectral gap
    and the most stable resolution often sit at a coarse level (K = 2 for
    three types), modularity at a finer one (K = 8 for three types). On the
    benchmark's warm-up embeddings its K error is only a little smaller than
    modularity's (mean abs log(K/K_true) 0.40 against 0.42), but end to end
    its ARI is 0.01 below the true K's, modularity's 0.08
    (``benchmarks/results/auto_k_consensus.md``). Needs ``igraph``.

The Leiden runs use igraph's own implementation (``Graph.community_leiden``,
modularity with a resolution parameter, iterated until the partition stops
improving), seeded through igraph's random number generator. Until 2026-12-02
they used ``leidenalg``, about 10x slower on these graphs (1198 s against 121 s over the 39 saved
warm-up embeddings of the auto-K benchmark); the two gave the same K in 28 cases
and K +- 1 in the other 11 (``benchmarks/results/leiden_impl.md``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score, silhouette_score
from sklearn.neighbors import NearestNeighbors

from .._messages import k_estimates
from ._kmeans import kmeans

__all__ = [
    "AutoKResult",
    "METHODS",
    "candidate_ks",
    "estimate_k",
    "silhouette_k",
    "eigengap_k",
    "leiden_stability_k",
    "leiden_modularity_k",
    "consensus_k",
]

log = logging.getLogger("scgpcl")

#: A Leiden partition whose subsample runs agree at least this much (mean ARI) counts as stable (caveats).
STABLE_ARI = 0.7

#: Resolutions tried by the Leiden criteria.
RESOLUTIONS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)


@dataclass
class AutoKResult:
    """An estimate of K and how it was obtained.

    Attributes
    ----------
    k
        The estimated number of clusters.
    method
        The criterion's name (the ``method`` of :func:`estimate_k`).
    curve
        The criterion over its candidates, as equal-length arrays keyed by name.
    seconds
        Wall time of the estimate.
    estimates
        Each criterion's own estimate (``consensus``: the three it combines).
    candidates
        The smallest and largest K considered.
    sample_size
        The number of cells the estimate was made on.
    """

    k: int
    method: str
    #: The criterion over its candidates, as equal-length arrays keyed by name.
    curve: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    #: Each criterion's own estimate (``consensus``: the three it combines; otherwise the one).
    estimates: dict[str, int] = field(default_factory=dict)
    #: The candidates: ``(2, largest)``; the largest is ``k_max`` or a tenth of the cells, whichever is less
    #: (set by :func:`estimate_k`; None when a criterion is called directly).
    candidates: tuple[int, int] | None = None
    #: The number of cells the estimate was made on (set by :func:`estimate_k`).
    sample_size: int | None = None

    def to_dict(self) -> dict:
        """The estimate as plain Python values (lists for the curve), for JSON and ``uns``."""
        return {
            "k": int(self.k),
            "method": self.method,
            "curve": {name: np.asarray(v).tolist() for name, v in self.curve.items()},
            "seconds": float(self.seconds),
            "estimates": {name: int(v) for name, v in self.estimates.items()},
            **({"candidates": [int(c) for c in self.candidates]} if self.candidates else {}),
            **({"sample_size": int(self.sample_size)} if self.sample_size is not None else {}),
        }

    def caveats(self, k_max: int) -> list[str]:
        """Why this estimate deserves a second look, in words for the user (empty when none applies).

        - the estimate is the largest candidate and that was capped by the number of cells (a tenth of them):
          the data may hold more groups than could be considered;
        - no Leiden partition into 2 or more clusters is stable across subsamples (mean ARI between the
          subsamples' partitions below :data:`STABLE_ARI` at every resolution that splits): the representation
          may hold no clear groups (on Gaussian noise the best is 0.2-0.6; on separated groups about 1).

        The spread of ``consensus``'s three estimates is not a caveat: it was a factor of 2 or more on 10 of
        the 13 shared datasets at seed 0, including ones whose K came out right (cellbench: 2, 2 and 4 for
        3 types), so a warning on it would fire on most runs and say nothing.
        """
        out = []
        n_cl, stab = (np.asarray(self.curve.get(c, []), dtype=float) for c in ("n_clusters", "stability"))
        if len(stab) and len(stab) == len(n_cl):
            split = stab[n_cl >= 2]
            if not len(split):
                out.append(f"Leiden split the cells into 2 or more clusters at no resolution: the data may hold "
                           f"no clear groups, and K={self.k} is then arbitrary")
            elif split.max() < STABLE_ARI:
                out.append(f"no split of the cells into 2 or more clusters was stable across subsamples (best "
                           f"agreement {split.max():.2f} ARI, where separated groups give about 1): the data may "
                           f"hold no clear groups, and K={self.k} is then arbitrary")
        hi = self.candidates[1] if self.candidates else None
        # K = 2 is always a candidate, even on fewer than 20 cells: only a cap above 2 came from a tenth of the cells
        if hi is not None and hi > 2 and self.k >= hi and hi < k_max and self.sample_size:
            out.append(f"the estimated K={self.k} is the largest K considered on {self.sample_size} cells (at most a "
                       f"tenth of the cells); the data may hold more groups: give K if you know it")
        return out


def candidate_ks(n_cells: int, k_max: int = 30) -> np.ndarray:
    """K in ``2..min(k_max, n_cells // 10)`` (at least ``[2]``; never above ``n_cells - 1``)."""
    hi = min(int(k_max), n_cells // 10, n_cells - 1)
    hi = max(hi, 2)
    return np.arange(2, hi + 1)


def _as_array(z) -> np.ndarray:
    if hasattr(z, "detach"):
        z = z.detach().cpu().numpy()
    z = np.ascontiguousarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[0] < 3:
        raise ValueError(f"need an (n_cells >= 3, d) embedding, got shape {z.shape}")
    return z


# ------------------------------------------------------------------ criteria
def silhouette_k(
    z, *, k_max: int = 30, seed: int = 0, n_init: int = 3, max_cells: int = 3000
) -> AutoKResult:
    """K with the highest mean silhouette width of k-means on ``z``."""
    t0 = time.perf_counter()
    z = _as_array(z)
    ks = candidate_ks(z.shape[0], k_max)
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(z.shape[0], max_cells, replace=False)) if z.shape[0] > max_cells else None
    scores = []
    for k in ks:
        labels = kmeans(z, int(k), n_init=n_init, seed=seed + int(k)).labels
        if sub is not None:
            zz, ll = z[sub], labels[sub]
        else:
            zz, ll = z, labels
        scores.append(silhouette_score(zz, ll) if len(np.unique(ll)) > 1 else -1.0)
    scores = np.asarray(scores, dtype=float)
    k = int(ks[int(np.argmax(scores))])
    return AutoKResult(k, "silhouette", {"k": ks, "silhouette": scores}, time.perf_counter() - t0)


def knn_graph(z: np.ndarray, n_neighbors: int = 15) -> sp.csr_matrix:
    """Symmetric (union) kNN graph with unit weights, no self-loops."""
    n = z.shape[0]
    nn = NearestNeighbors(n_neighbors=min(n_neighbors + 1, n)).fit(z)
    _, idx = nn.kneighbors(z)
    rows = np.repeat(np.arange(n), idx.shape[1] - 1)
    cols = idx[:, 1:].ravel()
    off = rows != cols  # a duplicate point can be its own neighbour; leave it out here rather than with setdiag,
    # which warns on scipy < 1.13 when it would change the sparsity structure
    a = sp.csr_matrix((np.ones(int(off.sum())), (rows[off], cols[off])), shape=(n, n))
    return a.maximum(a.T).tocsr()


def eigengap_k(z, *, k_max: int = 30, seed: int = 0, n_neighbors: int = 15) -> AutoKResult:
    """K at the largest gap between consecutive eigenvalues of the kNN graph's normalised Laplacian."""
    from scipy.sparse.linalg import eigsh

    t0 = time.perf_counter()
    z = _as_array(z)
    ks = candidate_ks(z.shape[0], k_max)
    a = knn_graph(z, n_neighbors)
    deg = np.asarray(a.sum(axis=1)).ravel()
    d = sp.diags(1.0 / np.sqrt(np.maximum(deg, 1e-12)))
    s = (d @ a @ d).tocsr()  # normalised adjacency: eigenvalues 1 - lambda(L_sym)
    n_eig = int(ks[-1]) + 1
    n = z.shape[0]
    if n_eig >= n - 1:
        vals = np.linalg.eigvalsh(s.toarray())[::-1][:n_eig]
    else:
        v0 = np.random.default_rng(seed).standard_normal(n)
        vals = np.sort(eigsh(s, k=n_eig, which="LA", v0=v0, return_eigenvectors=False))[::-1]
    lam = np.clip(1.0 - vals, 0.0, 2.0)  # ascending Laplacian eigenvalues
    gaps = lam[ks] - lam[ks - 1]  # gap after the K-th eigenvalue
    k = int(ks[int(np.argmax(gaps))])
    return AutoKResult(k, "eigengap", {"k": ks, "eigenvalue": lam[ks - 1], "gap": gaps}, time.perf_counter() - t0)


def _leiden_membership(g, resolution: float, seed: int) -> list[int]:
    """Leiden partition of ``g`` maximising modularity at ``resolution``, iterated to convergence.

    igraph draws from the generator set with ``igraph.set_random_number_generator``
    (Python's ``random`` module by default): a private one seeded with ``seed``
    makes the partition reproducible, and the default is put back afterwards.
    """
    import random

    import igraph as ig

    ig.set_random_number_generator(random.Random(seed))
    try:
        return g.community_leiden(objective_function="modularity", resolution=float(resolution), n_iterations=-1).membership
    finally:
        ig.set_random_number_generator(random)


def _leiden_runs(z, *, seed, n_neighbors, resolutions, n_runs, fraction):
    try:
        import igraph as ig
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Leiden criteria need igraph, which is not installed: "
            "pip install igraph, or use auto_k_method='eigengap'"
        ) from None
    z = _as_array(z)
    n = z.shape[0]
    rng = np.random.default_rng(seed)
    subsets = [np.sort(rng.choice(n, max(3, int(round(fraction * n))), replace=False)) for _ in range(n_runs)]
    graphs = []
    for s in subsets:
        a = sp.triu(knn_graph(z[s], n_neighbors), k=1).tocoo()
        g = ig.Graph(n=len(s), edges=list(zip(a.row.tolist(), a.col.tolist(), strict=True)))
        graphs.append(g)
    rows = []
    for r in resolutions:
        labels, counts, mods = [], [], []
        for i, (s, g) in enumerate(zip(subsets, graphs, strict=True)):
            membership = _leiden_membership(g, r, seed + i)
            full = np.full(n, -1)
            full[s] = membership
            labels.append(full)
            counts.append(len(set(membership)))
            mods.append(g.modularity(membership))
        aris = []
        for i in range(n_runs):
            for j in range(i + 1, n_runs):
                both = (labels[i] >= 0) & (labels[j] >= 0)
                aris.append(adjusted_rand_score(labels[i][both], labels[j][both]))
        rows.append((r, float(np.median(counts)), float(np.mean(aris)) if aris else 1.0, float(np.mean(mods))))
    res, k, stab, mod = (np.asarray(c, dtype=float) for c in zip(*rows, strict=True))
    return res, k, stab, mod


def _leiden_curve(res, k, stab, mod, k_max, n):
    ks = candidate_ks(n, k_max)
    ok = (k >= ks[0]) & (k <= ks[-1])
    if not ok.any():  # every resolution outside the range: clip the nearest
        ok = np.ones_like(ok)
    return ok, {"resolution": res, "n_clusters": k, "stability": stab, "modularity": mod}


def _leiden_pick(method: str, k, stab, mod, ok) -> int:
    """Index of the resolution that ``method``'s rule picks."""
    if method == "leiden_stability":  # most stable; ties go to the larger count
        score = np.where(ok, stab, -np.inf)
        best = np.flatnonzero(score >= score.max() - 1e-9)
        return int(best[np.argmax(k[best])])
    return int(np.argmax(np.where(ok, mod, -np.inf)))  # leiden_modularity


def _leiden_scan(z: np.ndarray, *, k_max: int, seed: int, n_neighbors: int, resolutions, n_runs: int,
                 fraction: float):
    """Leiden runs over the resolutions: ``(k, stab, mod, ok, curve)`` for :func:`_leiden_pick`."""
    res, k, stab, mod = _leiden_runs(
        z, seed=seed, n_neighbors=n_neighbors, resolutions=resolutions, n_runs=n_runs, fraction=fraction
    )
    ok, curve = _leiden_curve(res, k, stab, mod, k_max, z.shape[0])
    return k, stab, mod, ok, curve


def _leiden_k(z, method: str, *, k_max: int, seed: int, n_neighbors: int, resolutions, n_runs: int,
              fraction: float) -> AutoKResult:
    """Leiden runs over the resolutions, then the cluster count the ``method`` rule picks."""
    t0 = time.perf_counter()
    z = _as_array(z)
    k, stab, mod, ok, curve = _leiden_scan(z, k_max=k_max, seed=seed, n_neighbors=n_neighbors,
                                           resolutions=resolutions, n_runs=n_runs, fraction=fraction)
    kk = _clip_k(k[_leiden_pick(method, k, stab, mod, ok)], z.shape[0], k_max)
    return AutoKResult(kk, method, curve, time.perf_counter() - t0)


def leiden_stability_k(
    z,
    *,
    k_max: int = 30,
    seed: int = 0,
    n_neighbors: int = 15,
    resolutions=RESOLUTIONS,
    n_runs: int = 4,
    fraction: float = 0.9,
) -> AutoKResult:
    """Cluster count at the Leiden resolution whose runs agree best (see module docstring)."""
    return _leiden_k(z, "leiden_stability", k_max=k_max, seed=seed, n_neighbors=n_neighbors,
                     resolutions=resolutions, n_runs=n_runs, fraction=fraction)


def leiden_modularity_k(
    z,
    *,
    k_max: int = 30,
    seed: int = 0,
    n_neighbors: int = 15,
    resolutions=RESOLUTIONS,
    n_runs: int = 4,
    fraction: float = 0.9,
) -> AutoKResult:
    """Cluster count at the Leiden resolution with the highest (resolution-1) modularity."""
    return _leiden_k(z, "leiden_modularity", k_max=k_max, seed=seed, n_neighbors=n_neighbors,
                     resolutions=resolutions, n_runs=n_runs, fraction=fraction)


def consensus_k(
    z,
    *,
    k_max: int = 30,
    seed: int = 0,
    n_neighbors: int = 15,
    resolutions=RESOLUTIONS,
    n_runs: int = 4,
    fraction: float = 0.9,
) -> AutoKResult:
    """Geometric mean of the ``eigengap``, ``leiden_stability`` and ``leiden_modularity`` estimates.

    The curve holds the Leiden runs (as for the Leiden criteria); the three
    estimates it averages are in :attr:`AutoKResult.estimates`.
    """
    t0 = time.perf_counter()
    z = _as_array(z)
    k_eig = eigengap_k(z, k_max=k_max, seed=seed, n_neighbors=n_neighbors).k
    k, stab, mod, ok, curve = _leiden_scan(z, k_max=k_max, seed=seed, n_neighbors=n_neighbors,
                                           resolutions=resolutions, n_runs=n_runs, fraction=fraction)
    n = z.shape[0]
    k_stab = _clip_k(k[_leiden_pick("leiden_stability", k, stab, mod, ok)], n, k_max)
    k_mod = _clip_k(k[_leiden_pick("leiden_modularity", k, stab, mod, ok)], n, k_max)
    kk = _clip_k(float(np.exp(np.mean(np.log([k_eig, k_stab, k_mod])))), n, k_max)
    return AutoKResult(kk, "consensus", curve, time.perf_counter() - t0,
                       estimates={"eigengap": int(k_eig), "leiden_stability": int(k_stab),
                                  "leiden_modularity": int(k_mod)})


def _clip_k(k: float, n: int, k_max: int) -> int:
    ks = candidate_ks(n, k_max)
    return int(np.clip(int(round(k)), ks[0], ks[-1]))


METHODS: dict[str, Callable[..., AutoKResult]] = {
    "silhouette": silhouette_k,
    "eigengap": eigengap_k,
    "leiden_stability": leiden_stability_k,
    "leiden_modularity": leiden_modularity_k,
    "consensus": consensus_k,
}


def estimate_k(z, method: str = "consensus", *, k_max: int = 30, seed: int = 0,
               what: str = "") -> AutoKResult:
    """Estimate K on a cell representation with the named criterion.

    Parameters
    ----------
    z
        Cells x dimensions (a NumPy array or a torch tensor).
    method
        One of the criteria: ``"consensus"`` (the default, as for ``n_clusters=None``), ``"leiden_modularity"``,
        ``"leiden_stability"``, ``"eigengap"`` or ``"silhouette"``. The Leiden-based ones need ``igraph``.
    k_max
        The largest K considered (also at most a tenth of the cells).
    seed
        Seeds the subsamples, k-means and the Leiden runs; the same seed gives the same K.
    what
        Named in the log line (e.g. ``"a provisional "``).

    Returns
    -------
    AutoKResult
        The estimate, the criterion's curve and its wall time.

    Raises
    ------
    ValueError
        For an unknown ``method``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown auto_k_method {method!r}; choose one of {sorted(METHODS)}")
    n_cells = _as_array(z).shape[0]
    log.info("estimating %sK with the %s criterion on %d cells (candidates 2..%d; about a minute at 20,000 cells)",
             what, method, n_cells, candidate_ks(n_cells, k_max)[-1])
    r = METHODS[method](z, k_max=k_max, seed=seed)
    ks = candidate_ks(n_cells, k_max)
    r.candidates, r.sample_size = (int(ks[0]), int(ks[-1])), int(n_cells)
    r.estimates = r.estimates or {method: int(r.k)}
    each = "" if len(r.estimates) < 2 else f" ({k_estimates(r.estimates)})"
    log.info("estimated %sK=%d with the %s criterion%s on %d cells (candidates 2..%d, %.1f s)",
             what, r.k, method, each, n_cells, ks[-1], r.seconds)
    return r
