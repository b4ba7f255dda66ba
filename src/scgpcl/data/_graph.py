"""The cell-gene bipartite graph and its minibatch subgraph sampler (docs/method.md sections 2-3).

An edge (cell i, gene j) exists iff the raw count ``X[i, j] > 0``. The graph
is kept as a binary scipy CSR matrix (cells x genes) and its transpose; a
sampled subgraph is handed to the model as a :class:`BipartiteAdjacency`,
torch CSR matrices with the inverse degrees needed for mean aggregation.

Sampling follows the intent of PyG's ``HGTLoader`` without its compiled
extensions: from the target cells, hop 1 draws up to ``num_samples[0]``
genes, hop 2 up to ``num_samples[1]`` further cells through those genes, and
so on alternating node types. Candidates are drawn without replacement with
probability proportional to their normalised degree towards the nodes already
sampled (sum over sampled neighbours ``u`` of ``1 / deg(u)``). The subgraph is
induced: it holds every edge between its cells and its genes, unless
``max_neighbors`` is set.

``max_neighbors`` mirrors the neighbour cap of the reference's sampler
(torch_sparse's ``hgt_sample``, ``MAX_NEIGHBORS = 50``): there a node with more
than 50 neighbours in the full graph receives messages only from a uniform
draw of 50 of them (those of the draw that are in the subgraph), separately
for each edge direction. So in a view a cell aggregates about 50 of its
expressed genes and a gene about 50 of its cells, drawn anew per view: the
"only part of the genes a cell expresses" of docs/method.md section 3. Here each edge
into a node of full degree ``d`` is kept with probability ``min(1, cap / d)``,
independently per direction: the same chance per edge as the reference's draw
(its number of kept neighbours is exactly ``cap`` before the intersection,
here ``cap`` on average), vectorised over the subgraph's edges.

``edge_weights`` (an option; the reference's SAGE mean is unweighted) gives
each edge a weight, the cell's log-normalised expression of the gene, and
the aggregation becomes the weighted mean ``sum_u w_u h_u / sum_u w_u``. The
sampler still draws by the binary degrees: the weights change only how the
messages of a view's edges are averaged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["BipartiteGraph", "BipartiteAdjacency", "Subgraph", "SubgraphSampler"]


#: Above this fraction of non-zeros a dense matmul beats torch's CSR one on CPU
#: (measured for 2048 x 2000 @ 2000 x 512: crossover at ~12 %, see benchmarks/results/core.md).
DENSE_ABOVE = 0.12
#: ... but never for matrices with more entries than this (128 MB as float32):
#: the full-graph matrices of a large dataset (say 100k cells x 2000 genes, 4
#: of them) would otherwise take gigabytes. Every benchmark dataset and every
#: minibatch subgraph is below it.
DENSE_MAX_ENTRIES = 2**25


def _to_torch_csr(m: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    """A constant matrix for ``_SpMM``: torch CSR, or dense when that is faster and not too large."""
    n_entries = m.shape[0] * m.shape[1]
    if m.nnz > DENSE_ABOVE * n_entries and n_entries <= DENSE_MAX_ENTRIES:
        return torch.from_numpy(m.toarray().astype(np.float32, copy=False)).to(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)),
            size=m.shape,
            check_invariants=False,
        ).to(device)


class _SpMM(torch.autograd.Function):
    """``A @ x`` for a constant (CSR or dense) ``A``; the backward uses the precomputed ``A^T``.

    torch's native CSR autograd is several times slower (PERF-NOTES.md).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.a_t @ grad.contiguous()


@dataclass
class BipartiteAdjacency:
    """Cell x gene adjacency of a (sub)graph, ready for (weighted) mean aggregation.

    Binary unless built with ``weighted=True``; the inverse degrees are the inverse row sums, so
    the aggregation is the mean over the neighbours, weighted by the entries."""

    a: torch.Tensor  # CSR, n_cells x n_genes: the edges into cells (genes -> cells)
    a_t: torch.Tensor  # CSR, n_genes x n_cells: a's transpose
    inv_deg_cell: torch.Tensor  # (n_cells, 1)
    inv_deg_gene: torch.Tensor  # (n_genes, 1)
    #: The edges into genes (cells -> genes), n_genes x n_cells, and its transpose, when they are not
    #: ``a_t`` and ``a`` (a view with a neighbour cap drawn separately per direction).
    b: torch.Tensor | None = None
    b_t: torch.Tensor | None = None

    @classmethod
    def from_scipy(cls, m: sp.csr_matrix, device: torch.device | str = "cpu",
                   to_genes: sp.csr_matrix | None = None, *, weighted: bool = False) -> "BipartiteAdjacency":
        """From a cells x genes matrix of the edges into cells; ``to_genes`` (genes x cells), if
        given, holds the edges into genes, else they are the same edges reversed. ``weighted``
        keeps the matrices' (positive) entries as edge weights; otherwise every edge weighs 1."""
        device = torch.device(device)
        prep = _weights if weighted else _binary
        m = prep(m)
        deg_c = np.asarray(m.sum(axis=1), dtype=np.float32).ravel()
        if to_genes is None:
            deg_g = np.asarray(m.sum(axis=0), dtype=np.float32).ravel()
            b = b_t = None
        else:
            to_genes = prep(to_genes)
            if to_genes.shape != (m.shape[1], m.shape[0]):
                raise ValueError(f"to_genes must be {m.shape[1]} x {m.shape[0]}, got {to_genes.shape}")
            deg_g = np.asarray(to_genes.sum(axis=1), dtype=np.float32).ravel()
            b, b_t = _to_torch_csr(to_genes, device), _to_torch_csr(to_genes.T.tocsr(), device)

        def inv(d):  # a node without edges gets 1: its aggregate is 0 either way
            return torch.from_numpy(np.float32(1.0) / np.where(d > 0, d, np.float32(1.0))).reshape(-1, 1).to(device)

        return cls(
            a=_to_torch_csr(m, device),
            a_t=_to_torch_csr(m.T.tocsr(), device),
            inv_deg_cell=inv(deg_c),
            inv_deg_gene=inv(deg_g),
            b=b,
            b_t=b_t,
        )

    @property
    def n_cells(self) -> int:
        return self.a.shape[0]

    @property
    def n_genes(self) -> int:
        return self.a.shape[1]

    def mean_genes_to_cells(self, x_gene: torch.Tensor) -> torch.Tensor:
        """For every cell, the mean of its neighbouring genes' rows of ``x_gene``."""
        return _SpMM.apply(self.a, self.a_t, x_gene) * self.inv_deg_cell

    def mean_cells_to_genes(self, x_cell: torch.Tensor) -> torch.Tensor:
        """For every gene, the mean of its neighbouring cells' rows of ``x_cell``."""
        if self.b is not None:
            return _SpMM.apply(self.b, self.b_t, x_cell) * self.inv_deg_gene
        return _SpMM.apply(self.a_t, self.a, x_cell) * self.inv_deg_gene


def _binary(m: sp.spmatrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.eliminate_zeros()
    m.data[:] = 1.0
    return m


def _weights(m: sp.spmatrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.eliminate_zeros()
    if m.nnz and not (np.isfinite(m.data).all() and (m.data > 0).all()):
        raise ValueError("edge weights must be finite and positive")
    return m


@dataclass
class Subgraph:
    """A sampled view: global node ids (targets first) and the induced adjacency."""

    cells: np.ndarray  # global cell ids; the first ``n_target`` are the targets
    genes: np.ndarray  # global gene ids
    n_target: int
    adjacency: BipartiteAdjacency


class BipartiteGraph:
    """Cell-gene graph of a count matrix: edge iff count > 0.

    ``edge_weights`` (same shape, positive exactly where the counts are; for example the
    log-normalised counts) makes the views' aggregation a weighted mean (module docstring).
    """

    def __init__(self, counts: sp.spmatrix, edge_weights: sp.spmatrix | None = None):
        a = sp.csr_matrix(counts, dtype=np.float32, copy=True)
        a.eliminate_zeros()
        a.data[:] = 1.0
        a.sort_indices()
        self.a = a
        self.a_t = a.T.tocsr()
        self.deg_cell = np.diff(a.indptr).astype(np.float64)
        self.deg_gene = np.diff(self.a_t.indptr).astype(np.float64)
        self.w: sp.csr_matrix | None = None
        if edge_weights is not None:
            w = _weights(edge_weights)
            w.sort_indices()
            if w.shape != a.shape or not (np.array_equal(w.indptr, a.indptr) and np.array_equal(w.indices, a.indices)):
                raise ValueError("edge_weights must be positive exactly where the counts are")
            self.w = w

    @property
    def weighted(self) -> bool:
        return self.w is not None

    @property
    def _edges(self) -> sp.csr_matrix:
        """The matrix the adjacencies are cut from: the weights, or the binary graph."""
        return self.w if self.w is not None else self.a

    @property
    def n_cells(self) -> int:
        return self.a.shape[0]

    @property
    def n_genes(self) -> int:
        return self.a.shape[1]

    @property
    def n_edges(self) -> int:
        return int(self.a.nnz)

    def full(self, device: torch.device | str = "cpu") -> Subgraph:
        """The whole graph as one subgraph whose targets are all cells."""
        return Subgraph(
            cells=np.arange(self.n_cells),
            genes=np.arange(self.n_genes),
            n_target=self.n_cells,
            adjacency=BipartiteAdjacency.from_scipy(self._edges, device, weighted=self.weighted),
        )

    def induced(self, cells: np.ndarray, genes: np.ndarray, n_target: int, device="cpu", *,
                max_neighbors: int = 0, rng: np.random.Generator | None = None) -> Subgraph:
        """The subgraph on ``cells`` x ``genes``: every edge between them, or, with ``max_neighbors``,
        each edge into a node of full degree ``d`` kept with probability ``min(1, max_neighbors / d)``,
        drawn separately for the two directions (module docstring)."""
        sub = self._edges[cells][:, genes].tocsr()
        if max_neighbors <= 0:
            return Subgraph(cells, genes, n_target, BipartiteAdjacency.from_scipy(sub, device, weighted=self.weighted))
        if rng is None:
            raise ValueError("a neighbour cap needs a random generator")
        row = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
        p_cell = np.minimum(1.0, max_neighbors / np.maximum(self.deg_cell[cells], 1.0))[row]
        p_gene = np.minimum(1.0, max_neighbors / np.maximum(self.deg_gene[genes], 1.0))[sub.indices]
        u = rng.random((2, sub.nnz))
        into_cells = _keep(sub, u[0] < p_cell)
        into_genes = _keep(sub, u[1] < p_gene).T.tocsr()
        return Subgraph(cells, genes, n_target,
                        BipartiteAdjacency.from_scipy(into_cells, device, into_genes, weighted=self.weighted))


def _keep(m: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The CSR matrix ``m`` with only the stored entries where ``keep`` is true."""
    out = m.copy()
    out.data = np.where(keep, out.data, 0)
    out.eliminate_zeros()
    return out


def _weighted_sample(candidates: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``k`` of ``candidates`` without replacement, probability proportional to ``weights``.

    Uses exponential keys (Efraimidis-Spirakis): the ``k`` smallest ``E_i / w_i``.
    """
    if len(candidates) <= k:
        return candidates
    keys = rng.exponential(size=len(candidates)) / weights
    chosen = np.argpartition(keys, k)[:k]
    return np.sort(candidates[chosen])


class SubgraphSampler:
    """Samples one view's neighbourhood of a set of target cells.

    Parameters
    ----------
    graph
        The full bipartite graph.
    num_samples
        Node budget per hop: genes at hop 1, cells at hop 2, genes at hop 3, ...
    max_neighbors
        Neighbour cap per node and direction, as in the reference's sampler
        (module docstring); 0 keeps every edge of the induced subgraph.
    """

    def __init__(self, graph: BipartiteGraph, num_samples: tuple[int, ...] = (2048, 1024), max_neighbors: int = 0):
        if any(int(n) < 0 for n in num_samples):
            raise ValueError("num_samples must be non-negative")
        if int(max_neighbors) < 0:
            raise ValueError("max_neighbors must be non-negative")
        self.graph = graph
        self.num_samples = tuple(int(n) for n in num_samples)
        self.max_neighbors = int(max_neighbors)

    def sample(self, targets: np.ndarray, rng: np.random.Generator, device="cpu") -> Subgraph:
        g = self.graph
        targets = np.asarray(targets, dtype=np.int64)
        cells = [targets]
        genes: list[np.ndarray] = []
        in_cells = np.zeros(g.n_cells, dtype=bool)
        in_cells[targets] = True
        in_genes = np.zeros(g.n_genes, dtype=bool)
        frontier, frontier_is_cell = targets, True
        for budget in self.num_samples:
            if frontier_is_cell:
                adj, inv_deg, taken = g.a, 1.0 / np.maximum(g.deg_cell, 1), in_genes
            else:
                adj, inv_deg, taken = g.a_t, 1.0 / np.maximum(g.deg_gene, 1), in_cells
            # normalised degree of every node of the other type towards the frontier
            weights = adj[frontier].T @ inv_deg[frontier]
            weights[taken] = 0.0
            candidates = np.flatnonzero(weights > 0)
            new = _weighted_sample(candidates, weights[candidates], budget, rng)
            taken[new] = True
            (genes if frontier_is_cell else cells).append(new)
            frontier, frontier_is_cell = new, not frontier_is_cell
            if len(frontier) == 0:
                break
        cell_ids = np.concatenate(cells)
        gene_ids = np.sort(np.concatenate(genes)) if genes else np.zeros(0, dtype=np.int64)
        return g.induced(cell_ids, gene_ids, len(targets), device, max_neighbors=self.max_neighbors, rng=rng)
