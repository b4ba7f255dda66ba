"""The global steps' building blocks: embeddings of many cells, seeded k-means, prototypes, DEC targets.

The global steps run on a fixed set of cells, :attr:`Embedder.sample`:
every cell when there are at most ``sample_cells``, else a random sample of
that size drawn once per run. Their representation averages the genes'
states over those same cells (on all cells: the full-graph representation).
The final representation and labels always use every cell, chunk by chunk.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._messages import still_working
from ..data import SubgraphLoader
from ..module import SCGPCLModule, soft_assign, target_distribution
from ._kmeans import KMeansResult, assign, kmeans
from ._schedule import live_bars

__all__ = ["Embedder", "SeededKMeans", "prototype_sizes"]


def prototype_sizes(k: int, n_cells: int | None = None) -> list[int]:
    """Granularities K_1 = K, K_2 = max(K+1, 1.5K), K_3 = max(K_2+1, ceil(2K)).

    With ``n_cells``, the finer two are capped at the number of cells (k-means
    cannot find more clusters than points; this matters only for K > n/2).

    Parameters
    ----------
    k
        The number of clusters K.
    n_cells
        Number of cells, or ``None`` for no cap.

    Returns
    -------
    list of int
        ``[K_1, K_2, K_3]``.
    """
    k2 = max(k + 1, int(1.5 * k))
    k3 = max(k2 + 1, math.ceil(2 * k))
    if n_cells is not None:
        k2, k3 = min(k2, n_cells), min(k3, n_cells)
    return [k, k2, k3]


class Embedder:
    """Representations of the sample, of any cells in the sample's context, and of every cell.

    Parameters
    ----------
    module, loader
        The network and the data.
    sample_cells
        Size of the global steps' sample (0: every cell).
    chunk_cells
        Cells per chunk.
    seed
        Draws the sample (when it is smaller than the data).
    """

    def __init__(self, module: SCGPCLModule, loader: SubgraphLoader, *, sample_cells: int, chunk_cells: int,
                 seed: int):
        self.module, self.loader, self.chunk = module, loader, chunk_cells
        n = loader.n_cells
        if sample_cells and sample_cells < n:
            rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A3]))
            ids = np.sort(rng.choice(n, sample_cells, replace=False))
            self.sample = torch.from_numpy(ids).to(loader.device)
        else:
            self.sample = None  # every cell
        self._context: list[torch.Tensor] | None = None

    @property
    def n_sample(self) -> int:
        """Number of cells in the sample."""
        return self.loader.n_cells if self.sample is None else len(self.sample)

    def sample_ids(self) -> np.ndarray:
        """Global ids of the sample's cells."""
        return np.arange(self.loader.n_cells) if self.sample is None else self.sample.cpu().numpy()

    def of_sample(self) -> torch.Tensor:
        """The sample's representation (remembers the genes' states for :meth:`of_cells`)."""
        chunks = lambda: self.loader.chunks(self.sample, self.chunk)
        self._context = self.module.gene_context(chunks)
        return self.module.embed_cells(chunks(), self._context)

    def of_cells(self, cells: torch.Tensor) -> torch.Tensor:
        """Representation of ``cells`` with the genes' states of the last :meth:`of_sample`."""
        if self._context is None:
            raise RuntimeError("of_sample() must run first")
        return self.module.embed_cells(self.loader.chunks(cells, self.chunk), self._context)

    def of_all(self, progress: bool = False) -> torch.Tensor:
        """Every cell's full-graph representation (the genes' states from every cell).

        With ``progress``, and more cells than the sample, a progress bar counts the chunks of both passes.
        """
        chunks = lambda: self.loader.chunks(None, self.chunk)
        if not (progress and self.sample is not None):
            return self.module.embed_cells(chunks(), self.module.gene_context(chunks))
        if not live_bars():  # a log file: no bar of redraws (35 s at 1,000,000 cells), a line every 30 s instead
            with still_working(f"embedding {self.loader.n_cells} cells"):
                return self.module.embed_cells(chunks(), self.module.gene_context(chunks))
        from tqdm.auto import tqdm

        n_chunks = -(-self.loader.n_cells // self.chunk)
        bar = tqdm(total=2 * n_chunks, desc=f"embedding {self.loader.n_cells} cells", unit="chunk", leave=False)

        def counted():
            for c in chunks():
                bar.update(1)
                yield c

        try:
            return self.module.embed_cells(counted(), self.module.gene_context(counted))
        finally:
            bar.close()

    def spread(self, values: torch.Tensor, fill) -> torch.Tensor:
        """A tensor over every cell holding ``values`` for the sample's cells and ``fill`` elsewhere."""
        if self.sample is None:
            return values
        out = torch.full((self.loader.n_cells, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
        out[self.sample] = values
        return out

    def missing(self, cells: torch.Tensor) -> torch.Tensor:
        """The cells of ``cells`` outside the sample."""
        if self.sample is None:
            return cells[:0]
        inside = torch.zeros(self.loader.n_cells, dtype=torch.bool, device=cells.device)
        inside[self.sample] = True
        return cells[~inside[cells]]


class SeededKMeans:
    """k-means whose seed follows the run's seed and a call counter (every run repeats exactly)."""

    def __init__(self, seed: int, calls: int = 0):
        self.seed, self.calls = int(seed), int(calls)

    def __call__(self, z, k: int, n_init: int, init=None, select: str = "inertia") -> KMeansResult:
        """Best of ``n_init`` restarts (plus a warm start from ``init``), by ``select`` (:func:`~scgpcl.train.kmeans`)."""
        self.calls += 1
        return kmeans(z, k, n_init=n_init, seed=(self.seed * 100003 + self.calls) % (2**31), init=init, select=select)

    def batch(self, n_init: int):
        """``(z, k) -> (centres, labels)`` tensors on ``z``'s device, for per-minibatch prototypes."""
        def run(z: torch.Tensor, k: int):
            r = self(z, k, n_init)
            return torch.from_numpy(r.centres).to(z.device), torch.from_numpy(r.labels).to(z.device)

        return run


def dec_target(q_rows: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """DEC's target for some cells, with the cluster frequencies ``f_k`` estimated on the sample.

    With every cell in the sample this is :func:`~scgpcl.module.target_distribution` exactly.
    """
    p = q_rows.pow(2) / frequencies
    return p / p.sum(dim=1, keepdim=True)


def nearest(z: torch.Tensor, centres: np.ndarray) -> torch.Tensor:
    """Index of the nearest centre per row, as a tensor on ``z``'s device."""
    return torch.from_numpy(assign(z, centres)).to(z.device)


__all__ += ["dec_target", "nearest", "soft_assign", "target_distribution"]
