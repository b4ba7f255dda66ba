"""Tests of scgpcl.simulate (NumPy port of Splatter's Splat 'groups' model).

Comparisons with real Splatter use the reference files in
``<shared>/data/sim`` (``<shared>`` = ``$SCGPCL_SHARED`` or ``../shared`` beside
the repository) and the statistics of ``SPLATTER_MODEL.md``; those tests skip
when the folder is absent.

Two kinds of comparison:

* Conditional (tight): our count model (steps 5-8: compositional means, BCV,
  Poisson, dropout) run on *Splatter's own* gene means, DE factors, group
  labels and library sizes from a reference file. This removes the noise of
  the 5000 gene-mean draws, so dropout rate and zero fraction must agree
  within 0.15 percentage points (measured: <= 0.06).
* Unconditional (whole model, another seed): SPLATTER_MODEL.md quotes the
  spread of 6 seeds as about +-0.3 pp (dropout rate) / +-0.8 pp (zero
  fractions) around the centre at dropout.mid 0. Our 10-seed standard
  deviations are 0.33 (mid 0) to 0.47 (mid 2) pp for the dropout rate and
  0.6-0.7 pp for zero fractions, so one run of ours and the one reference run
  differ with sd up to sqrt(2) * 0.5 = 0.7 pp / sqrt(2) * 0.7 = 1.0 pp; the
  tolerances below are 3 of those. Library sizes and group sizes use 4
  standard deviations of their exact sampling distributions.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import time
from functools import cache
from pathlib import Path

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from scgpcl._errors import InputError, OutputFailed
from scgpcl.cli import main
from scgpcl.simulate import (
    PRESETS,
    RNG_BLOCK,
    SplatParams,
    _cli,
    imbalance_group_prob,
    simulate,
    simulate_splat,
)
from scgpcl.simulate._splat import _sample_counts

from helpers import _one_line_error

DROPOUT_TOL = 2.1  # percentage points: 3 sd of (ours - Splatter), one run each
ZEROS_TOL = 3.0  # percentage points: 3 sd of (ours - Splatter), one run each
COND_TOL = 0.15  # percentage points, given Splatter's own gene/cell parameters

# SPLATTER_MODEL.md section 6 (unfiltered 5000-gene matrices): statistics the
# reference files cannot give because they hold no true counts.
SPLATTER_TABLE = {
    "SimT3_3": {"zeros_true": 32.40, "lib_true": 61311},
    "SimT6_5": {"zeros_true": 32.43, "lib_true": 61335},
    "Sig1": {"zeros_true": 32.37, "lib_true": 61338},
    "Imb1": {"zeros_true": 32.37, "lib_true": 60986},
}

# SPLATTER_MODEL.md section 8: SimT3_1, Group1, true counts, per gene-mean bin:
# (lower edge, upper edge, median var/mean, median phi, median zero fraction)
SPLATTER_TRUE_MEANVAR = [
    (0.1, 0.3, 2.06, 5.51, 0.879),
    (0.3, 1.0, 2.17, 1.99, 0.673),
    (1.0, 3.0, 2.38, 0.753, 0.321),
    (3.0, 10.0, 2.78, 0.328, 0.046),
    (10.0, 30.0, 3.59, 0.172, 0.001),
    (100.0, 300.0, 12.5, 0.073, 0.0),
]


def _shared_dir() -> Path | None:
    env = os.environ.get("SCGPCL_SHARED")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    sim = root / "data" / "sim"
    return sim if sim.is_dir() else None


@cache
def _reference(name: str) -> anndata.AnnData:
    sim = _shared_dir()
    if sim is None or not (sim / f"{name}.h5ad").is_file():
        pytest.skip(f"reference dataset {name}.h5ad not found: set SCGPCL_SHARED to the "
                    "shared folder (expected <shared>/data/sim) to run Splatter comparisons")
    return anndata.read_h5ad(sim / f"{name}.h5ad")


@cache
def _ours(params: SplatParams, seed: int) -> anndata.AnnData:
    """Cached unfiltered simulation (several tests share the 3000-cell runs)."""
    return simulate_splat(params, seed=seed, drop_zeros=False)


def _small(**kw) -> SplatParams:
    base = dict(n_genes=1000, n_cells=400, group_prob=(0.5, 0.3, 0.2), de_fac_scale=0.5)
    base.update(kw)
    return SplatParams(**base)


def _binned_meanvar(mat: sp.csr_matrix, rows: np.ndarray, edges):
    """Per-gene mean, var/mean, phi = (var - mean) / mean^2, zero fraction; medians per bin."""
    m = mat[rows].astype(np.float64)
    n = m.shape[0]
    mean = np.asarray(m.mean(axis=0)).ravel()
    sq = np.asarray(m.multiply(m).mean(axis=0)).ravel()
    var = (sq - mean**2) * n / (n - 1)
    zero = 1.0 - np.diff(m.tocsc().indptr) / n
    out = []
    for lo, hi in edges:
        sel = (mean >= lo) & (mean < hi) & (mean > 0)
        mu = mean[sel]
        out.append((int(sel.sum()), float(np.median(mu)), float(np.median(var[sel] / mu)),
                    float(np.median((var[sel] - mu) / mu**2)), float(np.median(zero[sel]))))
    return out


# ---------------------------------------------------------------- vs Splatter
@pytest.mark.parametrize("name", ["SimT3_3", "SimT6_5", "Sig1", "Imb1"])
def test_summary_statistics_match_splatter(name):
    ref = _reference(name)
    params = SplatParams.from_splatter(ref.uns["splatter"])
    assert params == PRESETS[name]  # the presets are exactly the reference settings
    ours = _ours(params, seed=0)
    n, g = params.n_cells, params.n_genes
    assert ours.shape == (n, g)

    # dropout rate (both computed on the unfiltered matrices)
    assert abs(ours.uns["dropout_rate"] - ref.uns["dropout_rate"]) <= DROPOUT_TOL

    # zero fractions on the unfiltered matrix: the reference only lost all-zero
    # genes, so its non-zeros are all still there
    zeros_ref = 100 * (1 - ref.X.nnz / (n * g))
    zeros_ours = 100 * (1 - ours.X.nnz / (n * g))
    assert abs(zeros_ours - zeros_ref) <= ZEROS_TOL
    zeros_true = 100 * (1 - ours.layers["true_counts"].nnz / (n * g))
    assert abs(zeros_true - SPLATTER_TABLE[name]["zeros_true"]) <= ZEROS_TOL

    # mean library sizes: E[L] = exp(loc + scale^2 / 2); sd of a mean of n cells
    e_lib = math.exp(params.lib_loc + params.lib_scale**2 / 2)
    sd_mean = e_lib * math.sqrt(math.expm1(params.lib_scale**2)) / math.sqrt(n)
    lib_true = ours.layers["true_counts"].sum() / n
    assert abs(lib_true - e_lib) <= 4 * sd_mean
    assert abs(lib_true - SPLATTER_TABLE[name]["lib_true"]) <= 4 * math.sqrt(2) * sd_mean
    assert abs(ours.X.sum() / n - ref.X.sum() / n) <= 4 * math.sqrt(2) * sd_mean

    # group sizes: multinomial(n, group_prob)
    p = np.asarray(params.group_prob)
    sd = np.sqrt(n * p * (1 - p))
    ours_sizes = ours.obs["cell_type"].value_counts(sort=False).to_numpy()
    ref_sizes = ref.obs["cell_type"].value_counts(sort=False).to_numpy()
    assert list(ours.obs["cell_type"].cat.categories) == list(ref.obs["cell_type"].cat.categories)
    assert np.all(np.abs(ours_sizes - n * p) <= 4 * sd)
    assert np.all(np.abs(ours_sizes - ref_sizes) <= 4 * math.sqrt(2) * sd)


@pytest.mark.parametrize("name", ["SimT3_3", "SimT6_5", "Sig1", "Imb1"])
def test_count_model_given_splatter_parameters(name):
    """Steps 5-8 on the reference's own gene means, DE factors, labels and libraries."""
    ref = _reference(name)
    params = SplatParams.from_splatter(ref.uns["splatter"])
    k = params.n_groups
    groups = ref.obs["cell_type"].cat.codes.to_numpy()
    lib = ref.obs["ExpLibSize"].to_numpy()
    gene_mean = ref.var["GeneMean"].to_numpy()
    de_fac = np.stack([ref.var[f"DEFacGroup{j + 1}"].to_numpy() for j in range(k)])
    # the reference lacks its ~20-60 all-zero genes; their share of the
    # expression is < 1e-6, so running on the kept genes changes nothing visible
    got = _sample_counts(params, 0, groups, lib, gene_mean, de_fac, drop_zeros=False)
    n_entries = params.n_cells * params.n_genes  # zeros over the full 5000 genes
    assert abs(got.rate - ref.uns["dropout_rate_unrounded"]) <= COND_TOL
    assert abs(100 * (got.X.nnz - ref.X.nnz) / n_entries) <= COND_TOL
    lib_ours = np.asarray(got.X.sum(axis=1)).ravel()
    lib_ref = np.asarray(ref.X.sum(axis=1)).ravel()
    assert abs(lib_ours.mean() / lib_ref.mean() - 1) < 0.005
    assert np.corrcoef(lib_ours, lib_ref)[0, 1] > 0.99
    # per group and gene: same means (DE, compositional normalisation) and zeros
    for j in range(k):
        sel = groups == j
        if sel.sum() < 300:
            continue
        m_ours = np.asarray(got.X[sel].mean(axis=0)).ravel()
        m_ref = np.asarray(ref.X[sel].mean(axis=0)).ravel()
        assert np.corrcoef(np.log1p(m_ours), np.log1p(m_ref))[0, 1] > 0.998
        # sampling noise of both runs shrinks as 1 / sqrt(cells); measured at
        # ~1000 cells: 0.028 and 0.014, at ~450 cells: 0.034 and 0.021
        n = sel.sum()
        high = m_ref > 1
        assert np.median(np.abs(np.log(m_ours[high] / m_ref[high]))) < 1.6 / np.sqrt(n)
        z_ours = 1 - np.diff(got.X[sel].tocsc().indptr) / n
        z_ref = 1 - np.diff(ref.X[sel].tocsc().indptr) / n
        assert np.abs(z_ours - z_ref).mean() < 0.65 / np.sqrt(n)


def test_gene_parameters_match_splatter_distribution():
    from scipy.stats import ks_2samp

    ref = _reference("Sig1")
    params = PRESETS["SimT3_3"]  # same gene parameters as SimT3_1 (differs in dropout only)
    ours = _ours(params, seed=0)
    var = ours.var
    # base means Gamma(0.6, rate 0.3); the reference lost only ~20 low genes
    assert ks_2samp(var["BaseGeneMean"], ref.var["BaseGeneMean"]).pvalue > 1e-3
    assert abs(var["BaseGeneMean"].mean() - 2.0) < 0.15
    # outliers: ~5 %, factor exp(N(4, 0.5)), mean replaced by median(base) * factor
    out = var["OutlierFactor"].to_numpy() != 1
    assert abs(out.mean() - 0.05) <= 4 * math.sqrt(0.05 * 0.95 / params.n_genes)
    assert abs(np.log(var["OutlierFactor"][out]).mean() - 4.0) < 4 * 0.5 / math.sqrt(out.sum())
    np.testing.assert_allclose(var["GeneMean"][out],
                               np.median(var["BaseGeneMean"]) * var["OutlierFactor"][out])
    np.testing.assert_array_equal(var["GeneMean"][~out], var["BaseGeneMean"][~out])
    ref_out = ref.var["OutlierFactor"].to_numpy() != 1
    assert ks_2samp(np.log(var["OutlierFactor"][out]),
                    np.log(ref.var["OutlierFactor"][ref_out])).pvalue > 1e-3
    # DE: ~10 % of genes per group, half up, |log factor| ~ |N(0.1, sigma)|
    s = params.de_fac_scale
    folded_mean = s * math.sqrt(2 / math.pi) * math.exp(-0.1**2 / (2 * s**2)) + 0.1 * (
        1 - 2 * (0.5 * math.erfc(0.1 / s / math.sqrt(2))))
    for k in range(1, 4):
        f = var[f"DEFacGroup{k}"].to_numpy()
        de = f != 1
        assert abs(de.mean() - 0.1) <= 4 * math.sqrt(0.09 / params.n_genes)
        assert abs((f[de] > 1).mean() - 0.5) <= 4 * math.sqrt(0.25 / de.sum())
        assert abs(np.abs(np.log(f[de])).mean() - folded_mean) < 4 * s / math.sqrt(de.sum())
    # direction and magnitude law agree with Splatter's (Sig1: sigma 0.1)
    ref_log = np.log(ref.var["DEFacGroup1"][ref.var["DEFacGroup1"] != 1].to_numpy())
    ours_sig1 = _ours(PRESETS["Sig1"], seed=0)
    ours_log = np.log(ours_sig1.var["DEFacGroup1"][ours_sig1.var["DEFacGroup1"] != 1])
    assert ks_2samp(ours_log, ref_log).pvalue > 1e-3


def test_mean_variance_relation_matches_reference_file():
    """Observed counts of Group1 (~1000 cells), genes binned by mean: Sig1 vs ours."""
    ref = _reference("Sig1")
    ours = _ours(PRESETS["Sig1"], seed=0)
    edges = [(0, 0.1), (0.1, 0.3), (0.3, 1), (1, 3), (3, 10), (10, 30), (100, 300)]
    r = _binned_meanvar(ref.X, (ref.obs["cell_type"] == "Group1").to_numpy(), edges)
    o = _binned_meanvar(ours.X, (ours.obs["cell_type"] == "Group1").to_numpy(), edges)
    for (lo, hi), rb, ob in zip(edges, r, o, strict=True):
        assert rb[0] >= 100 and ob[0] >= 100, (lo, rb[0], ob[0])
        if hi <= 30:  # above, var/mean grows ~linearly with the mean: compare phi only
            assert abs(ob[2] / rb[2] - 1) < 0.10, ("var/mean", lo, ob[2], rb[2])
        assert abs(ob[3] / rb[3] - 1) < 0.20, ("phi", lo, ob[3], rb[3])
        assert abs(ob[4] - rb[4]) < 0.03, ("zero fraction", lo, ob[4], rb[4])


def test_true_count_mean_variance_relation():
    """True counts of Group1 vs SPLATTER_MODEL.md section 8 and its NB formula."""
    # SimT3_3 shares its true counts with SimT3_1 (they differ only in dropout.mid)
    ours = _ours(PRESETS["SimT3_3"], seed=0)
    edges = [(lo, hi) for lo, hi, *_ in SPLATTER_TRUE_MEANVAR]
    got = _binned_meanvar(ours.layers["true_counts"],
                          (ours.obs["cell_type"] == "Group1").to_numpy(), edges)
    for (lo, _, vm, phi, zf), (n, m, ovm, ophi, ozf) in zip(SPLATTER_TRUE_MEANVAR, got, strict=True):
        assert n >= 100
        if lo < 30:  # above, var/mean grows ~linearly with the mean: compare phi only
            assert abs(ovm / vm - 1) < 0.10, ("var/mean", lo, ovm, vm)
        assert abs(ophi / phi - 1) < 0.20, ("phi", lo, ophi, phi)
        assert abs(ozf - zf) < 0.03, ("zero fraction", lo, ozf, zf)
        # var/mean ~ 1 + df/(df-2) (1 + 0.1 sqrt(m))^2 + (e^{0.04} - 1) m
        theory = 1 + 60 / 58 * (1 + 0.1 * math.sqrt(m)) ** 2 + math.expm1(0.04) * m
        if m >= 1:  # at low means the median of a skewed ratio sits below the mean
            assert abs(ovm / theory - 1) < 0.12, ("theory", lo, ovm, theory)


# ------------------------------------------------------------- model behaviour
def test_dropout_grows_with_mid_and_true_counts_are_shared():
    mids = [0.0, 0.5, 1.0, 1.5, 2.0]
    runs = [simulate_splat(_small(dropout_mid=m), seed=3, drop_zeros=False) for m in mids]
    rates = [a.uns["dropout_rate"] for a in runs]
    assert all(b > a + 3 for a, b in itertools.pairwise(rates)), rates
    zeros = [1 - a.X.nnz / np.prod(a.shape) for a in runs]
    assert all(b > a for a, b in itertools.pairwise(zeros)), zeros
    # common random numbers: only the dropout differs between these runs
    t0 = runs[0].layers["true_counts"]
    for a in runs[1:]:
        assert (a.layers["true_counts"] != t0).nnz == 0
    # observed counts are true counts with whole entries zeroed
    for a in runs:
        t, x = a.layers["true_counts"], a.X
        kept = x.nonzero()
        np.testing.assert_array_equal(np.asarray(x[kept]).ravel(), np.asarray(t[kept]).ravel())
        assert (x > t).nnz == 0


def test_common_random_numbers_across_sigma():
    """Like Splatter with one seed: changing sigma keeps labels, libraries, gene means
    and which genes are DE in which direction; only the DE magnitudes scale."""
    a = simulate_splat(_small(de_fac_scale=0.2), seed=9, drop_zeros=False)
    b = simulate_splat(_small(de_fac_scale=2.0), seed=9, drop_zeros=False)
    assert a.obs["cell_type"].equals(b.obs["cell_type"])
    np.testing.assert_array_equal(a.obs["ExpLibSize"], b.obs["ExpLibSize"])
    np.testing.assert_array_equal(a.var["GeneMean"], b.var["GeneMean"])
    for k in (1, 2, 3):
        fa, fb = a.var[f"DEFacGroup{k}"].to_numpy(), b.var[f"DEFacGroup{k}"].to_numpy()
        np.testing.assert_array_equal(fa != 1, fb != 1)
        de = fa != 1
        # log f = D |0.1 + sigma z|: same direction D and same z in both runs
        la, lb = np.log(fa[de]), np.log(fb[de])
        np.testing.assert_array_equal(np.sign(la), np.sign(lb))
        z_a = np.stack([(np.abs(la) - 0.1) / 0.2, (-np.abs(la) - 0.1) / 0.2])
        z_b = np.stack([(np.abs(lb) - 0.1) / 2.0, (-np.abs(lb) - 0.1) / 2.0])
        gap = np.abs(z_a[:, None, :] - z_b[None, :, :]).min(axis=(0, 1))
        assert gap.max() < 1e-8
    assert (a.X != b.X).nnz > 0


def test_dropout_logistic_and_none():
    # shape 0: every non-zero entry is dropped with probability exactly 1/2
    a = simulate_splat(_small(dropout_shape=0.0), seed=0, drop_zeros=False)
    n_true = a.layers["true_counts"].nnz
    assert abs(a.uns["dropout_rate"] - 50) <= 4 * 50 / math.sqrt(n_true)
    # mid 0, shape -1: P(drop | lambda) = 1 / (1 + lambda); very high mid drops all
    b = simulate_splat(_small(dropout_mid=30.0), seed=0, drop_zeros=False)
    assert b.uns["dropout_rate"] > 99.9
    c = simulate_splat(_small(dropout_type="none"), seed=0, drop_zeros=False)
    assert c.uns["dropout_rate"] == 0
    assert (c.X != c.layers["true_counts"]).nnz == 0
    # dropout rate formula of the paper, from the unfiltered matrices
    d = _ours(_small(dropout_mid=1.0), seed=5)
    t, x = d.layers["true_counts"], d.X
    size = np.prod(t.shape)
    expected = ((size - x.nnz) - (size - t.nnz)) / t.nnz * 100
    assert d.uns["dropout_rate_unrounded"] == pytest.approx(expected, rel=1e-12)
    assert d.uns["dropout_rate"] == round(expected, 2)


def test_library_sizes_follow_expected_library_size():
    a = _ours(_small(dropout_type="none", n_cells=500), seed=2)
    lib_true = np.asarray(a.layers["true_counts"].sum(axis=1)).ravel()
    ratio = lib_true / a.obs["ExpLibSize"].to_numpy()
    assert abs(ratio.mean() - 1) < 0.005
    assert np.corrcoef(np.log(lib_true), np.log(a.obs["ExpLibSize"]))[0, 1] > 0.98
    log_lib = np.log(a.obs["ExpLibSize"].to_numpy())
    assert abs(log_lib.mean() - 11) < 4 * 0.2 / math.sqrt(500)
    assert abs(log_lib.std() - 0.2) < 0.02


def _pca_separation(a: anndata.AnnData, k: int) -> tuple[float, float]:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    x = a.X.astype(np.float64)
    lib = np.asarray(x.sum(axis=1)).ravel()
    x = sp.csr_matrix(x.multiply(np.median(lib) / lib[:, None]))
    x.data = np.log1p(x.data)
    z = PCA(10, random_state=0).fit_transform(x.toarray())
    y = a.obs["cell_type"].cat.codes.to_numpy()
    pred = KMeans(k, n_init=5, random_state=0).fit_predict(z)
    return silhouette_score(z, y), adjusted_rand_score(y, pred)


def test_clusters_get_clearer_as_sigma_grows():
    res = [
        _pca_separation(simulate_splat(_small(n_cells=600, group_prob=(1 / 3,) * 3,
                                              de_fac_scale=s), seed=0), 3)
        for s in (0.1, 0.6, 1.5)
    ]
    sil = [r[0] for r in res]
    ari = [r[1] for r in res]
    assert sil[0] < sil[1] < sil[2], sil
    assert ari[0] < 0.3 and ari[2] > 0.95, ari


def test_demo_preset_is_quick_and_clustered():
    t0 = time.perf_counter()
    a = simulate("demo", seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 4.0  # ~0.3 s on an idle 2-core machine; the brief asks < 2 s
    assert a.obs["cell_type"].nunique() == 5
    assert 25 < a.uns["dropout_rate"] < 40
    sil, ari = _pca_separation(a, 5)
    assert sil > 0.05 and ari > 0.5


# ------------------------------------------------------------ reproducibility
def _assert_same(a: anndata.AnnData, b: anndata.AnnData) -> None:
    assert a.shape == b.shape
    assert (a.X != b.X).nnz == 0
    assert (a.layers["true_counts"] != b.layers["true_counts"]).nnz == 0
    assert a.obs.equals(b.obs) and a.var.equals(b.var)
    assert a.uns["dropout_rate_unrounded"] == b.uns["dropout_rate_unrounded"]


def test_same_seed_same_output_different_seed_different():
    p = _small(n_cells=300)
    a, b = simulate_splat(p, seed=7), simulate_splat(p, seed=7)
    _assert_same(a, b)
    c = simulate_splat(p, seed=8)
    assert c.shape != a.shape or (c.X != a.X).nnz > 0
    assert not np.array_equal(c.var["BaseGeneMean"], a.var["BaseGeneMean"])
    assert not np.array_equal(c.obs["ExpLibSize"], a.obs["ExpLibSize"])


@pytest.mark.parametrize("chunk", [1, RNG_BLOCK, 300, "auto"])
def test_chunked_equals_unchunked(chunk):
    p = _small(n_cells=3 * RNG_BLOCK + 37, n_genes=300)  # last RNG block is partial
    _assert_same(simulate_splat(p, seed=11, chunk_size=chunk),
                 simulate_splat(p, seed=11, chunk_size=None))


def test_drop_zeros_equals_filtering_afterwards():
    p = _small(n_genes=2000, n_cells=200, mean_shape=0.2, dropout_mid=2.0)
    full = simulate_splat(p, seed=4, drop_zeros=False)
    kept = simulate_splat(p, seed=4, drop_zeros=True)
    gene_ok = np.asarray(full.X.sum(axis=0)).ravel() > 0
    cell_ok = np.asarray(full.X[:, gene_ok].sum(axis=1)).ravel() > 0
    assert (~gene_ok).sum() > 10  # this setting has all-zero genes to drop
    sub = full[cell_ok, gene_ok]
    assert list(sub.obs_names) == list(kept.obs_names)
    assert list(sub.var_names) == list(kept.var_names)
    assert (sub.X != kept.X).nnz == 0
    assert (sub.layers["true_counts"] != kept.layers["true_counts"]).nnz == 0
    assert kept.uns["dropout_rate_unrounded"] == full.uns["dropout_rate_unrounded"]


def test_output_layout_and_roundtrip(tmp_path):
    a = simulate("demo", seed=1, n_cells=300)
    assert isinstance(a.X, sp.csr_matrix) and a.X.dtype == np.float32
    t = a.layers["true_counts"]
    assert isinstance(t, sp.csr_matrix) and t.dtype == np.float32
    assert np.all(a.X.data == np.round(a.X.data)) and a.X.data.min() > 0
    assert a.obs["cell_type"].dtype.name == "category"
    assert list(a.obs["cell_type"].cat.categories) == [f"Group{k}" for k in range(1, 6)]
    assert a.obs_names[0].startswith("Cell") and a.var_names[0].startswith("Gene")
    assert {"BaseGeneMean", "OutlierFactor", "GeneMean", "DEFacGroup5"} <= set(a.var)
    rec = a.uns["splatter"]
    json.dumps(rec)  # plain JSON-able
    assert rec["nGenes"] == 1500 and rec["batchCells"] == 300 and rec["seed"] == 1
    assert rec["dropout.mid"] == 1.5 and rec["nGroups"] == 5
    assert SplatParams.from_splatter(rec) == PRESETS["demo"].replace(n_cells=300)
    path = tmp_path / "demo.h5ad"
    a.write_h5ad(path)
    b = anndata.read_h5ad(path)
    assert (b.X != a.X).nnz == 0 and b.uns["dropout_rate"] == a.uns["dropout_rate"]


# --------------------------------------------------------------------- params
def test_defaults_are_splatters():
    p = SplatParams()
    assert (p.n_genes, p.n_cells, p.group_prob) == (10000, 100, (1.0,))
    assert (p.de_prob, p.de_down_prob, p.de_fac_loc, p.de_fac_scale) == (0.1, 0.5, 0.1, 0.4)
    assert (p.mean_shape, p.mean_rate, p.lib_loc, p.lib_scale, p.lib_norm) == (
        0.6, 0.3, 11.0, 0.2, False)
    assert (p.out_prob, p.out_fac_loc, p.out_fac_scale) == (0.05, 4.0, 0.5)
    assert (p.bcv_common, p.bcv_df, p.dropout_mid, p.dropout_shape) == (0.1, 60.0, 0.0, -1.0)
    assert p.dropout_type == "experiment"


def test_presets_are_the_paper_settings():
    names = ([f"SimT{k}_{i}" for k in (3, 6) for i in range(1, 6)]
             + ["Sig1", "Sig1b", "Sig2", "Sig3", "Sig4"] + [f"Imb{i}" for i in range(1, 6)])
    assert set(names) | {"demo"} == set(PRESETS)
    for i, mid in enumerate([0, 0.5, 1, 1.5, 2], start=1):
        for k in (3, 6):
            p = PRESETS[f"SimT{k}_{i}"]
            assert (p.n_cells, p.n_groups, p.dropout_mid, p.de_fac_scale) == (3000, k, mid, 0.3)
    for name, s in [("Sig1", 0.1), ("Sig1b", 1.0), ("Sig2", 1.5), ("Sig3", 2.0), ("Sig4", 2.5)]:
        p = PRESETS[name]
        assert (p.n_cells, p.n_groups, p.dropout_mid, p.de_fac_scale) == (3000, 3, 0, s)
    imb1 = [0.0303, 0.0848, 0.1394, 0.1939, 0.2485, 0.3030]  # SPLATTER_MODEL.md
    np.testing.assert_allclose(PRESETS["Imb1"].group_prob, imb1, atol=6e-5)
    for i, r in enumerate([0.1, 0.3, 0.5, 0.7, 0.9], start=1):
        p = PRESETS[f"Imb{i}"]
        assert (p.n_cells, p.n_groups, p.de_fac_scale) == (1500, 6, 0.4)
        assert p.group_prob[-1] / p.group_prob[0] == pytest.approx(1 / r)
    for p in PRESETS.values():
        assert p.n_genes == (1500 if p is PRESETS["demo"] else 5000)
        assert p.dropout_type == "experiment" and p.dropout_shape == -1


def test_imbalance_probabilities_equal_reference_file_bit_for_bit():
    ref = _reference("Imb1")
    assert imbalance_group_prob(0.1) == tuple(ref.uns["splatter"]["group.prob"].tolist())


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"n_cells": 0}, "n_cells"),
        ({"n_genes": 2.5}, "integer"),
        ({"n_genes": True}, "integer"),
        ({"group_prob": (0.5, 0.4)}, "sum to 1"),
        ({"group_prob": (1.5, -0.5)}, "group_prob"),
        ({"group_prob": ()}, "at least one"),
        ({"de_prob": 1.5}, "de_prob"),
        ({"de_fac_scale": (0.1, 0.2, 0.3)}, "one per group"),
        ({"de_fac_scale": -0.1}, "de_fac_scale"),
        ({"mean_rate": 0}, "mean_rate"),
        ({"bcv_df": 0}, "bcv_df"),
        ({"lib_scale": float("nan")}, "finite"),
        ({"dropout_type": "cell"}, "not implemented"),
        ({"dropout_mid": (0, 1)}, "single number"),
        ({"dropout_shape": "steep"}, "number"),
        ({"lib_norm": "yes"}, "True or False"),
        ({"nGenes": 10}, "unknown Splat parameter"),
    ],
)
def test_bad_params_raise_input_error(changes, match):
    with pytest.raises(InputError, match=match):
        SplatParams(group_prob=(0.5, 0.5)).replace(**changes)


def test_bad_calls_raise_input_error():
    with pytest.raises(InputError, match="SimT3_1"):  # lists the valid names
        simulate("SimT9_9")
    assert issubclass(InputError, ValueError)
    with pytest.raises(InputError, match="unknown Splat parameter"):
        simulate("demo", sigma=0.4)
    with pytest.raises(InputError, match="seed"):
        simulate_splat(_small(), seed=-1)
    with pytest.raises(InputError, match="chunk_size"):
        simulate_splat(_small(), chunk_size=0)
    with pytest.raises(InputError, match="SplatParams"):
        simulate_splat({"n_cells": 10})
    with pytest.raises(InputError, match="one batch"):
        SplatParams.from_splatter({"nBatches": 2})


def test_other_options_run():
    p = _small(n_cells=150, lib_norm=True, lib_loc=20000, lib_scale=8000,
               de_prob=(0.1, 0.2, 0.3))
    a = simulate_splat(p, seed=0, true_counts=False)
    assert "true_counts" not in a.layers
    assert a.obs["ExpLibSize"].min() > 0 and abs(a.obs["ExpLibSize"].mean() - 20000) < 4000
    de = [(a.var[f"DEFacGroup{k}"] != 1).mean() for k in (1, 2, 3)]
    assert de[0] < de[2]
    with pytest.warns(UserWarning, match="infinite"):
        simulate_splat(_small(n_cells=50, bcv_df=math.inf), seed=0)
    assert dataclasses.is_dataclass(p) and p.n_groups == 3


# ------------------------------------------------------------------------ CLI
def _parse(argv):
    parser = argparse.ArgumentParser(prog="scgpcl")
    _cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_writes_file(tmp_path, caplog):
    out = tmp_path / "sim.h5ad"
    args = _parse(["simulate", str(out), "--preset", "demo", "--seed", "3", "--n-cells", "200",
                   "--group-prob", "0.5", "0.5", "--de-fac-scale", "0.8", "--dropout-mid", "1"])
    with caplog.at_level("INFO", logger="scgpcl.simulate._cli"):
        assert args.func(args) == 0
    a = anndata.read_h5ad(out)
    assert a.n_obs == 200 and a.obs["cell_type"].nunique() == 2
    rec = a.uns["splatter"]
    assert rec["de.facScale"] == 0.8 and rec["dropout.mid"] == 1.0 and rec["seed"] == 3
    assert rec["nGenes"] == 1500  # from the preset
    assert "wrote" in caplog.text and "200 cells" in caplog.text and "2 groups (" in caplog.text
    # the log says which settings were given on top of the preset (it said "preset demo" only)
    assert "preset demo with --n-cells, --group-prob, --de-fac-scale, --dropout-mid, seed 3" in caplog.text
    assert "nothing to cluster" not in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["sim.h5ad"]  # no temp file left
    # refuses to overwrite unless asked
    with pytest.raises(InputError, match="overwrite"):
        _cli.run(args)
    args = _parse(["simulate", str(out), "--n-cells", "60", "--n-genes", "100", "--overwrite"])
    caplog.clear()
    with caplog.at_level("INFO", logger="scgpcl.simulate._cli"):
        assert _cli.run(args) == 0
    assert anndata.read_h5ad(out).uns["splatter"]["nGenes"] == 100
    # Splatter's defaults have one group: written, with a warning that says how to get groups
    assert "1 group (60)" in caplog.text and "Splatter's defaults with --n-genes, --n-cells" in caplog.text
    assert "one group, so there is nothing to cluster: give several probabilities" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="scgpcl.simulate._cli"):  # a switched-off flag is named as given
        assert _cli.run(_parse(["simulate", str(out), "--n-cells", "60", "--n-genes", "100", "--group-prob", "0.5",
                                "0.5", "--no-lib-norm", "--overwrite"])) == 0
    assert "with --n-genes, --n-cells, --group-prob, --no-lib-norm" in caplog.text


def test_help_shows_splatters_defaults():
    # --help names each parameter's default without importing the simulator; they must be SplatParams'
    from scgpcl.simulate._splat import SplatParams

    p = SplatParams()
    assert _cli.SPLAT_DEFAULTS == {f: getattr(p, f) for _, f, _, _, _ in _cli._PARAM_OPTIONS}


def test_cli_bad_input(tmp_path):
    out = tmp_path / "x.h5ad"
    with pytest.raises(InputError, match="sum to 1"):
        _cli.run(_parse(["simulate", str(out), "--group-prob", "0.5", "0.4"]))
    with pytest.raises(InputError, match="valid presets"):
        _cli.run(_parse(["simulate", str(out), "--preset", "nope"]))
    with pytest.raises(InputError, match="does not exist"):
        _cli.run(_parse(["simulate", str(tmp_path / "missing" / "x.h5ad")]))
    with pytest.raises(SystemExit):  # argparse: typed options
        _parse(["simulate", str(out), "--n-cells", "many"])
    assert not out.exists()


def test_cli_write_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "x.h5ad"

    def broken_write(self, filename, **kw):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", broken_write)
    with pytest.raises(OutputFailed, match=r"could not write '.*x\.h5ad' \(disk full\); nothing was written"):
        _cli.run(_parse(["simulate", str(out), "--n-cells", "50", "--n-genes", "50"]))
    assert list(tmp_path.iterdir()) == []


def test_simulate_refuses_an_output_that_is_not_h5ad(tmp_path, capsys):
    # 'scgpcl simulate counts.csv' wrote an HDF5 file named .csv, which 'scgpcl cluster' then read as text
    out = tmp_path / "counts.csv"
    code = main(["simulate", str(out), "--n-cells", "20", "--n-genes", "30"])
    assert code == 2
    _one_line_error(capsys, ".h5ad")
    assert not out.exists()


def test_simulate_paths_as_the_other_commands_take_them(tmp_path, monkeypatch, caplog):
    # 'scgpcl simulate --overwrite=... ~/x.h5ad' in quotes, or OUT.H5AD, or a link: as 'cluster' and 'demo'
    # treat them (no '~' expansion made a folder named '~'; .H5AD was refused; a link was replaced by a file)
    monkeypatch.setenv("HOME", str(tmp_path))
    args = _parse(["simulate", "~/sim.h5ad", "--n-cells", "20", "--n-genes", "30"])
    assert args.output == str(tmp_path / "sim.h5ad")
    assert _cli.run(args) == 0 and (tmp_path / "sim.h5ad").is_file()
    assert _cli.run(_parse(["simulate", str(tmp_path / "UPPER.H5AD"), "--n-cells", "20", "--n-genes", "30"])) == 0
    real = tmp_path / "data" / "real.h5ad"
    real.parent.mkdir()
    link = tmp_path / "link.h5ad"
    link.symlink_to(real)
    # a file a killed run left beside the target is named, not removed
    (real.parent / ".real.h5ad.abc.tmp").write_bytes(b"x" * 10)
    with caplog.at_level("WARNING", logger="scgpcl"):
        assert _cli.run(_parse(["simulate", str(link), "--n-cells", "20", "--n-genes", "30"])) == 0
    assert link.is_symlink() and anndata.read_h5ad(real).n_obs == 20
    assert "1 temporary file beside" in caplog.text and ".real.h5ad.abc.tmp" in caplog.text
    assert (real.parent / ".real.h5ad.abc.tmp").exists()


def test_a_link_into_a_missing_folder_is_named_as_such(tmp_path, capsys):
    # simulate and cluster said "no write permission" for a link whose target's folder does not exist
    link = tmp_path / "dang.h5ad"
    link.symlink_to(tmp_path / "nowhere" / "y.h5ad")
    with pytest.raises(InputError, match=r"is a link to '.*nowhere/y\.h5ad', whose folder does not exist; create "
                                         r"that folder first, or give another output"):
        _cli.run(_parse(["simulate", str(link), "--n-cells", "20", "--n-genes", "30"]))
    src = tmp_path / "in.h5ad"
    assert _cli.run(_parse(["simulate", str(src), "--n-cells", "20", "--n-genes", "30", "--preset", "demo"])) == 0
    assert main(["cluster", str(src), str(link), "-k", "2", "--quiet"]) == 2
    _one_line_error(capsys, "whose folder does not exist")
    # a link to a link: the folder named is the one missing at the end of the chain, not the first hop's
    (tmp_path / "hop").mkdir()
    (tmp_path / "hop" / "h.h5ad").symlink_to(tmp_path / "gone" / "final.h5ad")
    chain = tmp_path / "chain.h5ad"
    chain.symlink_to(tmp_path / "hop" / "h.h5ad")
    with pytest.raises(InputError, match=r"is a link to '.*gone/final\.h5ad', whose folder does not exist"):
        _cli.run(_parse(["simulate", str(chain), "--n-cells", "20", "--n-genes", "30"]))
    loop = tmp_path / "loop.h5ad"  # Python's own RuntimeError ('Symlink loop') from inside, exit 1
    loop.symlink_to(loop)
    with pytest.raises(InputError, match=r"is a link that leads back to itself \(a loop\)"):
        _cli.run(_parse(["simulate", str(loop), "--n-cells", "20", "--n-genes", "30"]))
    assert main(["cluster", str(src), str(loop), "-k", "2", "--quiet"]) == 2
    _one_line_error(capsys, "leads back to itself")
