"""The cell-gene bipartite graph, its sampled subgraphs and the neighbour sampler (docs/method.md sections 2-3).

An edge (cell i, gene j) exists iff the raw count ``X[i, j] > 0``.
:class:`CellGeneGraph` holds the whole prepared dataset on the training
device in one CSR pattern (cells x genes, int32 column indices) shared by
the raw counts, the log-normalised values and the graph, plus the transposed
pattern (the cells of each gene) for the gene -> cell sampling hop. Nothing
is duplicated per batch: a minibatch gathers its rows from these arrays on
the device (:func:`~scgpcl.data._sparse.gather_rows`).

Sampling follows the intent of PyG's ``HGTLoader`` without compiled
extensions: from the target cells, hop 1 draws up to ``num_samples[0]`` genes,
hop 2 up to ``num_samples[1]`` further cells through those genes, and so on,
alternating node types. Candidates are drawn without replacement with
probability proportional to their normalised degree towards the nodes
already sampled, ``w(v) = sum over sampled neighbours u of 1 / deg(u)``
(successive sampling: each draw proportional to ``w`` among the nodes not
yet taken).

- A hop from cells to genes computes ``w`` exactly from the rows of the
  frontier cells (cost: their non-zeros) and draws with exponential keys
  (Efraimidis-Spirakis).
- A hop from genes to cells would need the whole transposed graph to compute
  ``w`` exactly (every cell of every frontier gene: O(all cells) per batch).
  Instead it uses that ``w(c) / |F| = sum_{g in F} (1/|F|) (1/deg g) [c ~ g]``
  is the law of "a uniform gene of the frontier ``F``, then a uniform cell of
  that gene": draws from it, with repeats and already-taken cells rejected,
  are exactly successive sampling proportional to ``w`` (cost: the budget).
  When the graph has few cells beyond those taken, the exact computation is
  used instead (it is cheap there and avoids many rejections).

The subgraph is induced: it holds every edge between its cells and its
genes, unless ``max_neighbors`` is set. ``max_neighbors`` mirrors the
neighbour cap of the reference's sampler (torch_sparse's ``hgt_sample``,
``MAX_NEIGHBORS = 50``): each edge into a node of full degree ``d`` is kept
with probability ``min(1, cap / d)``, independently per direction, so in a
view a cell aggregates about ``cap`` of its expressed genes.

``edge_weight="lognorm"`` (an option; the reference's SAGE mean is unweighted)
gives each edge the cell's log-normalised expression of the gene as weight,
and the aggregation becomes the weighted mean. The sampler still draws by the
binary degrees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from ._sparse import Pattern, SparseBlock, gather_rows, spmm

__all__ = ["BipartiteAdjacency", "CellGeneGraph", "NeighborSampler", "Subgraph"]


def _inv(deg: torch.Tensor) -> torch.Tensor:
    """1 / degree as a column; a node without edges gets 1 (its aggregate is 0 either way)."""
    return (1.0 / torch.where(deg > 0, deg, torch.ones_like(deg))).reshape(-1, 1)


@dataclass
class BipartiteAdjacency:
    """The edges of a (sub)graph between ``n_cells`` cells and ``n_genes`` genes, ready for mean aggregation.

    ``a`` holds the edges into cells (cells x genes); ``b``, when the two
    directions differ (a neighbour cap), the edges into genes (genes x cells).
    Entries are 1, or edge weights; the inverse degrees are the inverse row
    sums, so the aggregation is the (weighted) mean over the neighbours.
    """

    a: SparseBlock
    inv_deg_cell: torch.Tensor  # (n_cells, 1)
    inv_deg_gene: torch.Tensor  # (n_genes, 1)
    b: SparseBlock | None = None

    @classmethod
    def from_scipy(cls, m: sp.spmatrix, device: torch.device | str = "cpu",
                   to_genes: sp.spmatrix | None = None, *, weighted: bool = False) -> BipartiteAdjacency:
        """From a cells x genes scipy matrix: an edge where an entry is non-zero.

        ``to_genes`` (genes x cells), if given, holds the edges into genes.
        ``weighted`` keeps the (positive) entries as edge weights; otherwise every edge weighs 1.
        """
        m = _edges(m, weighted)
        to_genes = None if to_genes is None else _edges(to_genes, weighted)
        deg_c = torch.from_numpy(np.asarray(m.sum(axis=1), dtype=np.float32).ravel()).to(device)
        if to_genes is None:
            deg_g = torch.from_numpy(np.asarray(m.sum(axis=0), dtype=np.float32).ravel()).to(device)
            b = None
        else:
            if to_genes.shape != (m.shape[1], m.shape[0]):
                raise ValueError(f"to_genes must be {m.shape[1]} x {m.shape[0]}, got {to_genes.shape}")
            deg_g = torch.from_numpy(np.asarray(to_genes.sum(axis=1), dtype=np.float32).ravel()).to(device)
            b = SparseBlock.from_scipy(to_genes, device)
        return cls(SparseBlock.from_scipy(m, device), _inv(deg_c), _inv(deg_g), b)

    @property
    def n_cells(self) -> int:
        """Number of cells (rows of ``a``)."""
        return self.a.shape[0]

    @property
    def n_genes(self) -> int:
        """Number of genes (columns of ``a``)."""
        return self.a.shape[1]

    def mean_genes_to_cells(self, x_gene: torch.Tensor) -> torch.Tensor:
        """For every cell, the mean of its neighbouring genes' rows of ``x_gene``."""
        return spmm(self.a, x_gene) * self.inv_deg_cell

    def sum_cells_to_genes(self, x_cell: torch.Tensor) -> torch.Tensor:
        """For every gene, the (weighted) sum of its neighbouring cells' rows of ``x_cell``."""
        if self.b is not None:
            return spmm(self.b, x_cell)
        return spmm(self.a, x_cell, transpose=True)

    def mean_cells_to_genes(self, x_cell: torch.Tensor) -> torch.Tensor:
        """For every gene, the mean of its neighbouring cells' rows of ``x_cell``."""
        return self.sum_cells_to_genes(x_cell) * self.inv_deg_gene


def _edges(m: sp.spmatrix, weighted: bool) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.eliminate_zeros()
    if weighted:
        if m.nnz and not (np.isfinite(m.data).all() and (m.data > 0).all()):
            raise ValueError("edge weights must be finite and positive")
    else:
        m.data[:] = 1.0
    return m


@dataclass
class Subgraph:
    """A sampled view: global node ids (targets first), the adjacency, and the cells' stored entries.

    ``rows`` is the pattern of the subgraph cells' rows over all genes and
    ``positions`` where its entries sit in the :class:`CellGeneGraph` arrays,
    so features and counts are gathered without another search.
    """

    cells: torch.Tensor  # int64 global cell ids; the first ``n_target`` are the targets
    genes: torch.Tensor  # int64 global gene ids, ascending
    n_target: int
    adjacency: BipartiteAdjacency | None
    rows: Pattern
    positions: torch.Tensor
    #: the entries' log-normalised values when the view thinned the counts (``thin``); None: the stored ones
    values: torch.Tensor | None = None


class CellGeneGraph:
    """The prepared dataset as the loader uses it, on one device.

    Parameters
    ----------
    indptr, indices
        CSR pattern of the kept cells x selected genes (non-zero counts).
    counts, lognorm
        Values of that pattern: raw counts, log-normalised values.
    n_genes
        Number of genes (columns).
    device
        Where the tensors live; on the CPU the numpy arrays are shared, not copied.
    edge_weight
        ``"none"`` (binary graph) or ``"lognorm"``.
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, counts: np.ndarray, lognorm: np.ndarray,
                 n_genes: int, device: torch.device | str = "cpu", edge_weight: str = "none"):
        device = torch.device(device)
        self.device = device
        self.n_cells = len(indptr) - 1
        self.n_genes = int(n_genes)
        self.crow = torch.from_numpy(np.asarray(indptr, dtype=np.int64)).to(device)
        self.col = torch.from_numpy(np.asarray(indices, dtype=np.int32)).to(device)
        self.counts = torch.from_numpy(np.asarray(counts, dtype=np.float32)).to(device)
        self.lognorm = torch.from_numpy(np.asarray(lognorm, dtype=np.float32)).to(device)
        t_indptr, t_indices = _transposed_pattern(indptr, indices, self.n_cells, self.n_genes)
        self.t_crow = torch.from_numpy(t_indptr).to(device)
        self.t_col = torch.from_numpy(t_indices).to(device)
        self.deg_cell = self.crow.diff().to(torch.float32)
        self.deg_gene = self.t_crow.diff().to(torch.float32)
        if edge_weight not in ("none", "lognorm"):
            raise ValueError(f"edge_weight must be 'none' or 'lognorm', not {edge_weight!r}")
        self.weighted = edge_weight == "lognorm"

    @classmethod
    def from_scipy(cls, counts: sp.spmatrix, weights: sp.spmatrix | None = None,
                   device: torch.device | str = "cpu") -> CellGeneGraph:
        """The graph of a count matrix (edge iff count > 0).

        ``weights`` (positive exactly where the counts are) become the log-normalised values and the edge
        weights (``edge_weight="lognorm"``).
        """
        c = sp.csr_matrix(counts, dtype=np.float32, copy=True)
        c.eliminate_zeros()
        c.sort_indices()
        w = c.copy()
        if weights is not None:
            w = _edges(weights, weighted=True)
            w.sort_indices()
            if w.shape != c.shape or not (np.array_equal(w.indptr, c.indptr) and np.array_equal(w.indices, c.indices)):
                raise ValueError("edge weights must be positive exactly where the counts are")
        return cls(c.indptr, c.indices, c.data, w.data, c.shape[1], device,
                   "lognorm" if weights is not None else "none")

    @property
    def n_edges(self) -> int:
        """Number of edges (non-zero counts)."""
        return int(self.col.numel())

    def full(self) -> Subgraph:
        """The whole graph as one subgraph whose targets are all cells (small graphs: tests)."""
        return self.subgraph(torch.arange(self.n_cells, device=self.device), None, self.n_cells)

    def edge_values(self, positions: torch.Tensor, values: torch.Tensor | None = None) -> torch.Tensor | None:
        """Edge weights of the stored entries at ``positions`` (None for the plain graph: every edge 1).

        Parameters
        ----------
        positions
            Where the entries sit in the stored arrays.
        values
            The entries' log-normalised values when they are not the stored ones (a thinned view).
        """
        if not self.weighted:
            return None
        return self.lognorm[positions] if values is None else values

    def thinned(self, rows: Pattern, positions: torch.Tensor, keep_prob: torch.Tensor,
                generator: torch.Generator) -> tuple[Pattern, torch.Tensor, torch.Tensor]:
        """Some cells' entries after binomial thinning of their counts (depth augmentation).

        Each count of row ``i`` is kept with probability ``keep_prob[i]``; the entries whose
        thinned count is 0 leave the pattern. The kept entries' values are log-normalised at the
        cell's own scaling divided by ``keep_prob[i]``, so a thinned cell is scaled as if its
        library had been that much smaller from the start.

        Parameters
        ----------
        rows, positions
            The cells' rows and where their entries sit (as :meth:`rows` returns them).
        keep_prob
            Per row, the fraction of its counts kept, in (0, 1].
        generator
            Random generator of the thinning.

        Returns
        -------
        tuple
            ``(rows, positions, values)`` of the entries that keep a count.
        """
        counts = self.counts[positions]
        p = keep_prob[rows.row]
        # torch.binomial needs whole numbers of trials (2.9999998 would keep 1 on average at p = 0.5):
        # counts within 1e-3 of a whole number count as that number; a fractional remainder (data
        # accepted with reconstruction="mse") is kept whole with probability p, so the mean is p * count
        whole = torch.floor(counts + 1e-3)
        kept = torch.binomial(whole, p, generator=generator)
        frac = torch.clamp(counts - whole, min=0.0)
        if bool((frac > 0).any()):
            kept = kept + frac * (torch.rand(len(frac), generator=generator, device=frac.device) < p)
        keep = kept > 0
        pos = positions[keep]
        # lognorm = log1p(count * scale) with one scale per cell, so scale = expm1(lognorm) / count
        scale = torch.expm1(self.lognorm[pos]) / counts[keep]
        values = torch.log1p(kept[keep] * scale / p[keep])
        pattern = Pattern(_crow_from_rows(rows.row[keep], rows.shape[0]), rows.col[keep], rows.shape)
        return pattern, pos, values

    def rows(self, cells: torch.Tensor) -> tuple[Pattern, torch.Tensor]:
        """The pattern of ``cells``' rows (all genes) and where its entries sit in the stored arrays."""
        crow, pos = gather_rows(self.crow, cells)
        return Pattern(crow, self.col[pos], (len(cells), self.n_genes)), pos

    def adjacency(self, rows: Pattern, positions: torch.Tensor, values: torch.Tensor | None = None
                  ) -> BipartiteAdjacency:
        """The edges of some cells as an adjacency.

        Parameters
        ----------
        rows
            The pattern of those cells' rows, over all genes or a subset (as :meth:`rows` returns it).
        positions
            Where each entry of ``rows`` sits in the stored arrays (its edge weight, if weighted).
        values
            The entries' log-normalised values when they are not the stored ones (a thinned view).
        """
        val = self.edge_values(positions, values)
        block = SparseBlock.from_pattern(rows, val)
        return BipartiteAdjacency(block, _inv(rows.row_sums(val)), _inv(rows.col_sums(val)))

    def subgraph(self, cells: torch.Tensor, genes: torch.Tensor | None, n_target: int, *,
                 max_neighbors: int = 0, generator: torch.Generator | None = None,
                 with_adjacency: bool = True,
                 thin: Callable[[int], tuple[torch.Tensor, torch.Generator]] | None = None) -> Subgraph:
        """The subgraph induced by ``cells`` x ``genes``.

        Parameters
        ----------
        cells
            Global cell ids (int64), the targets first.
        genes
            Global gene ids (int64, ascending), or ``None`` for every gene.
        n_target
            How many of ``cells`` are targets.
        max_neighbors
            Neighbour cap: each edge into a node of full degree ``d`` is kept with
            probability ``min(1, max_neighbors / d)``, separately per direction.
            0 keeps every edge.
        generator
            Random generator for the cap (required when ``max_neighbors > 0``).
        with_adjacency
            Build the adjacency; ``False``: the subgraph without it (the cells' rows and positions only).
        thin
            Depth augmentation: called with the number of ``cells``, returns each one's fraction of
            counts kept and the thinning's generator (:meth:`thinned`); None keeps every count.
        """
        rows, pos = self.rows(cells)
        values = None
        if thin is not None:
            rows, pos, values = self.thinned(rows, pos, *thin(len(cells)))
        gene_ids = torch.arange(self.n_genes, device=self.device) if genes is None else genes
        sub = Subgraph(cells, gene_ids, n_target, None, rows, pos, values)
        if not with_adjacency:
            return sub
        if len(gene_ids) == self.n_genes:
            pattern, s_pos, s_val = rows, pos, values
        else:
            where = torch.full((self.n_genes,), -1, dtype=torch.int64, device=self.device)
            where[gene_ids] = torch.arange(len(gene_ids), device=self.device)
            local = where[rows.col]
            keep = local >= 0
            pattern = Pattern(_crow_from_rows(rows.row[keep], len(cells)), local[keep], (len(cells), len(gene_ids)))
            s_pos, s_val = pos[keep], None if values is None else values[keep]
        if max_neighbors > 0:
            sub.adjacency = self._capped(pattern, s_pos, cells, gene_ids, max_neighbors, generator, s_val)
        else:
            sub.adjacency = self.adjacency(pattern, s_pos, s_val)
        return sub

    def _capped(self, p: Pattern, pos, cells, genes, cap, generator, values=None) -> BipartiteAdjacency:
        if generator is None:
            raise ValueError("a neighbour cap needs a random generator")
        n_c, n_g = p.shape
        row, col = p.row, p.col
        p_cell = torch.clamp(cap / torch.clamp(self.deg_cell[cells], min=1.0), max=1.0)[row]
        p_gene = torch.clamp(cap / torch.clamp(self.deg_gene[genes], min=1.0), max=1.0)[col]
        u = torch.rand((2, p.nnz), generator=generator, device=self.device)
        val = self.edge_values(pos, values)
        val = torch.ones(p.nnz, device=self.device) if val is None else val
        into_cells, into_genes = u[0] < p_cell, u[1] < p_gene
        pa = Pattern(_crow_from_rows(row[into_cells], n_c), col[into_cells], (n_c, n_g))
        a = SparseBlock.from_pattern(pa, val[into_cells])
        # edges into genes: the kept entries, genes as rows
        g_row, g_col, g_val = col[into_genes], row[into_genes], val[into_genes]
        order = torch.sort(g_row * n_c + g_col).indices
        pb = Pattern(_crow_from_rows(g_row[order], n_g), g_col[order], (n_g, n_c))
        b = SparseBlock.from_pattern(pb, g_val[order])
        return BipartiteAdjacency(a, _inv(pa.row_sums(val[into_cells])), _inv(pb.row_sums(g_val[order])), b)


def _crow_from_rows(row: torch.Tensor, n_rows: int) -> torch.Tensor:
    """Row pointer of entries whose (sorted) row ids are ``row``."""
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=row.device)
    torch.cumsum(torch.bincount(row, minlength=n_rows), 0, out=crow[1:])
    return crow


def _transposed_pattern(indptr, indices, n_rows: int, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The genes x cells pattern (the cells of each gene, ascending), int32 cell ids."""
    ones = np.ones(len(indices), dtype=np.int8)
    t = sp.csr_matrix((ones, indices, indptr), shape=(n_rows, n_cols)).T.tocsr()
    return t.indptr.astype(np.int64), t.indices.astype(np.int32, copy=False)


class NeighborSampler:
    """Draws one view's neighbourhood of a set of target cells (module docstring).

    Parameters
    ----------
    graph
        The whole graph.
    num_samples
        Node budget per hop: genes at hop 1, cells at hop 2, genes at hop 3, ...
    max_neighbors
        Neighbour cap per node and direction; 0 keeps every edge of the induced subgraph.
    exact_below
        A gene -> cell hop computes the weights of all cells (exactly, O(all
        edges)) when fewer than this many times the budget of cells is left
        to draw from; otherwise it draws through the frontier's genes.
    """

    def __init__(self, graph: CellGeneGraph, num_samples: tuple[int, ...] = (2048, 1024), max_neighbors: int = 0,
                 exact_below: float = 4.0):
        if any(int(n) < 0 for n in num_samples):
            raise ValueError("num_samples must be non-negative")
        if int(max_neighbors) < 0:
            raise ValueError("max_neighbors must be non-negative")
        self.graph = graph
        self.num_samples = tuple(int(n) for n in num_samples)
        self.max_neighbors = int(max_neighbors)
        self.exact_below = float(exact_below)

    def sample(self, targets: torch.Tensor, generator: torch.Generator, *,
               thin: Callable[[int], tuple[torch.Tensor, torch.Generator]] | None = None) -> Subgraph:
        """The subgraph of one view around ``targets``.

        Parameters
        ----------
        targets
            Target cell ids (int64, on the graph's device); they come first in the subgraph's cells.
        generator
            Random generator of this view: the same state draws the same subgraph.
        thin
            Depth augmentation, passed to :meth:`CellGeneGraph.subgraph`; None keeps every count.
        """
        g = self.graph
        dev = g.device
        cells, genes = [targets], []
        taken_cells = torch.zeros(g.n_cells, dtype=torch.bool, device=dev)
        taken_cells[targets] = True
        taken_genes = torch.zeros(g.n_genes, dtype=torch.bool, device=dev)
        frontier, is_cell = targets, True
        for budget in self.num_samples:
            if is_cell:
                new = self._cells_to_genes(frontier, taken_genes, budget, generator)
                taken_genes[new] = True
                genes.append(new)
            else:
                new = self._genes_to_cells(frontier, taken_cells, budget, generator)
                taken_cells[new] = True
                cells.append(new)
            frontier, is_cell = new, not is_cell
            if len(frontier) == 0:
                break
        cell_ids = torch.cat(cells)
        gene_ids = torch.sort(torch.cat(genes)).values if genes else torch.zeros(0, dtype=torch.int64, device=dev)
        return g.subgraph(cell_ids, gene_ids, len(targets), max_neighbors=self.max_neighbors, generator=generator,
                          thin=thin)

    def _cells_to_genes(self, frontier, taken, budget, generator) -> torch.Tensor:
        g = self.graph
        rows, _ = g.rows(frontier)
        w_edge = (1.0 / torch.clamp(g.deg_cell[frontier], min=1.0))[rows.row]
        weights = torch.zeros(g.n_genes, device=g.device).index_add_(0, rows.col, w_edge)
        return _weighted_sample(weights, taken, budget, generator)

    def _genes_to_cells(self, frontier, taken, budget, generator) -> torch.Tensor:
        g = self.graph
        left = g.n_cells - int(taken.sum())
        if budget <= 0 or left <= 0:
            return torch.zeros(0, dtype=torch.int64, device=g.device)
        if left < self.exact_below * budget:
            return _weighted_sample(self._exact_cell_weights(frontier), taken, budget, generator)
        deg = g.t_crow[frontier + 1] - g.t_crow[frontier]
        frontier = frontier[deg > 0]
        if len(frontier) == 0:
            return torch.zeros(0, dtype=torch.int64, device=g.device)
        chosen = torch.zeros(0, dtype=torch.int64, device=g.device)
        seen = taken.clone()
        for _ in range(64):
            need = budget - len(chosen)
            draws = self._draw_through_genes(frontier, 2 * need + 16, generator)
            fresh = _first_occurrences(draws[~seen[draws]])[:need]
            seen[fresh] = True
            chosen = torch.cat([chosen, fresh])
            if len(chosen) >= budget:
                return chosen
        # very skewed weights (rare): finish exactly
        rest = _weighted_sample(self._exact_cell_weights(frontier), seen, budget - len(chosen), generator)
        return torch.cat([chosen, rest])

    def _draw_through_genes(self, frontier, n, generator) -> torch.Tensor:
        """``n`` cells, each a uniform cell of a uniform gene of ``frontier``."""
        g = self.graph
        pick = frontier[torch.randint(len(frontier), (n,), generator=generator, device=g.device)]
        start, deg = g.t_crow[pick], g.t_crow[pick + 1] - g.t_crow[pick]
        offset = (torch.rand(n, generator=generator, device=g.device) * deg).to(torch.int64)
        offset = torch.minimum(offset, deg - 1)
        return g.t_col[start + offset].to(torch.int64)

    def _exact_cell_weights(self, frontier) -> torch.Tensor:
        g = self.graph
        _, pos = gather_rows(g.t_crow, frontier)
        counts = g.t_crow[frontier + 1] - g.t_crow[frontier]
        w_edge = torch.repeat_interleave(1.0 / torch.clamp(g.deg_gene[frontier], min=1.0), counts,
                                         output_size=len(pos))
        return torch.zeros(g.n_cells, device=g.device).index_add_(0, g.t_col[pos].to(torch.int64), w_edge)


def _first_occurrences(x: torch.Tensor) -> torch.Tensor:
    """The distinct values of ``x`` in the order of their first occurrence."""
    if len(x) == 0:
        return x
    uniq, inverse = torch.unique(x, return_inverse=True)
    first = torch.full((len(uniq),), len(x), dtype=torch.int64, device=x.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(x), device=x.device), reduce="amin")
    return uniq[torch.argsort(first)]


def _weighted_sample(weights: torch.Tensor, taken: torch.Tensor, k: int, generator) -> torch.Tensor:
    """Up to ``k`` node ids drawn without replacement, probability proportional to ``weights``.

    Only nodes with positive weight that are not ``taken`` are drawn (exponential keys). Ascending ids.
    """
    weights = torch.where(taken, torch.zeros_like(weights), weights)
    candidates = torch.nonzero(weights > 0).squeeze(1)
    if len(candidates) <= k:
        return candidates
    keys = torch.empty(len(candidates), device=weights.device).exponential_(generator=generator)
    keys = keys / weights[candidates]
    chosen = torch.topk(keys, k, largest=False, sorted=False).indices
    return torch.sort(candidates[chosen]).values
