"""Minibatches for training and chunks for inference (the PyG ``NeighborLoader`` idea, docs/method.md section 3).

:class:`SubgraphLoader` owns everything a training step consumes apart from
the model: the order of the cells, the two augmented views of each minibatch
(a sampled subgraph and feature masks each), and the minibatch's counts for
the reconstruction loss. It also cuts cells into chunks for inference
(:meth:`SubgraphLoader.chunks`), so that an embedding of any number of cells
goes through one code path with bounded memory.

All tensors are built on the graph's device from the arrays stored there;
the random streams are torch generators on that device, derived from the
seed with ``numpy.random.SeedSequence``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ._features import CellFeatures
from ._graph import BipartiteAdjacency, CellGeneGraph, NeighborSampler
from ._preprocess import PreparedData
from ._sparse import Pattern, SparseBlock

__all__ = ["Batch", "CellChunk", "CountRows", "SubgraphLoader", "View"]


@dataclass
class View:
    """One augmented view of a minibatch: what the encoder reads."""

    #: features of the view's cells (targets first; only the targets without a graph)
    features: CellFeatures
    #: global ids of the view's genes (the gene embedding rows)
    genes: torch.Tensor
    #: the sampled subgraph's adjacency (None for an encoder without the graph)
    adjacency: BipartiteAdjacency | None
    n_target: int
    #: 0/1 column mask of the gene embedding (feature masking), or None
    gene_mask: torch.Tensor | None = None


@dataclass
class CountRows:
    """The targets' raw counts, sparse, for the reconstruction loss."""

    index: torch.Tensor  # flat indices into the (n_target, n_genes) batch of the non-zero counts
    values: torch.Tensor  # those counts
    lgamma: torch.Tensor  # sum of lgamma(count + 1) over the batch (a constant of the ZINB likelihood)
    size_factors: torch.Tensor  # (n_target,)
    shape: tuple[int, int]

    def dense(self) -> torch.Tensor:
        """The counts as a dense (n_target, n_genes) tensor."""
        out = torch.zeros(self.shape[0] * self.shape[1], device=self.values.device)
        out[self.index] = self.values
        return out.reshape(self.shape)


@dataclass
class Batch:
    """One training minibatch: target cells, their views and counts."""

    targets: torch.Tensor  # global cell ids (int64)
    views: list[View]
    counts: CountRows
    #: the targets' z-scored features, dense (only for ``reconstruction="mse"``)
    dense_features: torch.Tensor | None = None


@dataclass
class CellChunk:
    """Some cells with all genes, for inference: features and (for graph encoders) their edges."""

    cells: torch.Tensor
    features: CellFeatures
    adjacency: BipartiteAdjacency | None


@dataclass
class _Streams:
    order: torch.Generator
    views: list[torch.Generator]
    mask: torch.Generator
    thin: torch.Generator
    permutation: torch.Tensor | None = None
    cursor: int = 0
    extra: dict = field(default_factory=dict)


def _generator(seed: np.random.SeedSequence, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed.generate_state(1, dtype=np.uint64)[0] % 2**63))


class SubgraphLoader:
    """Training minibatches with two augmented views each, and inference chunks.

    Parameters
    ----------
    data
        The prepared dataset.
    batch_size
        Target cells per minibatch.
    num_samples
        Node budgets of the subgraph sampler (:class:`NeighborSampler`).
    max_neighbors
        Neighbour cap of the views (0: none).
    feature_drop
        Fraction of feature columns zeroed, per view.
    thin_counts
        Depth augmentation: each view keeps each cell's counts with a probability drawn per cell
        log-uniformly in ``[thin_counts, 1]`` (:meth:`CellGeneGraph.thinned`), wherever it masks
        features; 0 keeps every count.
    edge_weight
        ``"none"`` or ``"lognorm"`` (:class:`CellGeneGraph`).
    uses_graph
        False for an encoder that reads only the target cells' features (no subgraph is sampled).
    gene_dim
        Width of the gene embedding (its feature mask is drawn here too).
    dense_features
        Also hand out the targets' dense z-scored features (``reconstruction="mse"``).
    seed
        Entropy for the random streams (:meth:`reseed`).
    device
        Where the graph and every batch live.
    """

    def __init__(self, data: PreparedData, *, batch_size: int = 1024, num_samples: Sequence[int] = (2048, 1024),
                 max_neighbors: int = 0, feature_drop: Sequence[float] = (0.2, 0.2), thin_counts: float = 0.0,
                 edge_weight: str = "none",
                 uses_graph: bool = True, gene_dim: int = 64, dense_features: bool = False, seed: int | Sequence[int] = 0,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.graph: CellGeneGraph = data.graph(self.device, edge_weight)
        self.sampler = NeighborSampler(self.graph, tuple(num_samples), max_neighbors)
        self.batch_size = int(batch_size)
        self.feature_drop = tuple(float(f) for f in feature_drop)
        if not 0.0 <= float(thin_counts) < 1.0:
            raise ValueError(f"thin_counts must be in [0, 1), not {thin_counts}")
        self.thin_counts = float(thin_counts)
        self.uses_graph = uses_graph
        self.gene_dim = int(gene_dim)
        self.want_dense = dense_features
        self.mean = torch.from_numpy(data.feature_mean).to(self.device)
        self.std = torch.from_numpy(data.feature_std).to(self.device)
        self.size_factors = torch.from_numpy(data.size_factors).to(self.device)
        self.lgamma_cell = torch.from_numpy(data.lgamma_cell).to(self.device)
        self.reseed(seed)

    # ---------------------------------------------------------------- sizes
    @property
    def n_cells(self) -> int:
        """Number of cells of the graph."""
        return self.graph.n_cells

    @property
    def n_genes(self) -> int:
        """Number of genes of the graph."""
        return self.graph.n_genes

    @property
    def steps_per_epoch(self) -> int:
        """Minibatches that visit every cell once: near-equal, at least two cells each (BatchNorm needs two)."""
        n = self.n_cells
        return max(1, min(math.ceil(n / self.batch_size), n // 2))

    # ---------------------------------------------------------- random streams
    def reseed(self, entropy: int | Sequence[int]) -> None:
        """Start the random streams afresh from ``entropy``: the order, the views' samplers, masks, thinning."""
        # a fifth child leaves the first four as they were (SeedSequence.spawn numbers its children)
        s_order, s_v1, s_v2, s_mask, s_thin = np.random.SeedSequence(entropy).spawn(5)
        self._rs = _Streams(order=_generator(s_order, torch.device("cpu")),
                            views=[_generator(s_v1, self.device), _generator(s_v2, self.device)],
                            mask=_generator(s_mask, self.device), thin=_generator(s_thin, self.device))

    def random_state(self) -> dict:
        """A copy of every stream's position (for :meth:`set_random_state`)."""
        rs = self._rs
        return {"order": rs.order.get_state(), "views": [g.get_state() for g in rs.views],
                "mask": rs.mask.get_state(), "thin": rs.thin.get_state(),
                "permutation": None if rs.permutation is None else rs.permutation.clone(), "cursor": rs.cursor}

    def set_random_state(self, state: dict) -> None:
        """Put every stream back where :meth:`random_state` found it."""
        rs = self._rs
        rs.order.set_state(state["order"])
        for g, st in zip(rs.views, state["views"], strict=True):
            g.set_state(st)
        rs.mask.set_state(state["mask"])
        if "thin" in state:  # a state saved before the thinning stream existed (thin_counts was 0, never drawn)
            rs.thin.set_state(state["thin"])
        rs.permutation = None if state["permutation"] is None else state["permutation"].clone()
        rs.cursor = state["cursor"]

    # -------------------------------------------------------------- training
    def plan(self, n_steps: int) -> list[torch.Tensor]:
        """The target cells of the next ``n_steps`` minibatches.

        The cells are visited in random order, one epoch (every cell once, in
        :attr:`steps_per_epoch` near-equal minibatches) after the other; a plan
        may end inside an epoch and the next one continues it.
        """
        rs = self._rs
        out: list[torch.Tensor] = []
        while len(out) < n_steps:
            if rs.permutation is None or rs.cursor >= self.steps_per_epoch:
                rs.permutation = torch.randperm(self.n_cells, generator=rs.order)
                rs.cursor = 0
            k = self.steps_per_epoch
            size, extra = divmod(self.n_cells, k)  # as numpy.array_split: the first `extra` get one more
            i = rs.cursor
            start = i * size + min(i, extra)
            out.append(rs.permutation[start : start + size + (i < extra)].to(self.device))
            rs.cursor += 1
        return out

    def batches(self, plan: list[torch.Tensor], *, n_views: int = 2, mask: bool = True) -> Iterator[Batch]:
        """The minibatches of ``plan``, each with its augmented views and its counts.

        Parameters
        ----------
        plan
            Target cells per minibatch (:meth:`plan`).
        n_views
            Augmented views per minibatch, drawn from the view streams 0, 1, ...
        mask
            Mask feature columns (``feature_drop``); ``False`` keeps every column.
        """
        for targets in plan:
            views = [self.view(targets, v, mask=mask) for v in range(n_views)]
            yield Batch(targets, views, self.count_rows(targets),
                        self._dense_features(targets) if self.want_dense else None)

    def view(self, targets: torch.Tensor, index: int, *, mask: bool = True) -> View:
        """One augmented view of ``targets``: a sampled subgraph, its masked features, its thinned counts.

        Parameters
        ----------
        targets
            Target cell ids (int64, on the loader's device).
        index
            The view: its random stream and its ``feature_drop`` rate.
        mask
            Mask feature columns and thin the counts (``thin_counts``); ``False`` keeps every column and count.
        """
        rate = self.feature_drop[index] if mask else 0.0
        cell_mask = self._column_mask(self.n_genes, rate)
        gene_mask = self._column_mask(self.gene_dim, rate) if self.uses_graph else None
        thin = self._keep_prob if mask and self.thin_counts > 0 else None
        if not self.uses_graph:
            rows, pos = self.graph.rows(targets)
            values = None
            if thin is not None:
                rows, pos, values = self.graph.thinned(rows, pos, *thin(len(targets)))
            feats = self._features(rows, pos, transpose=True, values=values)
            return View(feats.masked(cell_mask), torch.zeros(0, dtype=torch.int64, device=self.device), None,
                        len(targets), gene_mask)
        sub = self.sampler.sample(targets, self._rs.views[index], thin=thin)
        feats = self._features(sub.rows, sub.positions, transpose=True, values=sub.values)
        return View(feats.masked(cell_mask), sub.genes, sub.adjacency, sub.n_target, gene_mask)

    def _keep_prob(self, n_cells: int) -> tuple[torch.Tensor, torch.Generator]:
        """Per cell of a view, the fraction of its counts kept: log-uniform in ``[thin_counts, 1]``."""
        u = torch.rand(n_cells, generator=self._rs.thin, device=self.device)
        return torch.exp(u * math.log(self.thin_counts)), self._rs.thin

    def count_rows(self, targets: torch.Tensor) -> CountRows:
        """The counts of ``targets``, sparse."""
        rows, pos = self.graph.rows(targets)
        index = rows.row * self.n_genes + rows.col
        return CountRows(index, self.graph.counts[pos], self.lgamma_cell[targets].sum().to(torch.float32),
                         self.size_factors[targets], (len(targets), self.n_genes))

    def _dense_features(self, targets: torch.Tensor) -> torch.Tensor:
        return self._features(*self.graph.rows(targets), transpose=False).dense()

    def _features(self, rows: Pattern, pos: torch.Tensor, *, transpose: bool,
                  values: torch.Tensor | None = None) -> CellFeatures:
        block = SparseBlock.from_pattern(rows, self.graph.lognorm[pos] if values is None else values,
                                         transpose=transpose)
        return CellFeatures(block, self.mean, self.std)

    def _column_mask(self, width: int, rate: float) -> torch.Tensor | None:
        if rate <= 0:
            return None
        n_drop = int(round(rate * width))
        m = torch.ones(width, device=self.device)
        m[torch.randperm(width, generator=self._rs.mask, device=self.device)[:n_drop]] = 0.0
        return m

    # ------------------------------------------------------------- inference
    def chunks(self, cells: torch.Tensor | None = None, chunk_size: int = 8192) -> Iterator[CellChunk]:
        """Cells in chunks, each with all genes: for inference.

        Parameters
        ----------
        cells
            Cell ids (int64); ``None``: every cell, in order.
        chunk_size
            At most this many cells per chunk.
        """
        if cells is None:
            cells = torch.arange(self.n_cells, device=self.device)
        for start in range(0, len(cells), chunk_size):
            part = cells[start : start + chunk_size]
            rows, pos = self.graph.rows(part)
            feats = self._features(rows, pos, transpose=False)
            yield CellChunk(part, feats, self.graph.adjacency(rows, pos) if self.uses_graph else None)
