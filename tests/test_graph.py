"""Cell-gene bipartite graph, mean aggregation and the subgraph sampler (SPEC 2-3)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scgpcl.data._graph import BipartiteAdjacency, BipartiteGraph, SubgraphSampler

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
    # degree-0 nodes get zeros, not NaN
    assert np.all(g2c[2] == 0.0)
    assert np.all(c2g[2] == 0.0)
    # a mean, not a sum: cell 3 (genes 0 and 1)
    np.testing.assert_allclose(g2c[3], (x_gene[0] + x_gene[1]) / 2, rtol=1e-6)


def test_graph_edges_are_positive_counts_and_degrees():
    g = BipartiteGraph(sp.csr_matrix(COUNTS))
    assert (g.n_cells, g.n_genes, g.n_edges) == (4, 3, 5)
    np.testing.assert_array_equal(g.a.toarray(), (COUNTS > 0).astype(np.float32))
    np.testing.assert_array_equal(g.deg_cell, [2, 1, 0, 2])
    np.testing.assert_array_equal(g.deg_gene, [2, 3, 0])
    full = g.full()
    assert full.n_target == 4
    np.testing.assert_array_equal(full.adjacency.a.to_dense().numpy(), (COUNTS > 0).astype(np.float32))
    np.testing.assert_array_equal(full.adjacency.a_t.to_dense().numpy(), (COUNTS > 0).T.astype(np.float32))


def test_graph_ignores_stored_zeros():
    # explicit zero stored at (0, 1): not an edge
    m = sp.csr_matrix((np.array([2.0, 0.0, 3.0]), np.array([0, 1, 1]), np.array([0, 2, 3])), shape=(2, 3))
    g = BipartiteGraph(m)
    np.testing.assert_array_equal(g.a.toarray(), [[1, 0, 0], [0, 1, 0]])
    assert g.n_edges == 2


def test_adjacency_from_scipy_ignores_stored_zeros():
    m = sp.csr_matrix((np.array([2.0, 0.0, 3.0]), np.array([0, 1, 1]), np.array([0, 2, 3])), shape=(2, 3))
    adj = BipartiteAdjacency.from_scipy(m)
    np.testing.assert_array_equal(adj.a.to_dense().numpy(), [[1, 0, 0], [0, 1, 0]])


def test_adjacency_from_scipy_does_not_modify_input():
    m = sp.csr_matrix(COUNTS)  # float32 CSR
    before = m.toarray().copy()
    BipartiteAdjacency.from_scipy(m)
    np.testing.assert_array_equal(m.toarray(), before)


def test_spmm_backward_matches_dense_autograd():
    adj = BipartiteAdjacency.from_scipy(sp.csr_matrix(COUNTS))
    a = torch.from_numpy((COUNTS > 0).astype(np.float32))
    d_cell = a.sum(1, keepdim=True).clamp(min=1)
    d_gene = a.sum(0).reshape(-1, 1).clamp(min=1)
    rng = np.random.default_rng(1)
    xg0 = torch.from_numpy(rng.normal(size=(3, 4)).astype(np.float32))
    xc0 = torch.from_numpy(rng.normal(size=(4, 4)).astype(np.float32))
    w_c = torch.from_numpy(rng.normal(size=(4, 4)).astype(np.float32))
    w_g = torch.from_numpy(rng.normal(size=(3, 4)).astype(np.float32))

    def run(mean_g2c, mean_c2g):
        xg = xg0.clone().requires_grad_()
        xc = xc0.clone().requires_grad_()
        # chain both directions and a non-contiguous use of the output
        h_c = mean_g2c(xg)
        h_g = mean_c2g(xc + h_c)
        loss = (h_c * w_c).sum() + (h_g.T.contiguous().T * w_g).sum() + (mean_g2c(h_g) ** 2).sum()
        loss.backward()
        return loss.detach(), xg.grad, xc.grad

    got = run(adj.mean_genes_to_cells, adj.mean_cells_to_genes)
    ref = run(lambda x: (a @ x) / d_cell, lambda x: (a.T @ x) / d_gene)
    for g_, r_ in zip(got, ref):
        torch.testing.assert_close(g_, r_, rtol=1e-5, atol=1e-5)
    assert got[1].abs().sum() > 0 and got[2].abs().sum() > 0


@pytest.mark.filterwarnings("ignore:Input #0 requires gradient and is not a double")
def test_spmm_gradcheck():
    # The adjacency is stored as float32 CSR, so float64 inputs are rejected;
    # gradcheck in float32 with a coarse step on a linear map is still exact enough.
    adj = BipartiteAdjacency.from_scipy(sp.csr_matrix(COUNTS))
    x = torch.randn(3, 2, requires_grad=True)
    assert torch.autograd.gradcheck(adj.mean_genes_to_cells, (x,), eps=1e-2, atol=1e-3, rtol=1e-3)
    y = torch.randn(4, 2, requires_grad=True)
    assert torch.autograd.gradcheck(adj.mean_cells_to_genes, (y,), eps=1e-2, atol=1e-3, rtol=1e-3)


# ----------------------------------------------------------------------------- sampler


def _random_graph(n_cells=300, n_genes=80, density=0.1, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.poisson(3.0, size=(n_cells, n_genes)) + 1
    dense = dense * (rng.random((n_cells, n_genes)) < density)
    return BipartiteGraph(sp.csr_matrix(dense.astype(np.float32)))


GRAPH = _random_graph()
FULL = GRAPH.a.toarray() > 0


def _check_subgraph(sub, targets, budgets):
    cells, genes = np.asarray(sub.cells), np.asarray(sub.genes)
    n_t = len(targets)
    assert sub.n_target == n_t
    np.testing.assert_array_equal(cells[:n_t], targets)  # targets first, in the given order
    assert len(np.unique(cells)) == len(cells)
    assert len(np.unique(genes)) == len(genes)
    assert len(genes) <= budgets[0]
    assert len(cells) - n_t <= budgets[1]
    # induced: exactly the full graph's edges among the included nodes
    sub_dense = sub.adjacency.a.to_dense().numpy() > 0
    assert sub_dense.shape == (len(cells), len(genes))
    np.testing.assert_array_equal(sub_dense, FULL[np.ix_(cells, genes)])
    np.testing.assert_array_equal(sub.adjacency.a_t.to_dense().numpy() > 0, sub_dense.T)
    # every gene touches a target, every hop-2 cell touches a sampled gene
    assert np.all(FULL[np.ix_(targets, genes)].any(axis=0))
    assert np.all(FULL[np.ix_(cells[n_t:], genes)].any(axis=1))
    return cells, genes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampler_invariants(seed):
    rng = np.random.default_rng(100 + seed)
    targets = rng.choice(GRAPH.n_cells, size=32, replace=False)  # unsorted
    budgets = (20, 40)
    sub = SubgraphSampler(GRAPH, budgets).sample(targets, np.random.default_rng(seed))
    cells, genes = _check_subgraph(sub, targets, budgets)
    # with these sizes both budgets bind
    assert len(genes) == budgets[0]
    assert len(cells) - len(targets) == budgets[1]
    # the subgraph's degrees are its own (mean over sampled neighbours)
    sub_dense = sub.adjacency.a.to_dense().numpy()
    np.testing.assert_allclose(sub.adjacency.inv_deg_cell.numpy().ravel(), 1 / np.maximum(sub_dense.sum(1), 1))
    np.testing.assert_allclose(sub.adjacency.inv_deg_gene.numpy().ravel(), 1 / np.maximum(sub_dense.sum(0), 1))


def test_sampler_same_seed_same_subgraph_different_seed_differs():
    targets = np.arange(10, 42)
    sampler = SubgraphSampler(GRAPH, (20, 40))
    a = sampler.sample(targets, np.random.default_rng(7))
    b = sampler.sample(targets, np.random.default_rng(7))
    c = sampler.sample(targets, np.random.default_rng(8))
    np.testing.assert_array_equal(a.cells, b.cells)
    np.testing.assert_array_equal(a.genes, b.genes)
    np.testing.assert_array_equal(a.adjacency.a.to_dense(), b.adjacency.a.to_dense())
    assert not (np.array_equal(a.cells, c.cells) and np.array_equal(a.genes, c.genes))


def test_sampler_large_budget_returns_all_reachable_nodes():
    targets = np.array([5, 3, 200])
    sub = SubgraphSampler(GRAPH, (10**6, 10**6)).sample(targets, np.random.default_rng(0))
    _check_subgraph(sub, targets, (10**6, 10**6))
    hop1 = np.flatnonzero(FULL[targets].any(axis=0))
    hop2 = np.setdiff1d(np.flatnonzero(FULL[:, hop1].any(axis=1)), targets)
    np.testing.assert_array_equal(np.sort(sub.genes), hop1)
    np.testing.assert_array_equal(np.sort(sub.cells[len(targets):]), hop2)


def test_sampler_three_hops_large_budget():
    targets = np.array([0])
    sub = SubgraphSampler(GRAPH, (10**6, 10**6, 10**6)).sample(targets, np.random.default_rng(0))
    hop1 = FULL[targets].any(axis=0)
    cells2 = FULL[:, hop1].any(axis=1)
    genes3 = FULL[cells2].any(axis=0)
    np.testing.assert_array_equal(np.sort(sub.genes), np.flatnonzero(hop1 | genes3))


def test_sampler_isolated_target_and_zero_budget():
    g = BipartiteGraph(sp.csr_matrix(COUNTS))
    sub = SubgraphSampler(g, (5, 5)).sample(np.array([2]), np.random.default_rng(0))
    np.testing.assert_array_equal(sub.cells, [2])
    assert len(sub.genes) == 0
    assert tuple(sub.adjacency.a.shape) == (1, 0)
    sub = SubgraphSampler(g, (0, 5)).sample(np.array([0, 1]), np.random.default_rng(0))
    np.testing.assert_array_equal(sub.cells, [0, 1])
    assert len(sub.genes) == 0
    with pytest.raises(ValueError):
        SubgraphSampler(g, (-1, 5))


def test_sampler_probability_proportional_to_normalised_degree():
    # targets c0 (genes 0, 1; degree 2) and c1 (gene 1; degree 1):
    # weight(g0) = 1/2, weight(g1) = 1/2 + 1 = 3/2 -> P(g1 drawn first) = 3/4.
    g = BipartiteGraph(sp.csr_matrix(COUNTS))
    sampler = SubgraphSampler(g, (1,))
    rng = np.random.default_rng(0)
    n = 1000  # binomial sd 0.014; a uniform draw (0.5) or degree-proportional one (2/3) fails
    hits = sum(int(sampler.sample(np.array([0, 1]), rng).genes[0] == 1) for _ in range(n))
    assert abs(hits / n - 0.75) < 0.05


def test_dense_storage_only_for_dense_enough_and_small_enough_matrices(monkeypatch):
    from scgpcl.data import _graph

    rng = np.random.default_rng(0)
    dense_ish = sp.random(60, 50, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    sparse_ish = sp.random(60, 50, density=0.05, format="csr", random_state=rng, dtype=np.float32)
    assert _graph._to_torch_csr(dense_ish, torch.device("cpu")).layout == torch.strided
    assert _graph._to_torch_csr(sparse_ish, torch.device("cpu")).layout == torch.sparse_csr
    monkeypatch.setattr(_graph, "DENSE_MAX_ENTRIES", 60 * 50 - 1)  # one entry too many
    t = _graph._to_torch_csr(dense_ish, torch.device("cpu"))
    assert t.layout == torch.sparse_csr
    np.testing.assert_array_equal(t.to_dense().numpy(), dense_ish.toarray())


# ----------------------------------------------------------------------------- neighbour cap


def _dense(t):
    return t.to_dense().numpy() > 0


def test_neighbour_cap_keeps_a_subset_of_the_induced_edges_per_direction():
    g = _random_graph(n_cells=400, n_genes=120, density=0.5, seed=3)  # cells ~60 genes, genes ~200 cells
    full = g.a.toarray() > 0
    targets = np.arange(0, 400, 3)
    sampler = SubgraphSampler(g, (10**6, 10**6), max_neighbors=20)
    sub = sampler.sample(targets, np.random.default_rng(0))
    induced = full[np.ix_(sub.cells, sub.genes)]
    adj = sub.adjacency
    into_cells, into_genes = _dense(adj.a), _dense(adj.b)
    assert not np.any(into_cells & ~induced) and not np.any(into_genes.T & ~induced)  # only real edges
    np.testing.assert_array_equal(_dense(adj.a_t), into_cells.T)  # each transpose matches its matrix
    np.testing.assert_array_equal(_dense(adj.b_t), into_genes.T)
    assert not np.array_equal(into_cells, into_genes.T)  # the two directions are drawn separately
    # each edge into a node of full degree d is kept with probability min(1, 20 / d): about 20 per node
    kept_c, kept_g = into_cells.sum(1), into_genes.sum(1)
    expect_c = (induced * np.minimum(1, 20 / g.deg_cell[sub.cells])[:, None]).sum(1)
    expect_g = (induced * np.minimum(1, 20 / g.deg_gene[sub.genes])[None, :]).sum(0)
    assert abs(kept_c.mean() - expect_c.mean()) < 0.05 * expect_c.mean()
    assert abs(kept_g.mean() - expect_g.mean()) < 0.05 * expect_g.mean()
    assert kept_c.max() < induced.sum(1).max() and kept_g.max() < induced.sum(0).max()
    # the degrees of the mean are the kept ones
    np.testing.assert_allclose(adj.inv_deg_cell.numpy().ravel(), 1 / np.maximum(kept_c, 1))
    np.testing.assert_allclose(adj.inv_deg_gene.numpy().ravel(), 1 / np.maximum(kept_g, 1))
    # same generator, same draw
    again = sampler.sample(targets, np.random.default_rng(0)).adjacency
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
    y = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    adj64 = BipartiteAdjacency(*(t.double() for t in (adj.a, adj.a_t, adj.inv_deg_cell, adj.inv_deg_gene,
                                                      adj.b, adj.b_t)))
    assert torch.autograd.gradcheck(adj64.mean_cells_to_genes, (y,))


def test_no_cap_keeps_the_induced_subgraph_and_draws_nothing():
    targets = np.arange(10, 42)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    a = SubgraphSampler(GRAPH, (20, 40)).sample(targets, rng_a)
    b = SubgraphSampler(GRAPH, (20, 40), max_neighbors=0).sample(targets, rng_b)
    assert a.adjacency.b is None and b.adjacency.b is None
    np.testing.assert_array_equal(_dense(a.adjacency.a), _dense(b.adjacency.a))
    assert rng_a.random() == rng_b.random()
    with pytest.raises(ValueError, match="max_neighbors"):
        SubgraphSampler(GRAPH, (20, 40), max_neighbors=-1)


def _loop_weighted_mean(rows, w, n_out, width, into_rows: bool):
    """Explicit per-node weighted mean: ``w`` is cells x genes; ``into_rows`` aggregates into cells."""
    out = np.zeros((n_out, width), dtype=np.float64)
    for t in range(n_out):
        ws = w[t] if into_rows else w[:, t]
        nbrs = np.flatnonzero(ws)
        if len(nbrs):
            out[t] = sum(ws[u] * rows[u] for u in nbrs) / ws[nbrs].sum()
    return out


def test_weighted_mean_aggregation_matches_per_node_loop():
    w = COUNTS * np.array([0.5, 2.0, 1.0], dtype=np.float32)  # distinct weights, same edges; cell 2, gene 2 isolated
    adj = BipartiteAdjacency.from_scipy(sp.csr_matrix(w), weighted=True)
    rng = np.random.default_rng(3)
    x_gene = rng.normal(size=(3, 5)).astype(np.float32)
    x_cell = rng.normal(size=(4, 5)).astype(np.float32)
    g2c = adj.mean_genes_to_cells(torch.from_numpy(x_gene)).numpy()
    c2g = adj.mean_cells_to_genes(torch.from_numpy(x_cell)).numpy()
    np.testing.assert_allclose(g2c, _loop_weighted_mean(x_gene, w, 4, 5, True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c2g, _loop_weighted_mean(x_cell, w, 3, 5, False), rtol=1e-5, atol=1e-6)
    assert np.all(g2c[2] == 0.0) and np.all(c2g[2] == 0.0)
    # cell 3: weights 1 * 0.5 and 5 * 2 -> (0.5 x_g0 + 10 x_g1) / 10.5, unlike the binary mean
    np.testing.assert_allclose(g2c[3], (0.5 * x_gene[0] + 10 * x_gene[1]) / 10.5, rtol=1e-5)
    binary = BipartiteAdjacency.from_scipy(sp.csr_matrix(w)).mean_genes_to_cells(torch.from_numpy(x_gene)).numpy()
    assert not np.allclose(binary[3], g2c[3])
    # weights below 1 on a node of degree 1 still give that neighbour's row (a mean, not a damped sum)
    small = BipartiteAdjacency.from_scipy(sp.csr_matrix(np.array([[0.2, 0.0]], dtype=np.float32)), weighted=True)
    np.testing.assert_allclose(small.mean_genes_to_cells(torch.ones(2, 1)).numpy(), [[1.0]])


def test_weighted_graph_views_carry_the_weights_of_their_edges():
    counts = GRAPH.a.multiply(sp.csr_matrix(np.arange(1, FULL.size + 1, dtype=np.float32).reshape(FULL.shape))).tocsr()
    g = BipartiteGraph(GRAPH.a, edge_weights=counts)
    assert g.weighted and not GRAPH.weighted
    np.testing.assert_array_equal(g.full().adjacency.a.to_dense().numpy(), counts.toarray())
    rng_w, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    targets = np.arange(10)
    sub = SubgraphSampler(g, (20, 40)).sample(targets, rng_w)
    same = SubgraphSampler(GRAPH, (20, 40)).sample(targets, rng_b)
    np.testing.assert_array_equal(sub.cells, same.cells)  # the draw ignores the weights
    np.testing.assert_array_equal(sub.genes, same.genes)
    np.testing.assert_array_equal(sub.adjacency.a.to_dense().numpy(), counts.toarray()[np.ix_(sub.cells, sub.genes)])
    capped = SubgraphSampler(g, (20, 40), max_neighbors=3).sample(targets, np.random.default_rng(6))
    a = capped.adjacency.a.to_dense().numpy()
    full_w = counts.toarray()[np.ix_(capped.cells, capped.genes)]
    assert np.all((a == 0) | (a == full_w))  # kept edges keep their weight
    with pytest.raises(ValueError, match="exactly where the counts are"):
        BipartiteGraph(GRAPH.a, edge_weights=sp.csr_matrix(FULL.shape, dtype=np.float32) + sp.eye(*FULL.shape))
    with pytest.raises(ValueError, match="finite and positive"):
        BipartiteGraph(GRAPH.a, edge_weights=-counts)
