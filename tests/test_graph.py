"""Cell-gene bipartite graph, mean aggregation and the subgraph sampler (docs/method.md sections 2-3)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scgpcl.data import BipartiteAdjacency, CellGeneGraph, NeighborSampler, SparseBlock, _sparse, gather_rows, spmm

# Hand-made 4 cells x 3 genes; cell 2 and gene 2 have no edges.
#        g0 g1 g2
# c0  [  2  1  0 ]
# c1  [  0  3  0 ]
# c2  [  0  0  0 ]
# c3  [  1  5  0 ]
COUNTS = np.array([[2, 1, 0], [0, 3, 0], [0, 0, 0], [1, 5, 0]], dtype=np.float32)


def _neighbours(counts):
    cells = {i: [j for j in range(counts.shape[1]) if counts[i, j] > 0] for i in range(counts.shape[0])}
    genes = {j: [i for i in range(counts.shape[0]) if counts[i, j] > 0] for j in range(counts.shape[1])}
    return cells, genes


def _loop_mean(rows, nbrs, n_out, width):
    out = np.zeros((n_out, width), dtype=np.float64)
    for t in range(n_out):
        if nbrs[t]:
            out[t] = np.mean([rows[u] for u in nbrs[t]], axis=0)
    return out


def _random_counts(n_cells=300, n_genes=60, density=0.15, seed=0):
    rng = np.random.default_rng(seed)
    m = sp.random(n_cells, n_genes, density=density, format="csr", random_state=rng, dtype=np.float32)
    m.data = np.ceil(m.data * 5)
    return m


GRAPH_COUNTS = _random_counts()
FULL = GRAPH_COUNTS.toarray() > 0
GRAPH = CellGeneGraph.from_scipy(GRAPH_COUNTS)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_mean_aggregation_matches_per_node_loop():
    adj = BipartiteAdjacency.from_scipy(sp.csr_matrix(COUNTS))
    assert (adj.n_cells, adj.n_genes) == (4, 3)
    rng = np.random.default_rng(0)
    x_gene = rng.normal(size=(3, 5)).astype(np.float32)
    x_cell = rng.normal(size=(4, 5)).astype(np.float32)
    cell_nbrs, gene_nbrs = _neighbours(COUNTS)
    g2c = adj.mean_genes_to_cells(torch.from_numpy(x_gene)).numpy()
    c2g = adj.mean_cells_to_genes(torch.from_numpy(x_cell)).numpy()
    np.testing.assert_allclose(g2c, _loop_mean(x_gene, cell_nbrs, 4, 5), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(c2g, _loop_mean(x_cell, gene_nbrs, 3, 5), rtol=1e-6, atol=1e-6)
    assert np.all(g2c[2] == 0.0) and np.all(c2g[2] == 0.0)  # degree-0 nodes get zeros, not NaN
    np.testing.assert_allclose(g2c[3], (x_gene[0] + x_gene[1]) / 2, rtol=1e-6)  # a mean, not a sum


def test_graph_edges_degrees_and_transposed_pattern():
    g = CellGeneGraph.from_scipy(sp.csr_matrix(COUNTS))
    assert (g.n_cells, g.n_genes, g.n_edges) == (4, 3, 5)
    np.testing.assert_array_equal(g.deg_cell.numpy(), [2, 1, 0, 2])
    np.testing.assert_array_equal(g.deg_gene.numpy(), [2, 3, 0])
    # the cells of each gene, ascending
    t = sp.csr_matrix((np.ones(5), g.t_col.numpy(), g.t_crow.numpy()), shape=(3, 4)).toarray()
    np.testing.assert_array_equal(t, (COUNTS > 0).T)
    assert g.col.dtype == torch.int32 and g.t_col.dtype == torch.int32  # 4 bytes per stored index
    np.testing.assert_array_equal(g.full().adjacency.a.to_dense().numpy(), (COUNTS > 0).astype(np.float32))


def test_stored_zeros_are_not_edges():
    m = sp.csr_matrix(COUNTS)
    m.data[0] = 0.0  # c0-g0 stored as an explicit zero
    g = CellGeneGraph.from_scipy(m)
    assert g.n_edges == 4
    adj = BipartiteAdjacency.from_scipy(m)
    assert adj.a.to_dense()[0, 0] == 0 and m.data[0] == 0.0 and m.nnz == 5  # input untouched


def test_gather_rows_matches_scipy_row_slicing():
    rows = torch.tensor([5, 0, 299, 5, 17])
    crow, pos = gather_rows(torch.from_numpy(GRAPH_COUNTS.indptr.astype(np.int64)), rows)
    sub = GRAPH_COUNTS[rows.numpy()]
    np.testing.assert_array_equal(crow.numpy(), sub.indptr)
    np.testing.assert_array_equal(GRAPH_COUNTS.indices[pos.numpy()], sub.indices)
    np.testing.assert_array_equal(GRAPH_COUNTS.data[pos.numpy()], sub.data)


@pytest.mark.parametrize("density", [0.05, 0.5])  # sparse and dense storage
def test_spmm_both_directions_and_gradients(density):
    m = sp.random(30, 20, density=density, format="csr", random_state=np.random.default_rng(1), dtype=np.float32)
    block = SparseBlock.from_scipy(m)
    dense = torch.from_numpy(m.toarray())
    x = torch.randn(20, 4, requires_grad=True)
    y = torch.randn(30, 4, requires_grad=True)
    out = spmm(block, x)
    np.testing.assert_allclose(out.detach().numpy(), (dense @ x).detach().numpy(), rtol=1e-5, atol=1e-5)
    out_t = spmm(block, y, transpose=True)
    np.testing.assert_allclose(out_t.detach().numpy(), (dense.T @ y).detach().numpy(), rtol=1e-5, atol=1e-5)
    g = torch.randn(30, 4)
    (out * g).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), (dense.T @ g).numpy(), rtol=1e-5, atol=1e-5)


def test_transpose_order_torch_sort_equals_counting_sort():
    """The device path (stable torch sort, as on a GPU) and the CPU path (scipy) order the transpose alike."""
    crow = torch.from_numpy(GRAPH_COUNTS.indptr.astype(np.int64))
    col = torch.from_numpy(GRAPH_COUNTS.indices.astype(np.int64))
    t_crow, order = _sparse.transpose_order(crow, col, GRAPH_COUNTS.shape[1], use_scipy=True)
    t_crow2, order2 = _sparse.transpose_order(crow, col, GRAPH_COUNTS.shape[1], use_scipy=False)
    np.testing.assert_array_equal(order.numpy(), order2.numpy())
    np.testing.assert_array_equal(t_crow.numpy(), t_crow2.numpy())
    t = GRAPH_COUNTS.T.tocsr()
    np.testing.assert_array_equal(t_crow.numpy(), t.indptr)
    np.testing.assert_array_equal(GRAPH_COUNTS.data[order.numpy()], t.data)


def test_dense_storage_only_for_dense_enough_and_small_enough_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    dense_ish = sp.random(60, 50, density=0.5, format="csr", random_state=rng, dtype=np.float32)
    sparse_ish = sp.random(60, 50, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    assert SparseBlock.from_scipy(dense_ish).m.layout == torch.strided
    assert SparseBlock.from_scipy(sparse_ish).m.layout == torch.sparse_csr
    monkeypatch.setattr(_sparse, "DENSE_MAX_ENTRIES", 60 * 50 - 1)  # one entry too many
    b = SparseBlock.from_scipy(dense_ish)
    assert b.m.layout == torch.sparse_csr
    np.testing.assert_array_equal(b.to_dense().numpy(), dense_ish.toarray())


# ----------------------------------------------------------------------------- the sampler
def _check_subgraph(sub, targets, budgets, graph_full=FULL):
    cells, genes = sub.cells.numpy(), sub.genes.numpy()
    n_t = len(targets)
    assert sub.n_target == n_t
    np.testing.assert_array_equal(cells[:n_t], targets)  # targets first, in the given order
    assert len(np.unique(cells)) == len(cells) and len(np.unique(genes)) == len(genes)
    assert len(genes) <= budgets[0] and len(cells) - n_t <= budgets[1]
    # induced: exactly the full graph's edges among the included nodes
    sub_dense = sub.adjacency.a.to_dense().numpy() > 0
    np.testing.assert_array_equal(sub_dense, graph_full[np.ix_(cells, genes)])
    # every gene touches a target, every hop-2 cell touches a sampled gene
    assert np.all(graph_full[np.ix_(targets, genes)].any(axis=0))
    assert np.all(graph_full[np.ix_(cells[n_t:], genes)].any(axis=1))
    return cells, genes


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exact_below", [0.0, 100.0])  # through genes / exact weights
def test_sampler_invariants(seed, exact_below):
    rng = np.random.default_rng(100 + seed)
    targets = rng.choice(GRAPH.n_cells, size=32, replace=False)  # unsorted
    budgets = (20, 40)
    sub = NeighborSampler(GRAPH, budgets, exact_below=exact_below).sample(torch.from_numpy(targets), _gen(seed))
    cells, genes = _check_subgraph(sub, targets, budgets)
    assert len(genes) == budgets[0] and len(cells) - len(targets) == budgets[1]  # both budgets bind
    # the subgraph's degrees are its own (mean over sampled neighbours)
    sub_dense = sub.adjacency.a.to_dense().numpy()
    np.testing.assert_allclose(sub.adjacency.inv_deg_cell.numpy().ravel(), 1 / np.maximum(sub_dense.sum(1), 1))
    np.testing.assert_allclose(sub.adjacency.inv_deg_gene.numpy().ravel(), 1 / np.maximum(sub_dense.sum(0), 1))


def test_sampler_same_seed_same_subgraph_different_seed_differs():
    targets = torch.arange(10, 42)
    sampler = NeighborSampler(GRAPH, (20, 40))
    a, b, c = (sampler.sample(targets, _gen(s)) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.cells, b.cells)
    np.testing.assert_array_equal(a.genes, b.genes)
    assert not (np.array_equal(a.cells, c.cells) and np.array_equal(a.genes, c.genes))


def test_sampler_large_budget_returns_all_reachable_nodes():
    targets = np.array([5, 3, 200])
    sub = NeighborSampler(GRAPH, (10**6, 10**6)).sample(torch.from_numpy(targets), _gen(0))
    _check_subgraph(sub, targets, (10**6, 10**6))
    hop1 = np.flatnonzero(FULL[targets].any(axis=0))
    hop2 = np.setdiff1d(np.flatnonzero(FULL[:, hop1].any(axis=1)), targets)
    np.testing.assert_array_equal(np.sort(sub.genes.numpy()), hop1)
    np.testing.assert_array_equal(np.sort(sub.cells[len(targets):].numpy()), hop2)


def test_sampler_three_hops_large_budget():
    sub = NeighborSampler(GRAPH, (10**6, 10**6, 10**6)).sample(torch.tensor([0]), _gen(0))
    hop1 = FULL[[0]].any(axis=0)
    cells2 = FULL[:, hop1].any(axis=1)
    genes3 = FULL[cells2].any(axis=0)
    np.testing.assert_array_equal(np.sort(sub.genes.numpy()), np.flatnonzero(hop1 | genes3))


def test_sampler_isolated_target_and_zero_budget():
    g = CellGeneGraph.from_scipy(sp.csr_matrix(COUNTS))
    sub = NeighborSampler(g, (5, 5)).sample(torch.tensor([2]), _gen(0))
    np.testing.assert_array_equal(sub.cells, [2])
    assert len(sub.genes) == 0 and tuple(sub.adjacency.a.shape) == (1, 0)
    sub = NeighborSampler(g, (0, 5)).sample(torch.tensor([0, 1]), _gen(0))
    np.testing.assert_array_equal(sub.cells, [0, 1])
    assert len(sub.genes) == 0
    with pytest.raises(ValueError):
        NeighborSampler(g, (-1, 5))


def test_sampler_probability_proportional_to_normalised_degree():
    # targets c0 (genes 0, 1; degree 2) and c1 (gene 1; degree 1):
    # weight(g0) = 1/2, weight(g1) = 1/2 + 1 = 3/2 -> P(g1 drawn) = 3/4.
    g = CellGeneGraph.from_scipy(sp.csr_matrix(COUNTS))
    sampler = NeighborSampler(g, (1,))
    gen = _gen(0)
    n = 1000  # binomial sd 0.014; a uniform draw (0.5) or degree-proportional one (2/3) fails
    hits = sum(int(sampler.sample(torch.tensor([0, 1]), gen).genes[0] == 1) for _ in range(n))
    assert abs(hits / n - 0.75) < 0.05


def _reference_hop2(counts: np.ndarray, genes: np.ndarray, taken: np.ndarray, k: int, rng) -> np.ndarray:
    """The earlier (numpy) sampler's gene -> cell hop: exact weights sum_{g in F, g ~ c} 1/deg(g) over the
    whole graph, then k draws without replacement by exponential keys among the cells not taken."""
    a = counts > 0
    deg_g = a.sum(0)
    w = (a[:, genes] / np.maximum(deg_g[genes], 1)).sum(1)
    w[taken] = 0
    cand = np.flatnonzero(w > 0)
    if len(cand) <= k:
        return cand
    keys = rng.exponential(size=len(cand)) / w[cand]
    return cand[np.argpartition(keys, k)[:k]]


def test_gene_to_cell_hop_draws_from_the_same_distribution_as_the_exact_one():
    """The O(budget) draw through the frontier's genes and the earlier O(all cells) exact draw give every
    cell the same inclusion probability (2000 draws each; 5 standard errors)."""
    counts = _random_counts(n_cells=120, n_genes=30, density=0.12, seed=4).toarray()
    # uneven gene degrees, so that normalised-degree weights differ from uniform
    counts[:60, :3] = np.maximum(counts[:60, :3], 1)
    g = CellGeneGraph.from_scipy(sp.csr_matrix(counts))
    frontier = torch.arange(0, 30, 2)
    taken = torch.zeros(120, dtype=torch.bool)
    taken[:10] = True
    k, n = 15, 2000
    sampler = NeighborSampler(g, (0,), exact_below=0.0)  # always through the genes
    gen, rng = _gen(1), np.random.default_rng(1)
    new, old = np.zeros(120), np.zeros(120)
    for _ in range(n):
        new[sampler._genes_to_cells(frontier, taken, k, gen).numpy()] += 1
        old[_reference_hop2(counts, frontier.numpy(), taken.numpy(), k, rng)] += 1
    p_new, p_old = new / n, old / n
    assert p_new[:10].sum() == 0 and np.all(new.sum() == k * n)  # never a taken cell, always k distinct
    se = np.sqrt((p_new * (1 - p_new) + p_old * (1 - p_old)) / n) + 1e-9
    assert np.all(np.abs(p_new - p_old) < 5 * se + 1e-3), np.max(np.abs(p_new - p_old) / se)
    assert np.ptp(p_old[10:]) > 0.2  # the weights are far from uniform: the check has power


# ----------------------------------------------------------------------------- neighbour cap
def _dense(block):
    return block.to_dense().numpy() > 0


def test_neighbour_cap_keeps_a_subset_of_the_induced_edges_per_direction():
    counts = _random_counts(n_cells=400, n_genes=120, density=0.5, seed=3)
    g = CellGeneGraph.from_scipy(counts)
    full = counts.toarray() > 0
    targets = torch.arange(0, 400, 3)
    sampler = NeighborSampler(g, (10**6, 10**6), max_neighbors=20)
    sub = sampler.sample(targets, _gen(0))
    cells, genes = sub.cells.numpy(), sub.genes.numpy()
    induced = full[np.ix_(cells, genes)]
    adj = sub.adjacency
    into_cells, into_genes = _dense(adj.a), _dense(adj.b)
    assert not np.any(into_cells & ~induced) and not np.any(into_genes.T & ~induced)  # only real edges
    assert not np.array_equal(into_cells, into_genes.T)  # the two directions are drawn separately
    kept_c, kept_g = into_cells.sum(1), into_genes.sum(1)
    expect_c = (induced * np.minimum(1, 20 / g.deg_cell.numpy()[cells])[:, None]).sum(1)
    expect_g = (induced * np.minimum(1, 20 / g.deg_gene.numpy()[genes])[None, :]).sum(0)
    assert abs(kept_c.mean() - expect_c.mean()) < 0.05 * expect_c.mean()
    assert abs(kept_g.mean() - expect_g.mean()) < 0.05 * expect_g.mean()
    # independently: an edge is kept both ways with probability p_cell * p_gene (one draw for both directions
    # would keep it both ways with min(p_cell, p_gene), here about three times as often, and passed the test)
    p_cell = np.minimum(1, 20 / g.deg_cell.numpy()[cells])[:, None]
    p_gene = np.minimum(1, 20 / g.deg_gene.numpy()[genes])[None, :]
    both = (into_cells & into_genes.T).sum()
    expect_both = (induced * p_cell * p_gene).sum()
    assert abs(both - expect_both) < 0.1 * expect_both, (both, expect_both)
    np.testing.assert_allclose(adj.inv_deg_cell.numpy().ravel(), 1 / np.maximum(kept_c, 1))
    np.testing.assert_allclose(adj.inv_deg_gene.numpy().ravel(), 1 / np.maximum(kept_g, 1))
    again = sampler.sample(targets, _gen(0)).adjacency  # same generator, same draw
    np.testing.assert_array_equal(_dense(again.a), into_cells)
    np.testing.assert_array_equal(_dense(again.b), into_genes)


def test_neighbour_cap_mean_aggregation_uses_each_direction_s_edges():
    rng = np.random.default_rng(1)
    into_cells = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=np.float32))
    into_genes = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 1], [0, 0, 1]], dtype=np.float32))  # genes x cells
    adj = BipartiteAdjacency.from_scipy(into_cells, to_genes=into_genes)
    x_gene = rng.normal(size=(3, 4)).astype(np.float32)
    x_cell = rng.normal(size=(3, 4)).astype(np.float32)
    cell_nbrs = {i: list(np.flatnonzero(into_cells.toarray()[i])) for i in range(3)}
    gene_nbrs = {j: list(np.flatnonzero(into_genes.toarray()[j])) for j in range(3)}
    np.testing.assert_allclose(adj.mean_genes_to_cells(torch.from_numpy(x_gene)).numpy(),
                               _loop_mean(x_gene, cell_nbrs, 3, 4), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(adj.mean_cells_to_genes(torch.from_numpy(x_cell)).numpy(),
                               _loop_mean(x_cell, gene_nbrs, 3, 4), rtol=1e-6, atol=1e-6)


def test_no_cap_keeps_the_induced_subgraph_and_draws_nothing_extra():
    targets = torch.arange(10, 42)
    gen_a, gen_b = _gen(5), _gen(5)
    a = NeighborSampler(GRAPH, (20, 40)).sample(targets, gen_a)
    b = NeighborSampler(GRAPH, (20, 40), max_neighbors=0).sample(targets, gen_b)
    assert a.adjacency.b is None and b.adjacency.b is None
    np.testing.assert_array_equal(_dense(a.adjacency.a), _dense(b.adjacency.a))
    assert torch.rand(1, generator=gen_a) == torch.rand(1, generator=gen_b)
    with pytest.raises(ValueError, match="max_neighbors"):
        NeighborSampler(GRAPH, (20, 40), max_neighbors=-1)


# ----------------------------------------------------------------------------- edge weights
def _loop_weighted_mean(rows, w, n_out, width, into_rows: bool):
    out = np.zeros((n_out, width), dtype=np.float64)
    for t in range(n_out):
        ws = w[t] if into_rows else w[:, t]
        nbrs = np.flatnonzero(ws)
        if len(nbrs):
            out[t] = sum(ws[u] * rows[u] for u in nbrs) / ws[nbrs].sum()
    return out


def test_weighted_mean_aggregation_matches_per_node_loop():
    w = COUNTS * np.array([0.5, 2.0, 1.0], dtype=np.float32)
    adj = BipartiteAdjacency.from_scipy(sp.csr_matrix(w), weighted=True)
    rng = np.random.default_rng(3)
    x_gene = rng.normal(size=(3, 5)).astype(np.float32)
    x_cell = rng.normal(size=(4, 5)).astype(np.float32)
    g2c = adj.mean_genes_to_cells(torch.from_numpy(x_gene)).numpy()
    c2g = adj.mean_cells_to_genes(torch.from_numpy(x_cell)).numpy()
    np.testing.assert_allclose(g2c, _loop_weighted_mean(x_gene, w, 4, 5, True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c2g, _loop_weighted_mean(x_cell, w, 3, 5, False), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g2c[3], (0.5 * x_gene[0] + 10 * x_gene[1]) / 10.5, rtol=1e-5)
    small = BipartiteAdjacency.from_scipy(sp.csr_matrix(np.array([[0.2, 0.0]], dtype=np.float32)), weighted=True)
    np.testing.assert_allclose(small.mean_genes_to_cells(torch.ones(2, 1)).numpy(), [[1.0]])


def test_weighted_graph_views_carry_the_weights_of_their_edges():
    weights = GRAPH_COUNTS.copy()
    weights.data = np.arange(1, weights.nnz + 1, dtype=np.float32)
    g = CellGeneGraph.from_scipy(GRAPH_COUNTS, weights)
    assert g.weighted and not GRAPH.weighted
    np.testing.assert_array_equal(g.full().adjacency.a.to_dense().numpy(), weights.toarray())
    targets = torch.arange(10)
    sub = NeighborSampler(g, (20, 40)).sample(targets, _gen(5))
    same = NeighborSampler(GRAPH, (20, 40)).sample(targets, _gen(5))
    np.testing.assert_array_equal(sub.cells, same.cells)  # the draw ignores the weights
    np.testing.assert_array_equal(sub.genes, same.genes)
    np.testing.assert_array_equal(sub.adjacency.a.to_dense().numpy(),
                                  weights.toarray()[np.ix_(sub.cells.numpy(), sub.genes.numpy())])
    capped = NeighborSampler(g, (20, 40), max_neighbors=3).sample(targets, _gen(6))
    a = capped.adjacency.a.to_dense().numpy()
    full_w = weights.toarray()[np.ix_(capped.cells.numpy(), capped.genes.numpy())]
    assert np.all((a == 0) | (a == full_w))  # kept edges keep their weight
    with pytest.raises(ValueError, match="exactly where the counts are"):
        CellGeneGraph.from_scipy(GRAPH_COUNTS, sp.eye(*GRAPH_COUNTS.shape, format="csr"))
    with pytest.raises(ValueError, match="finite and positive"):
        CellGeneGraph.from_scipy(GRAPH_COUNTS, -weights)


# ----------------------------------------------------------------------------- depth augmentation
def _scaled_graph(weighted=False):
    """GRAPH_COUNTS with known per-cell scalings: log-normalised values log1p(count * s_i)."""
    scale = np.linspace(0.5, 3.0, GRAPH_COUNTS.shape[0]).astype(np.float32)
    lognorm = GRAPH_COUNTS.multiply(scale[:, None]).tocsr()
    lognorm.data = np.log1p(lognorm.data)
    g = CellGeneGraph.from_scipy(GRAPH_COUNTS, lognorm)
    if not weighted:
        g.weighted = False
    return g, scale


def test_thinning_keeps_whole_counts_at_the_scaled_down_depth():
    g, scale = _scaled_graph()
    cells = torch.arange(0, 300, 3)
    rows, pos = g.rows(cells)
    keep = torch.linspace(0.2, 1.0, len(cells))
    t_rows, t_pos, values = g.thinned(rows, pos, keep, _gen(0))
    # each kept entry is one of the cell's own entries, in the same pattern order
    assert t_rows.nnz == len(t_pos) == len(values) < rows.nnz
    dense = GRAPH_COUNTS.toarray()
    r, c = t_rows.row.numpy(), t_rows.col.numpy()
    orig = dense[cells.numpy()[r], c]
    assert np.all(orig > 0)
    np.testing.assert_array_equal(g.counts[t_pos].numpy(), orig)
    # the value is log1p(kept * s_i / p_i) with a whole kept count between 1 and the original
    kept = np.expm1(values.numpy()) * keep.numpy()[r] / scale[cells.numpy()[r]]
    np.testing.assert_allclose(kept, np.round(kept), atol=1e-3)
    assert kept.min() >= 1 - 1e-3 and np.all(kept <= orig + 1e-3)
    # the cells keep about their share of counts: binomial, within 5 standard deviations
    c_all = g.counts[pos].numpy()
    p_all = keep.numpy()[rows.row.numpy()]
    mean, sd = np.sum(c_all * p_all), np.sqrt(np.sum(c_all * p_all * (1 - p_all)))
    assert abs(kept.sum() - mean) < 5 * sd
    # keeping everything gives the stored entries back
    same_rows, same_pos, same_values = g.thinned(rows, pos, torch.ones(len(cells)), _gen(1))
    np.testing.assert_array_equal(same_pos.numpy(), pos.numpy())
    np.testing.assert_array_equal(same_rows.crow.numpy(), rows.crow.numpy())
    np.testing.assert_allclose(same_values.numpy(), g.lognorm[pos].numpy(), rtol=1e-5)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("cap", [0, 3])
def test_a_thinned_view_has_the_edges_and_weights_of_its_thinned_counts(weighted, cap):
    g, _ = _scaled_graph(weighted)
    targets = torch.arange(12)

    def thin(n):
        return torch.full((n,), 0.3), _gen(7)

    plain = NeighborSampler(g, (30, 60), max_neighbors=cap).sample(targets, _gen(3))
    sub = NeighborSampler(g, (30, 60), max_neighbors=cap).sample(targets, _gen(3), thin=thin)
    np.testing.assert_array_equal(sub.cells, plain.cells)  # thinning comes after the draw of the nodes
    np.testing.assert_array_equal(sub.genes, plain.genes)
    assert plain.values is None and sub.values is not None and sub.rows.nnz < plain.rows.nnz
    # the view's edges are its thinned entries within its genes (a subset of them with a cap)
    dense = np.zeros(sub.rows.shape, dtype=np.float32)
    dense[sub.rows.row.numpy(), sub.rows.col.numpy()] = sub.values.numpy()
    expected = dense[:, sub.genes.numpy()]
    a = sub.adjacency.a.to_dense().numpy()
    if cap == 0:
        np.testing.assert_array_equal(a > 0, expected > 0)
    else:
        assert np.all((a == 0) | (expected > 0))
    if weighted:
        assert np.all((a == 0) | np.isclose(a, expected))


def _nnz(block):
    return int((block.to_dense() != 0).sum())


def test_loader_thins_only_the_masked_views_and_never_the_counts_it_reconstructs():
    from scgpcl.data import SubgraphLoader, prepare

    rng = np.random.default_rng(0)
    counts = sp.random(80, 40, density=0.4, format="csr", random_state=rng, dtype=np.float32)
    counts.data = np.ceil(counts.data * 20)
    data = prepare(counts, np.array([f"g{i}" for i in range(40)]))
    kw = dict(batch_size=20, num_samples=(30, 40), gene_dim=4, seed=3)
    off, on = SubgraphLoader(data, **kw), SubgraphLoader(data, thin_counts=0.2, **kw)
    with pytest.raises(ValueError, match=r"thin_counts must be in \[0, 1\)"):
        SubgraphLoader(data, thin_counts=1.0, **kw)
    before = off.random_state()["thin"]
    plan_off, plan_on = off.plan(3), on.plan(3)
    for b_off, b_on in zip(off.batches(plan_off), on.batches(plan_on), strict=True):
        np.testing.assert_array_equal(b_off.targets, b_on.targets)
        torch.testing.assert_close(b_off.counts.dense(), b_on.counts.dense())
        for v_off, v_on in zip(b_off.views, b_on.views, strict=True):
            np.testing.assert_array_equal(v_off.genes, v_on.genes)
            assert _nnz(v_on.features.s) < _nnz(v_off.features.s)
            assert _nnz(v_on.adjacency.a) < _nnz(v_off.adjacency.a)
    assert torch.equal(off.random_state()["thin"], before)  # off: the thinning stream is never drawn from
    # without masking (mask=False: inference-like views, or fine-tuning with finetune_masking off) the views
    # are the stored counts'
    for b_off, b_on in zip(off.batches(off.plan(2), mask=False), on.batches(on.plan(2), mask=False), strict=True):
        for v_off, v_on in zip(b_off.views, b_on.views, strict=True):
            torch.testing.assert_close(v_off.features.s.to_dense(), v_on.features.s.to_dense())
    # the MLP encoder's views (no graph) are thinned too
    mlp = SubgraphLoader(data, thin_counts=0.2, uses_graph=False, **kw)
    plain = SubgraphLoader(data, uses_graph=False, **kw)
    t = mlp.plan(1)[0]
    assert _nnz(mlp.view(t, 0).features.s) < _nnz(plain.view(t, 0).features.s)


def test_the_two_views_of_a_minibatch_sample_different_neighbourhoods():
    # built from one random stream, both views sampled the same genes and one augmentation was silently lost;
    # the toy data elsewhere is smaller than the sampling budget, so sampling was never random in the tests
    from scgpcl.data import SubgraphLoader, prepare

    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(1.0, size=(200, 60)).astype(np.float32))
    data = prepare(counts, np.array([f"g{i}" for i in range(60)]))
    loader = SubgraphLoader(data, batch_size=16, num_samples=(10, 10), gene_dim=4, seed=0)
    batch = next(loader.batches(loader.plan(1)))
    assert not np.array_equal(np.asarray(batch.views[0].genes), np.asarray(batch.views[1].genes))


def _dense_of(rows, values):
    out = np.zeros(rows.shape, dtype=np.float32)
    out[rows.row.numpy(), rows.col.numpy()] = values.numpy()
    return out


@pytest.mark.parametrize("uses_graph", [True, False])
def test_a_thinned_view_s_features_are_the_thinned_values(uses_graph):
    """The features of a view are the thinned entries' values, not the stored values at the kept entries."""
    from scgpcl.data import SubgraphLoader, prepare

    rng = np.random.default_rng(1)
    counts = sp.random(60, 30, density=0.5, format="csr", random_state=rng, dtype=np.float32)
    counts.data = np.ceil(counts.data * 30)
    data = prepare(counts, np.array([f"g{i}" for i in range(30)]))
    loader = SubgraphLoader(data, batch_size=20, num_samples=(30, 40), gene_dim=4, seed=5, thin_counts=0.2,
                            uses_graph=uses_graph)
    t = loader.plan(1)[0]
    state = loader.random_state()
    view = loader.view(t, 0)
    loader.set_random_state(state)  # the same draws again, step by step
    g = loader.graph
    if uses_graph:
        sub = loader.sampler.sample(t, loader._rs.views[0], thin=loader._keep_prob)
        rows, pos, values = sub.rows, sub.positions, sub.values
    else:
        rows, pos = g.rows(t)
        rows, pos, values = g.thinned(rows, pos, *loader._keep_prob(len(t)))
    np.testing.assert_allclose(view.features.s.to_dense().numpy(), _dense_of(rows, values), rtol=1e-6)
    assert not torch.allclose(values, g.lognorm[pos])  # so the check above tells the two apart


def test_thinning_counts_that_are_not_whole_numbers():
    """torch.binomial needs whole trials: near-whole counts are rounded, a fractional part kept with probability p."""
    n = 4000
    for count, mean_kept in ((2.9999998, 1.5), (2.5, 1.25)):
        c = sp.csr_matrix(np.full((n, 1), count, dtype=np.float32))
        w = c.copy()
        w.data = np.log1p(w.data)  # scale 1
        g = CellGeneGraph.from_scipy(c, w)
        rows, pos = g.rows(torch.arange(n))
        keep = torch.full((n,), 0.5)
        _, _, values = g.thinned(rows, pos, keep, _gen(2))
        kept = np.expm1(values.numpy()) * 0.5
        assert abs(kept.sum() / n - mean_kept) < 0.05
        whole, frac = np.floor(count + 1e-3), max(count - np.floor(count + 1e-3), 0)
        allowed = np.array([k + f for k in range(int(whole) + 1) for f in (0, frac)])
        assert np.all(np.min(np.abs(kept[:, None] - allowed[None, :]), axis=1) < 1e-3)
