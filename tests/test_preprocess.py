"""Preprocessing (docs/method.md section 1): gene selection, size factors, z-scored features."""

import itertools
import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from scgpcl._config import PreprocessConfig
from scgpcl._errors import InputError
from scgpcl.data._preprocess import _cells_detected, prepare, select_genes


@pytest.fixture
def counts():
    rng = np.random.default_rng(0)
    n, g = 120, 60
    mu = rng.gamma(0.6, 4.0, size=g) * rng.uniform(0.5, 2.0, size=(n, 1))
    x = rng.poisson(mu).astype(np.float32)
    x[:, 7] = 0  # an all-zero gene
    return x


def test_variance_selection_is_top_raw_variance(counts):
    x = sp.csr_matrix(counts)
    cfg = PreprocessConfig(gene_selection="variance", hvg_fraction=0.25, min_genes=5)
    keep = select_genes(x, cfg)
    expected = np.sort(np.argsort(-counts.var(axis=0, ddof=1), kind="stable")[:15])
    np.testing.assert_array_equal(keep, expected)


def test_variance_selection_keeps_at_least_min_genes(counts):
    x = sp.csr_matrix(counts)
    keep = select_genes(x, PreprocessConfig(gene_selection="variance", hvg_fraction=0.1, min_genes=40))
    assert len(keep) == 40
    keep = select_genes(x, PreprocessConfig(gene_selection="variance", hvg_fraction=0.1, min_genes=1000))
    np.testing.assert_array_equal(keep, np.arange(counts.shape[1]))


def test_seurat_selection_matches_scanpy_pipeline(counts):
    x = sp.csr_matrix(counts[:, counts.sum(0) > 0])
    keep = select_genes(x, PreprocessConfig(gene_selection="seurat", n_top_genes=20))
    ref = ad.AnnData(x.copy())
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, flavor="seurat", n_top_genes=20)
    np.testing.assert_array_equal(keep, np.flatnonzero(ref.var["highly_variable"].to_numpy()))
    assert 20 <= len(keep) <= 22  # scanpy keeps genes tied at the cut-off
    # the input matrix is not modified in place
    np.testing.assert_array_equal(x.toarray(), counts[:, counts.sum(0) > 0])


def test_seurat_selection_with_fewer_genes_than_requested_keeps_all(counts):
    keep = select_genes(sp.csr_matrix(counts), PreprocessConfig(gene_selection="seurat", n_top_genes=500))
    np.testing.assert_array_equal(keep, np.arange(counts.shape[1]))


def test_seurat_v3_without_scikit_misc_names_the_package(counts, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_skmisc(name, *args, **kwargs):
        if name.startswith("skmisc"):
            raise ImportError("No module named 'skmisc'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skmisc)
    with pytest.raises(InputError, match="scikit-misc"):
        select_genes(sp.csr_matrix(counts[:, counts.sum(0) > 0]), PreprocessConfig(gene_selection="seurat_v3", n_top_genes=20))


def test_unknown_selection_is_refused(counts):
    with pytest.raises(InputError, match="unknown gene_selection"):
        select_genes(sp.csr_matrix(counts), PreprocessConfig(gene_selection="magic"))


def test_prepare_features_and_size_factors_by_hand(counts, caplog):
    x = counts.copy()
    x[3] = 0  # an all-zero cell
    names = np.array([f"g{i}" for i in range(x.shape[1])])
    with caplog.at_level(logging.INFO, logger="scgpcl"):
        p = prepare(sp.csr_matrix(x), names, PreprocessConfig(gene_selection="none", target_sum=0))
    assert "dropped 1 genes" in caplog.text and "dropped 1 cells" in caplog.text
    assert p.n_cells == x.shape[0] - 1 and not p.cell_mask[3]
    assert 7 not in p.gene_index and "g7" not in set(p.gene_names)

    kept = x[p.cell_mask][:, p.gene_index].astype(np.float64)
    tot = kept.sum(1)
    np.testing.assert_allclose(p.size_factors, tot / np.median(tot), rtol=1e-5)
    ln = np.log1p(kept * (np.median(tot) / tot)[:, None])
    z = (ln - ln.mean(0)) / ln.std(0)
    np.testing.assert_allclose(p.dense_features(), z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(p.dense_features(np.array([0, 5])), z[[0, 5]], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(p.counts.toarray(), kept)


def test_target_sum_features_are_scanpys_normalize_total_and_log1p(counts):
    """target_sum scales each cell's total over all its genes (before selection), as scanpy's normalize_total."""
    x = counts.copy()
    x[5] = 0  # an all-zero cell is dropped, the others keep their rows
    names = np.array([f"g{i}" for i in range(x.shape[1])])
    cfg = PreprocessConfig(gene_selection="variance", hvg_fraction=0.3, min_genes=10, target_sum=1e4)
    p = prepare(sp.csr_matrix(x), names, cfg)
    assert p.n_genes < x.shape[1] - 1  # the totals below must not be those of the selected genes alone
    ref = ad.AnnData(x[p.cell_mask].copy())
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    np.testing.assert_allclose(p.lognorm.toarray(), ref.X[:, p.gene_index], rtol=1e-5, atol=1e-6)
    # the ZINB's size factors stay relative to the median total of the selected genes
    tot = x[p.cell_mask][:, p.gene_index].sum(1)
    np.testing.assert_allclose(p.size_factors, tot / np.median(tot), rtol=1e-5)
    # 0: the reference's scaling to the median total of the selected genes
    p0 = prepare(sp.csr_matrix(x), names, PreprocessConfig(gene_selection="variance", hvg_fraction=0.3,
                                                             min_genes=10, target_sum=0))
    kept = x[p0.cell_mask][:, p0.gene_index].astype(np.float64)
    np.testing.assert_allclose(p0.lognorm.toarray(), np.log1p(kept * (np.median(tot) / tot)[:, None]), rtol=1e-5)


def test_prepare_with_given_genes_skips_selection(counts):
    names = np.array([f"g{i}" for i in range(counts.shape[1])])
    p = prepare(sp.csr_matrix(counts), names, PreprocessConfig(gene_selection="seurat", n_top_genes=5),
                genes=np.array([1, 2, 3, 10]))
    np.testing.assert_array_equal(p.gene_index, [1, 2, 3, 10])
    np.testing.assert_array_equal(p.gene_names, names[[1, 2, 3, 10]])


def test_scanpy_gene_selection_keeps_torch_thread_count():
    """numba's OpenMP pool, started by scanpy's first parallel kernel, would set torch's
    thread count to NUMBA_NUM_THREADS (it shares torch's libgomp). Fresh process, so the
    pool really starts inside select_genes."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, scipy.sparse as sp, torch\n"
        "from scgpcl._config import PreprocessConfig\n"
        "from scgpcl.data._preprocess import select_genes\n"
        "rng = np.random.default_rng(0)\n"
        "x = sp.csr_matrix(rng.poisson(1.0, size=(300, 500)).astype(np.float32))\n"
        "assert torch.get_num_threads() == 1\n"
        "select_genes(x, PreprocessConfig(gene_selection='seurat', n_top_genes=100))\n"
        "print(torch.get_num_threads())\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "1"


def test_torch_threads_kept_restores_after_change():
    import torch

    from scgpcl._threads import torch_threads_kept

    n = torch.get_num_threads()
    with torch_threads_kept():
        torch.set_num_threads(n + 1)
    assert torch.get_num_threads() == n


def test_choose_target_sum_scores_the_features_prepare_makes(counts):
    """Each candidate's silhouette is that of k-means on the PCs of prepare's own features for that scaling."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    from scgpcl.data import choose_target_sum

    x = counts.copy()
    x[3] = 0  # a dropped cell: the sample's rows must map to the right input rows
    x[:60, :10] *= 4  # two groups
    names = np.array([f"g{i}" for i in range(x.shape[1])])
    cfg = PreprocessConfig(gene_selection="variance", hvg_fraction=0.3, min_genes=10)
    p = prepare(sp.csr_matrix(x), names, cfg)
    target, scores = choose_target_sum(p, 2, seed=3)  # the sample is every cell
    assert set(scores) == {0.0, 1e4} and target == max(scores, key=scores.get)
    for t, s in scores.items():
        f = prepare(sp.csr_matrix(x), names, PreprocessConfig(**{**cfg.__dict__, "target_sum": t})).dense_features()
        pcs = PCA(min(50, *f.shape), random_state=3).fit_transform(f)
        labels = KMeans(2, n_init=10, random_state=3).fit_predict(pcs)
        assert s == pytest.approx(silhouette_score(pcs, labels), abs=2e-3)
    # a sample: at most max_cells cells, the same answer for the same seed
    assert choose_target_sum(p, 2, seed=1, max_cells=50) == \
        choose_target_sum(p, 2, seed=1, max_cells=50)
    # more clusters than the sample: the sample grows to hold them; as many as the cells: a clear error
    assert set(choose_target_sum(p, 60, seed=1, max_cells=50)[1]) == {0.0, 1e4}
    with pytest.raises(InputError, match="n_clusters < the 119 kept cells"):
        choose_target_sum(p, 119, seed=1)


@pytest.mark.parametrize("target", [0.0, 1e4])
def test_sample_components_are_the_pcs_of_prepares_features(counts, target):
    """With every cell in the sample, the components are the PCA of prepare's features at that scaling; a
    smaller sample is the same for the same seed and holds max_cells cells."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    from scgpcl.data import choose_target_sum, sample_components

    x = counts.copy()
    x[3] = 0  # a dropped cell
    names = np.array([f"g{i}" for i in range(x.shape[1])])
    cfg = PreprocessConfig(gene_selection="variance", hvg_fraction=0.3, min_genes=10)
    p = prepare(sp.csr_matrix(x), names, cfg)
    f = prepare(sp.csr_matrix(x), names, PreprocessConfig(**{**cfg.__dict__, "target_sum": target})).dense_features()
    ref = PCA(min(50, *f.shape), random_state=2).fit_transform(f)
    got = sample_components(p, target_sum=target, seed=2)
    assert got.shape == ref.shape
    np.testing.assert_allclose(np.abs(got), np.abs(ref), atol=2e-3)  # a component's sign is arbitrary
    part = sample_components(p, target_sum=target, seed=5, max_cells=40)
    assert part.shape[0] == 40
    np.testing.assert_array_equal(part, sample_components(p, target_sum=target, seed=5, max_cells=40))
    # the sample is the one choose_target_sum scores (K below max_cells): the same silhouette
    labels = KMeans(2, n_init=10, random_state=5).fit_predict(part)
    assert choose_target_sum(p, 2, seed=5, max_cells=40)[1][target] == silhouette_score(part, labels)


@pytest.mark.parametrize("kind", ["float32 csr", "int64 csc, totals above 2**24", "float64 non-integer"])
@pytest.mark.parametrize("start, target", [(0.0, 1e4), (1e4, 0.0)])
def test_with_target_sum_makes_the_features_prepare_makes_at_that_scaling(counts, start, target, kind):
    """Changing the scaling after the fact (what choose_target_sum does) gives exactly prepare's features for
    it, whatever the input's format (prepare sums a float32 copy of it; the totals are kept from there)."""
    from scgpcl.data import with_target_sum

    x = counts.copy()
    x[5] = 0  # a dropped cell: the totals over all genes must follow the kept cells
    if kind.startswith("int64"):
        x = x.astype(np.int64)
        x[:, -1] += 2**24 + 1  # a huge total outside the selected genes, not exact in float32
        make = sp.csc_matrix
    elif kind.startswith("float64"):
        x = x.astype(np.float64) * 0.37  # values only reconstruction="mse" accepts
        make = sp.csr_matrix
    else:
        make = sp.csr_matrix
    names = np.array([f"g{i}" for i in range(x.shape[1])])
    cfg = PreprocessConfig(gene_selection="variance", hvg_fraction=0.3, min_genes=10, target_sum=start)
    first = prepare(make(x), names, cfg)
    got = with_target_sum(first, target)
    want = prepare(make(x), names, PreprocessConfig(**{**cfg.__dict__, "target_sum": target}),
                   genes=first.gene_index)
    np.testing.assert_array_equal(got.lognorm.toarray(), want.lognorm.toarray())
    np.testing.assert_array_equal(got.feature_mean, want.feature_mean)
    np.testing.assert_array_equal(got.feature_std, want.feature_std)
    assert not np.allclose(got.dense_features(), first.dense_features())  # the scaling did change
    assert got.counts is first.counts  # the counts are shared, not copied


def _rare_gene_counts():
    """60 cells x 40 common genes, plus gene 40 seen in 2 cells and gene 41 in 3."""
    rng = np.random.default_rng(3)
    x = rng.poisson(2.0, size=(60, 42)).astype(np.float32)
    x[:, 40:] = 0
    x[[0, 1], 40] = 50  # rare and highly dispersed: what fills a dispersion-based selection on few cells
    x[[2, 3, 4], 41] = 5
    return x, np.array([f"g{i}" for i in range(42)])


@pytest.mark.parametrize("selection", ["none", "variance", "seurat"])
def test_min_cells_drops_genes_detected_in_fewer_cells_before_selection(selection, caplog):
    x, names = _rare_gene_counts()
    cfg = dict(gene_selection=selection, hvg_fraction=1.0, min_genes=0, n_top_genes=41)
    with caplog.at_level(logging.INFO, logger="scgpcl"):
        p3 = prepare(sp.csr_matrix(x), names, PreprocessConfig(min_cells=3, **cfg))
    assert "g40" not in set(p3.gene_names) and "dropped 1 genes detected in fewer than 3 cells" in caplog.text
    assert "g41" in set(p3.gene_names) or selection == "seurat"  # 3 cells is enough to stay in the pool
    p1 = prepare(sp.csr_matrix(x), names, PreprocessConfig(min_cells=1, **cfg))
    assert "g40" in set(p1.gene_names)  # 1: every gene with a count is a candidate, as the reference


def test_min_cells_counts_cells_not_entries_and_is_capped_by_the_cells():
    x, names = _rare_gene_counts()
    # gene 40's entry in cells 0 and 1 stored twice each (a non-canonical CSR, which scipy sums): still 2 cells
    rows, cols = np.nonzero(x)
    rows, cols = np.r_[rows, [0, 1]], np.r_[cols, [40, 40]]
    vals = np.r_[x[np.nonzero(x)], [1.0, 1.0]].astype(np.float32)
    order = np.argsort(rows, kind="stable")
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=x.shape[0]))]
    dup = sp.csr_matrix((vals[order], cols[order], indptr), shape=x.shape)
    assert not dup.has_canonical_format
    # counted a chunk of rows at a time (memory bounded on atlas-sized input): the same at any chunk size
    for chunk in (1, 7, 1000):
        np.testing.assert_array_equal(_cells_detected(dup, chunk=chunk), (x > 0).sum(axis=0))
    p = prepare(dup, names, PreprocessConfig(gene_selection="none", min_cells=3))
    assert "g40" not in set(p.gene_names) and "g41" in set(p.gene_names)
    # more than there are cells: capped at the cells, so the genes seen in every cell remain
    q = prepare(sp.csr_matrix(x[:4]), names, PreprocessConfig(gene_selection="none", min_cells=1000))
    assert q.n_genes == int((x[:4] > 0).all(axis=0).sum()) > 2


def test_min_cells_that_leaves_too_few_genes_names_the_option():
    x, names = _rare_gene_counts()
    x[:, :40] = 0
    x[:, 0] = 1  # one common gene; g40 (2 cells) and g41 (3 cells) are rare
    with pytest.raises(InputError, match="min_cells"):
        prepare(sp.csr_matrix(x), names, PreprocessConfig(gene_selection="none", min_cells=4))


def test_cells_with_counts_only_outside_the_selected_genes_are_not_clustered():
    # the empty-cell tests zero a whole cell, which an earlier check removes; a cell whose counts all lie in
    # genes the selection dropped must be left out too (else its size factor is 0 and its ZINB mean log(0))
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, size=(20, 8)).astype(np.float32)
    x[4, :4] = 0
    x[4, 6] = 5
    p = prepare(sp.csr_matrix(x), np.array([f"g{i}" for i in range(8)]), PreprocessConfig(), genes=np.arange(4))
    assert p.n_cells == 19 and not p.cell_mask[4] and p.size_factors.min() > 0


def test_stored_zeros_are_neither_counts_nor_edges():
    # a CSR matrix may store explicit zeros (SCGPCL(adata) on a matrix built by hand, no file read): they must
    # not become cell-gene edges nor "non-zero" entries of the ZINB
    rng = np.random.default_rng(0)
    m = sp.csr_matrix(rng.poisson(1.0, size=(30, 12)).astype(np.float32))
    m.data[::5] = 0.0
    assert m.nnz > m.count_nonzero()
    p = prepare(m, np.array([f"g{i}" for i in range(12)]), PreprocessConfig(gene_selection="none", target_sum=0))
    assert p.counts.nnz == m.count_nonzero() and (p.counts.data > 0).all()
    assert p.graph().n_edges == m.count_nonzero()


def test_the_zinb_constant_is_each_cell_s_sum_of_lgamma_count_plus_one(monkeypatch):
    # the likelihood's constant; lgamma(x) for lgamma(x + 1) passed every test (the gradients do not see it,
    # the reported ZINB loss does). Over blocks of rows, with an empty cell among them.
    from scipy.special import gammaln

    from scgpcl.data import _preprocess

    rng = np.random.default_rng(1)
    x = rng.poisson(3.0, size=(7, 9)).astype(np.float32)
    x[2] = 0
    m = sp.csr_matrix(x)
    monkeypatch.setattr(_preprocess, "_BLOCK_ROWS", 3)  # three blocks, the empty cell in the first
    _, lgamma_cell = _preprocess._row_values(m, np.ones(7))
    np.testing.assert_allclose(lgamma_cell, gammaln(x.astype(np.float64) + 1).sum(axis=1))


def _counts_with_empty_cells_and_genes(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.negative_binomial(2, 0.3, size=(60, 40)).astype(np.float32) * (rng.random((60, 40)) < 0.4)
    x[[5, 17, 42]] = 0  # cells without counts
    x[:, [3, 30]] = 0  # genes without counts
    return x


def test_gene_variance_over_the_kept_cells_needs_no_copy_of_them(monkeypatch):
    # prepare ranks genes on the whole input, the empty cells included, with n_rows the cells kept: the same
    # numbers, to the bit, as on a copy of the kept rows (the records of every earlier run depend on it), in
    # blocks of any size
    from scgpcl.data import _preprocess

    x = _counts_with_empty_cells_and_genes()
    kept = x.sum(axis=1) > 0
    whole = _preprocess._gene_variance(sp.csr_matrix(x), n_rows=int(kept.sum()))
    on_copy = _preprocess._gene_variance(sp.csr_matrix(x[kept]))
    np.testing.assert_array_equal(whole, on_copy)
    np.testing.assert_allclose(whole, x[kept].var(axis=0, ddof=1), rtol=1e-5, atol=1e-6)
    # scipy's own arithmetic, which the earlier code used
    m = sp.csr_matrix(x[kept])
    n = m.shape[0]
    scipy_var = (np.asarray(m.multiply(m).mean(axis=0)).ravel() - np.asarray(m.mean(axis=0)).ravel() ** 2) * n / (n - 1)
    np.testing.assert_array_equal(whole, scipy_var)
    monkeypatch.setattr(_preprocess, "_BLOCK_ENTRIES", 7)
    np.testing.assert_array_equal(_preprocess._gene_variance(sp.csr_matrix(x), n_rows=int(kept.sum())), whole)


def test_prepare_selects_the_genes_select_genes_selects_on_the_cells_and_genes_with_counts():
    x = _counts_with_empty_cells_and_genes()
    names = np.array([f"g{i}" for i in range(x.shape[1])])
    cfg = PreprocessConfig(gene_selection="variance", hvg_fraction=0.25, min_genes=10)
    kept, detected = x.sum(axis=1) > 0, np.flatnonzero(x.sum(axis=0) > 0)
    expected = detected[select_genes(sp.csr_matrix(x[kept][:, detected]), cfg)]
    assert len(expected) == 10
    np.testing.assert_array_equal(prepare(sp.csr_matrix(x), names, cfg).gene_index, expected)


def test_passes_over_the_matrix_are_bounded_in_entries_and_never_split_a_cell(monkeypatch):
    from scgpcl.data import _preprocess

    monkeypatch.setattr(_preprocess, "_BLOCK_ENTRIES", 10)
    indptr = np.cumsum([0, 4, 4, 0, 25, 3, 3, 3, 0])  # a cell of 25 entries, more than a block holds
    blocks = _preprocess._row_blocks(indptr, max_rows=2)
    assert blocks[0][0] == 0 and blocks[-1][1] == len(indptr) - 1
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))
    for r0, r1 in blocks:
        assert r1 - r0 <= 2
        assert indptr[r1] - indptr[r0] <= 10 or r1 - r0 == 1
    assert (3, 4) in blocks  # the large cell alone


def test_feature_moments_do_not_depend_on_the_block_size(monkeypatch):
    from scgpcl.data import _preprocess

    x = _counts_with_empty_cells_and_genes(seed=4)
    cfg = PreprocessConfig(gene_selection="none")
    names = np.array([f"g{i}" for i in range(x.shape[1])])
    ref = prepare(sp.csr_matrix(x), names, cfg)
    monkeypatch.setattr(_preprocess, "_BLOCK_ENTRIES", 13)
    small = prepare(sp.csr_matrix(x), names, cfg)
    for key in ("feature_mean", "feature_std", "lgamma_cell"):
        np.testing.assert_array_equal(getattr(small, key), getattr(ref, key))
    np.testing.assert_array_equal(small.lognorm.data, ref.lognorm.data)


@pytest.mark.parametrize("empty", [True, False])
def test_seurat_selection_in_prepare_leaves_the_input_as_it_was_and_is_scanpys(empty):
    # the selection normalises blocks of cells (copies); the caller's matrix must stay as it was, with or
    # without cells and genes to drop, as must the counts prepare keeps
    x = _counts_with_empty_cells_and_genes(seed=5)
    if not empty:
        x = x[x.sum(axis=1) > 0][:, x.sum(axis=0) > 0]
    m = sp.csr_matrix(x)
    names = np.array([f"g{i}" for i in range(x.shape[1])])
    p = prepare(m, names, PreprocessConfig(gene_selection="seurat", n_top_genes=12))
    np.testing.assert_array_equal(m.toarray(), x)
    np.testing.assert_array_equal(p.counts.toarray(), x[p.cell_mask][:, p.gene_index])
    kept, detected = x.sum(axis=1) > 0, np.flatnonzero(x.sum(axis=0) > 0)
    ref = _scanpy_seurat(x[kept][:, detected], 12)
    np.testing.assert_array_equal(p.gene_index, detected[ref["highly_variable"].to_numpy()])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("block", [7, 2**22])
def test_seurat_selection_in_blocks_is_scanpys_to_the_bit(monkeypatch, threads, block):
    # the default selection streams over blocks of cells instead of letting scanpy copy the matrix three or
    # four times; its means and dispersions must be scanpy's own, bit for bit, whatever the block size and
    # the thread count that splits scanpy's numba kernel, on the cells and genes prepare keeps (empty cells,
    # genes without counts, and a gene subset as min_cells makes one, whose totals leave out the others).
    # At this size float32 values sum exactly in float64, so the thread split seldom shows; the arithmetic
    # does (squaring in float64 instead of float32 fails this test)
    import numba

    from scgpcl.data import _preprocess

    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"numba has {numba.config.NUMBA_NUM_THREADS} thread(s) here")
    monkeypatch.setattr(_preprocess, "_BLOCK_ENTRIES", block)
    rng = np.random.default_rng(threads)
    x = (rng.negative_binomial(1, 0.2, size=(90, 70)) * (rng.random((90, 70)) < 0.3)).astype(np.float32)
    x[[3, 50]] = 0
    x[:, [5, 60]] = 0
    m = sp.csr_matrix(x)
    rows = x.sum(axis=1) > 0
    for cols in (np.flatnonzero(x.sum(axis=0) > 0), np.flatnonzero((x > 0).sum(axis=0) >= 8)):
        old = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            ref = _scanpy_seurat(x[rows][:, cols], 20)
            means, dispersions = _preprocess._seurat_dispersions(m, rows, cols)
            genes = _preprocess._seurat_genes(m, rows, cols, 20)
        finally:
            numba.set_num_threads(old)
        np.testing.assert_array_equal(means, ref["means"].to_numpy())
        np.testing.assert_array_equal(dispersions, ref["dispersions"].to_numpy())
        np.testing.assert_array_equal(genes, np.flatnonzero(ref["highly_variable"].to_numpy()))


def test_gene_variance_allocates_blocks_not_copies_of_the_matrix(monkeypatch):
    # scipy's mean and multiply copied every stored value two or three times; the pass holds a block at a time
    import tracemalloc

    from scgpcl.data import _preprocess

    monkeypatch.setattr(_preprocess, "_BLOCK_ENTRIES", 4096)
    m = sp.random(3000, 400, density=0.3, format="csr", dtype=np.float32, random_state=0)
    m.data = np.ceil(m.data * 20)
    tracemalloc.start()
    try:
        _preprocess._gene_variance(m)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.2 * m.data.nbytes, (peak, m.data.nbytes)


def test_gene_variance_of_large_integer_counts_and_duplicate_entries():
    # int32 counts above 46,340 overflowed when scipy squared them in their own type; duplicate entries of a
    # non-canonical matrix are one count, summed before squaring
    from scgpcl.data import _preprocess

    x = np.array([[50_000, 1, 0], [0, 3, 2], [70_000, 0, 5], [10, 2, 1]], dtype=np.int32)
    np.testing.assert_allclose(_preprocess._gene_variance(sp.csr_matrix(x)), x.astype(np.float64).var(axis=0, ddof=1),
                               rtol=1e-12)
    dup = sp.csr_matrix((np.array([1.0, 2.0, 4.0], np.float32), np.array([0, 0, 1]), np.array([0, 2, 3, 3])),
                        shape=(3, 2))
    assert not dup.has_canonical_format
    dense = np.array([[3.0, 0.0], [0.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(_preprocess._gene_variance(dup), dense.var(axis=0, ddof=1), rtol=1e-6)


def _scanpy_seurat(x: np.ndarray | sp.csr_matrix, n_top: int) -> pd.DataFrame:
    ref = ad.AnnData(sp.csr_matrix(x, dtype=np.float32, copy=True))
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, flavor="seurat", n_top_genes=n_top)
    return ref.var


def test_seurat_selection_splits_the_cells_among_threads_as_scanpy():
    # scanpy's kernel sums every n-th cell per numba thread, and on enough cells its dispersions change with
    # the thread count; the streamed selection must follow it at each count
    import numba

    from scgpcl.data import _preprocess

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread here")
    x = sp.random(20000, 60, density=0.3, format="csr", dtype=np.float32, random_state=7)
    x.data = np.ceil(x.data * 1000)  # counts up to 1,000: sums in float64 that round differently by thread
    rows, cols = np.ones(20000, bool), np.arange(60)
    old = numba.get_num_threads()
    found = {}
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            ref = _scanpy_seurat(x, 20)
            means, dispersions = _preprocess._seurat_dispersions(x, rows, cols)
            np.testing.assert_array_equal(means, ref["means"].to_numpy())
            np.testing.assert_array_equal(dispersions, ref["dispersions"].to_numpy())
            found[threads] = dispersions
    finally:
        numba.set_num_threads(old)
    assert not np.array_equal(found[1], found[2])  # else this data would not tell the split apart


def test_seurat_selection_of_duplicate_entries_and_of_genes_that_do_not_vary():
    # a non-canonical matrix (an AnnData built in memory): scanpy normalises duplicate entries one by one and
    # sums them in expm1's deduplication; the streamed selection does the same
    from scgpcl.data import _preprocess

    rng = np.random.default_rng(12)
    x = (rng.negative_binomial(1, 0.2, size=(40, 30)) * (rng.random((40, 30)) < 0.4)).astype(np.float32)
    rows_, cols_ = np.nonzero(x)
    split = rng.random(rows_.size) < 0.3  # some counts stored as two entries
    r = np.r_[rows_, rows_[split]]
    c = np.r_[cols_, cols_[split]]
    v = np.r_[np.where(split, np.floor(x[rows_, cols_] / 2), x[rows_, cols_]), np.ceil(x[rows_, cols_][split] / 2)]
    order = np.argsort(r, kind="stable")
    dup = sp.csr_matrix((v[order].astype(np.float32), c[order], np.r_[0, np.cumsum(np.bincount(r, minlength=40))]),
                        shape=x.shape)
    assert not dup.has_canonical_format and np.array_equal(dup.toarray(), x)
    ref = _scanpy_seurat(dup, 10)
    means, dispersions = _preprocess._seurat_dispersions(dup, None, np.arange(30))
    np.testing.assert_array_equal(means, ref["means"].to_numpy())
    np.testing.assert_array_equal(dispersions, ref["dispersions"].to_numpy())
    # no gene varies (each cell holds one count of its own gene): scanpy failed with an IndexError; every gene
    # is kept
    same = sp.csr_matrix(np.eye(30, dtype=np.float32))
    np.testing.assert_array_equal(_preprocess._seurat_genes(same, None, np.arange(30), 10), np.arange(30))
