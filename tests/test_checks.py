"""Input checks: counts, empty cells/genes, cluster number, reference labels."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scgpcl._errors import InputError
from scgpcl.data._checks import (
    check_counts,
    check_label_key,
    check_n_clusters,
    raw_counts_problem,
    raw_not_even_estimated_counts,
)
from scgpcl.data._io import read_counts

SHARED = Path(os.environ.get("SCGPCL_SHARED", Path(__file__).resolve().parents[2] / "shared"))
NOT_COUNTS = SHARED / "data" / "real" / "pbmc68k_reduced_NOT_COUNTS.h5ad"

FORMATS = [np.asarray, sp.csr_matrix, sp.csc_matrix, sp.coo_array]


@pytest.fixture
def counts() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.poisson(2.0, size=(30, 10)).astype(np.float32)


# --------------------------------------------------------------------------- check_counts


@pytest.mark.parametrize("fmt", FORMATS)
def test_raw_counts_pass(counts, fmt):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_counts(fmt(counts))
        check_counts(fmt(counts.astype(np.int32)))


def test_float_round_off_counts_as_integer(counts):
    check_counts(np.expm1(np.log1p(counts.astype(np.float32))))
    with pytest.raises(InputError, match="not integer counts"):
        check_counts(counts + np.float32(0.01))


@pytest.mark.parametrize("fmt", FORMATS)
def test_negative_refused_with_advice(counts, fmt):
    scaled = (counts - counts.mean(axis=0)) / (counts.std(axis=0) + 1)
    with pytest.raises(
        InputError,
        match=r"negative value.*scaled or log-transformed.*needs raw counts\. Use layer= to pick a layer",
    ):
        check_counts(fmt(scaled))


def test_negative_message_lists_layers(counts):
    counts[3, 4] = -1
    with pytest.raises(InputError, match=r"available layers: 'counts', 'raw_umi'"):
        check_counts(counts, layers=["counts", "raw_umi"], where="layers['norm']")
    with pytest.raises(InputError, match=r"^layers\['norm'\] contains 1 negative.*minimum -1"):
        check_counts(counts, layers=["counts", "raw_umi"], where="layers['norm']")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("bad", "pattern"), [(np.nan, r"1 NaN and 0 infinite"), (np.inf, r"0 NaN and 1 infinite")])
def test_nan_and_inf_refused(counts, fmt, bad, pattern):
    counts[5, 2] = bad
    with pytest.raises(InputError, match=pattern):
        check_counts(fmt(counts), reconstruction="mse")


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_integer_refused_for_zinb(counts, fmt):
    counts[0, 0] = 2.5
    with pytest.raises(
        InputError,
        match=r"1 of \d+ stored values are not integers \(e\.g\. 2\.5\).*ZINB.*integer counts.*"
        r"raw counts.*reconstruction='mse'",
    ):
        check_counts(fmt(counts))


def test_non_integer_warns_for_mse(counts):
    normalised = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    with pytest.warns(UserWarning, match=r"not integer counts.*reconstruction='mse' accepts"):
        check_counts(sp.csr_matrix(normalised), reconstruction="mse")


@pytest.mark.parametrize("shape", [(0, 10), (10, 0)])
@pytest.mark.parametrize("fmt", [np.zeros, sp.csr_matrix])
def test_empty_matrix_refused(shape, fmt):
    with pytest.raises(InputError, match=rf"empty \({shape[0]} cells x {shape[1]} genes\)"):
        check_counts(fmt(shape))


@pytest.mark.parametrize(
    "matrix",
    [
        np.zeros((4, 3)),
        sp.csr_matrix((4, 3)),
        sp.csr_matrix((np.zeros(2), ([0, 1], [1, 2])), shape=(4, 3)),  # stored zeros only
    ],
    ids=["dense", "sparse", "stored-zeros"],
)
def test_all_zero_refused(matrix):
    with pytest.raises(InputError, match=r"only zeros \(4 cells x 3 genes\)"):
        check_counts(matrix)


def test_unknown_reconstruction(counts):
    with pytest.raises(InputError, match=r"unknown reconstruction 'nb'.*'mse', 'zinb'"):
        check_counts(counts, reconstruction="nb")


def test_backed_matrix_refused_with_advice(tmp_path, counts):
    path = tmp_path / "backed.h5ad"
    anndata.AnnData(sp.csr_matrix(counts)).write_h5ad(path)
    backed = anndata.read_h5ad(path, backed="r")
    try:
        with pytest.raises(InputError, match=r"stored on disk.*to_memory\(\)"):
            check_counts(backed.X)
    finally:
        backed.file.close()


def test_sparse_checked_without_densifying():
    # 1e6 x 1e6 would need 4 TB dense; only the 3 stored values may be looked at
    X = sp.csr_matrix((np.array([1.0, -2.0, 3.0]), ([0, 5, 999_999], [7, 8, 9])), shape=(1_000_000, 1_000_000))
    with pytest.raises(InputError, match=r"1 negative value\(s\) \(minimum -2\)"):
        check_counts(X)


@pytest.mark.skipif(not NOT_COUNTS.is_file(), reason=f"shared data not found at {NOT_COUNTS} (set SCGPCL_SHARED)")
def test_real_scaled_data_refused():
    adata = read_counts(NOT_COUNTS)
    with pytest.raises(InputError, match=r"negative value.*needs raw counts\. (Use layer=|Go back to the raw count)"):
        check_counts(adata.X, layers=list(adata.layers))


# --------------------------------------------------------------------------- check_n_clusters


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (1, "at least 2, got 1"),
        (0, "at least 2, got 0"),
        (-3, "at least 2, got -3"),
        (2.5, r"whole number.*got 2\.5"),
        (float("nan"), r"whole number.*got nan"),
        ("3", r"whole number.*got '3'"),
        (True, r"whole number.*got True"),
        (None, r"whole number.*got None"),
        (101, r"n_clusters=101 is more than the number of cells \(100\)"),
    ],
)
def test_bad_n_clusters(value, pattern):
    with pytest.raises(InputError, match=pattern):
        check_n_clusters(value, 100)


@pytest.mark.parametrize(("value", "expected"), [(2, 2), (np.int64(7), 7), (8.0, 8), (50, 50)])
def test_good_n_clusters(value, expected):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # up to half the cells: no warning
        result = check_n_clusters(value, 100)
    assert result == expected
    assert type(result) is int


def test_more_clusters_than_half_the_cells_warns():
    # -k 30 on 30 cells silently gave 30 singleton clusters
    with pytest.warns(UserWarning, match="n_clusters=51 on 100 cells: most clusters will hold one or two cells"):
        assert check_n_clusters(51, 100) == 51


def test_auto_is_none_where_k_may_be_estimated():
    # the command line takes "--n-clusters auto"; Python refused "auto" although it means None there
    assert check_n_clusters("auto", 100, allow_none=True) is None
    assert check_n_clusters(" Auto ", 100, allow_none=True) is None
    with pytest.raises(InputError, match=r"whole number.*got 'auto'"):
        check_n_clusters("auto", 100)


# --------------------------------------------------------------------------- check_label_key


def _with_labels(labels) -> anndata.AnnData:
    obs = pd.DataFrame({"cell_type": labels, "batch": ["a"] * len(labels)})
    obs.index = obs.index.astype(str)
    return anndata.AnnData(np.ones((len(labels), 2), dtype=np.float32), obs=obs)


def test_label_key_missing_lists_columns():
    with pytest.raises(InputError, match=r"'celltype' is not a column of obs \(available columns: 'cell_type', 'batch'\)"):
        check_label_key(_with_labels(["x", "y"]), "celltype")


def test_label_key_no_obs_columns():
    with pytest.raises(InputError, match=r"this data has no per-cell annotations at all \(obs has no columns; text "
                                         r"tables and 10x files never have any\); leave label_key out, or put the "
                                         r"labels in an \.h5ad's obs"):
        check_label_key(anndata.AnnData(np.ones((2, 2))), "cell_type")


def test_label_key_ok_and_none():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_label_key(_with_labels(["x", "y"]), "cell_type")
        check_label_key(_with_labels(["x", "y"]), None)


def test_label_key_partly_missing_warns():
    with pytest.warns(UserWarning, match=r"missing \(NaN or empty\) for 1 of 3 cells"):
        check_label_key(_with_labels(pd.Categorical(["x", None, "y"])), "cell_type")


def test_empty_labels_are_missing_and_placeholders_are_named():
    """'' was scored as a cell type of its own (never matched: CA and macro F1 of a perfect clustering fell),
    and 'unknown' is scored so without a word."""
    import warnings

    with pytest.warns(UserWarning, match=r"missing \(NaN or empty\) for 2 of 5 cells"):
        check_label_key(_with_labels(["x", "", "  ", "y", "x"]), "cell_type")
    with pytest.raises(InputError, match=r"all 3 values are missing \(NaN or empty\)"):
        check_label_key(_with_labels(["", None, " "]), "cell_type")
    a = _with_labels(pd.Categorical(["x", "unknown", "y", "x", "NA", "unknown"]))
    with pytest.warns(UserWarning, match=r"labels cells 'unknown' \(2 cells\), 'NA' \(1 cell\): the scores count "
                                         r"each as a cell type of its own.*\.mask\(adata\.obs\['cell_type'\] == 'unknown'\)"):
        check_label_key(a, "cell_type")
    # the advice works on a categorical column, and afterwards the check is quiet about 'unknown'
    a.obs["cell_type"] = a.obs["cell_type"].mask(a.obs["cell_type"] == "unknown")
    with pytest.warns(UserWarning) as record:
        check_label_key(a, "cell_type")
    assert not any("'unknown'" in str(w.message) for w in record)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_label_key(_with_labels(["x", "Unknown T cell", "x"]), "cell_type")  # a real label that only contains it


def test_label_key_all_missing_refused():
    with pytest.raises(InputError, match=r"all 2 values are missing"):
        check_label_key(_with_labels([np.nan, np.nan]), "cell_type")


def test_label_key_with_one_value_per_cell_is_refused(capsys, tmp_path):
    # a column of cell ids given as --label-key was scored (ARI 0) without a word
    ids = [f"cell_{i}" for i in range(8)]
    with pytest.raises(InputError, match=r"obs\['cell_type'\] has a different value for every labelled cell "
                                         r"\(8 values, e.g. 'cell_0'\): it looks like cell ids, not reference labels.*"
                                         r"label_key=.*'batch'"):
        check_label_key(_with_labels(ids), "cell_type")
    check_label_key(_with_labels(["a", "b", "a"]), "cell_type")  # repeated labels are labels
    check_label_key(_with_labels(["a", "b"]), "cell_type")  # too few cells to tell
    # from the command line the message names --label-key
    from scgpcl.cli import main

    from helpers import toy_counts

    a = toy_counts(n_per=10, n_genes=40)
    a.obs["barcode"] = list(a.obs_names)
    a.write_h5ad(tmp_path / "toy.h5ad")
    assert main(["cluster", str(tmp_path / "toy.h5ad"), str(tmp_path / "o.h5ad"), "-k", "3", "--label-key", "barcode",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "looks like cell ids" in err[0] and "--label-key" in err[0] and "label_key=" not in err[0]
    assert not (tmp_path / "o.h5ad").exists()


@pytest.mark.parametrize("fmt", [np.asarray, sp.csr_matrix])
def test_boolean_matrix_refused(counts, fmt):
    # a detected / not-detected matrix was taken as counts of 0 and 1
    with pytest.raises(InputError, match=r"X holds True/False values.*raw integer counts\. Go back to the count matrix.*pick it with layer="):
        check_counts(fmt(counts > 0))


@pytest.mark.parametrize("fmt", [np.asarray, sp.csr_matrix])
def test_values_of_absurd_size_are_called_corrupt(counts, fmt):
    x = counts.copy()
    x[0, 0], x[1, 1] = -3.3e38, 2e-38  # random bytes read as float32
    with pytest.raises(InputError, match=r"holds 2 value\(s\) of a size no count matrix.*look corrupt"):
        check_counts(fmt(x))
    x = counts - 1.0  # plainly scaled data keep their own message
    with pytest.raises(InputError, match="scaled or log-transformed"):
        check_counts(fmt(x))


def test_the_advice_names_a_layer_only_when_there_is_one_to_pick():
    # a plain matrix (the sklearn estimator) was told to "use --layer / layer=" although it has no layers
    scaled = np.full((4, 3), -1.0)
    with pytest.raises(InputError, match=r"Go back to the raw count matrix \(this data has no layers and no \.raw") as e:
        check_counts(scaled, layers=[])
    assert "layer=" not in str(e.value)
    with pytest.raises(InputError, match=r"Use layer= to pick a layer holding raw counts \(available layers: 'counts'\)"):
        check_counts(scaled, layers=["counts"])
    # rounding (a new user's SoupX-corrected counts) and mse are offered for non-integer values that are not
    # normalised (what mse's own warning asks)
    with pytest.raises(InputError, match=r"no \.raw.*If these are counts that a tool made non-integer \(ambient-RNA "
                                         r"correction.*round them to integers \(numpy\.rint\) or keep them with "
                                         r"reconstruction='mse'$"):
        check_counts(np.full((4, 3), 0.5), layers=[])
    with pytest.raises(InputError, match=r"is this the count matrix\? Use layer= to pick another"):
        check_counts(np.zeros((4, 3)), layers=["c"])
    # no layers but .raw: point to .raw, not to a layer
    with pytest.raises(InputError, match=r"adata\.raw is set: if it holds the counts, use adata\.raw\.to_adata\(\) "
                                         r"\(this data has no layers\)$"):
        check_counts(scaled, layers=[], has_raw=True)


def test_float16_counts_are_checked_without_an_overflow_warning():
    # the check compared float16 values with bounds outside float16's range: "overflow encountered in cast"
    x = np.random.default_rng(0).poisson(2, (50, 30)).astype(np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_counts(x, reconstruction="zinb", where="X", layers=[])  # scipy.sparse has no float16


def test_normalised_values_are_named_as_such():
    """Values normalised to one total per cell (CPM, normalize_total) or log1p of them: the ZINB error says so
    and drops its offer of mse; mse itself warns by name (the values would be normalised twice)."""
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, (60, 40)).astype(np.float64) + np.eye(60, 40)  # no empty cell
    cpm = x / x.sum(1, keepdims=True) * 1e6
    logged = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4))
    with pytest.raises(InputError, match=r"they look normalised to a total of 1e\+06 per cell") as e:
        check_counts(cpm, layers=["counts"])
    assert "mse" not in str(e.value) and "layers: 'counts'" in str(e.value)
    with pytest.warns(UserWarning, match=r"they look log-normalised \(log1p of counts normalised to 1e\+04 per cell.*"
                                         r"normalised twice and cluster worse\. Use layer= to pick a layer holding raw"):
        check_counts(logged, reconstruction="mse", layers=["counts"])
    # non-integer values with cells' own totals (estimated counts) are not called normalised
    with pytest.warns(UserWarning, match=r"make sure these values are not already normalised") as w:
        check_counts(x + 0.5, reconstruction="mse", layers=[])
    assert "they look" not in str(w[0].message)


def test_raw_values_told_apart_without_reading_the_message():
    """--use-raw beside a counts layer refuses a .raw that is not even estimated counts; the decision used to be
    taken from the wording of raw_counts_problem's message."""
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, (60, 40)).astype(np.float64) + np.eye(60, 40)
    estimated = x + 0.5
    cpm = x / x.sum(1, keepdims=True) * 1e6
    logged = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    assert raw_counts_problem(x) is None and raw_not_even_estimated_counts(x) is None
    assert raw_counts_problem(estimated).startswith("non-integer values")
    assert raw_not_even_estimated_counts(estimated) is None  # what reconstruction='mse' accepts
    for values in (cpm, sp.csr_matrix(logged), -x, np.zeros_like(x), x > 1):
        problem = raw_not_even_estimated_counts(values)
        assert problem is not None and problem == raw_counts_problem(values)
    assert raw_counts_problem(None) is None and raw_not_even_estimated_counts(None) is None


def test_rounded_normalised_counts_are_named_as_such():
    """Integers that sum to one total in every cell (rounded CPM) passed as raw counts without a word."""
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, (60, 40)).astype(np.float64) + np.eye(60, 40)
    rounded = np.round(x / x.sum(1, keepdims=True) * 1e6)
    for m in (rounded, sp.csr_matrix(rounded)):
        with pytest.warns(UserWarning, match=r"every cell's counts in X sum to about 1,000,000 \(within 0\.1%\), as "
                                             r"after normalising to one total per cell and rounding.*Use layer= to "
                                             r"pick a layer holding raw counts \(available layers: 'counts'\)"):
            check_counts(m, layers=["counts"])
    with warnings.catch_warnings():  # raw counts, whose totals differ: no warning
        warnings.simplefilter("error")
        check_counts(x, layers=["counts"])
        check_counts(rounded[:9], layers=["counts"])  # too few cells to tell
    # the layers themselves: a copy of the rounded values is not offered as the fix, nor is the layer being
    # checked; the one holding the counts is, first by its usual name (a review found the checked layer named)
    copies = {"cpm": rounded.copy(), "spliced": x.copy(), "counts": x.copy()}
    with pytest.warns(UserWarning, match=r"Use layer='counts': that layer holds integer counts \(so do 'spliced'\)\. If"):
        check_counts(rounded, layers=list(copies), layer_values=copies)
    del copies["counts"], copies["spliced"]
    with pytest.warns(UserWarning, match=r"Use layer= to pick a layer holding raw counts \(available layers: 'cpm'\)\. If"):
        check_counts(rounded, layers=list(copies), layer_values=copies, layer="cpm", where="layers['cpm']")


def test_row_totals_block_by_block_match_the_whole_sums():
    from scgpcl.data import _checks

    rng = np.random.default_rng(1)
    x = rng.random((300, 50)) * (rng.random((300, 50)) < 0.2)
    x[5] = 0  # an empty row
    for m in (x, sp.csr_matrix(x), sp.csc_matrix(x)):
        old = _checks._CHUNK
        _checks._CHUNK = 97  # several blocks, some rows spanning a block's edge
        try:
            totals, e_totals = _checks._row_totals(m)
        finally:
            _checks._CHUNK = old
        np.testing.assert_allclose(totals, x.sum(1), rtol=1e-12)
        np.testing.assert_allclose(e_totals, np.expm1(x).sum(1), rtol=1e-12)


def _unfiltered(n_cells: int = 60, n_droplets: int = 90, seed: int = 0) -> anndata.AnnData:
    """Cells with hundreds of counts, then droplets of a few counts of ambient RNA (an unfiltered 10x matrix)."""
    rng = np.random.default_rng(seed)
    cells = rng.poisson(rng.gamma(1.0, 4.0, 50), size=(n_cells, 50))
    droplets = rng.poisson(0.3, size=(n_droplets, 50))  # ~15 counts each; some have none
    return anndata.AnnData(sp.csr_matrix(np.vstack([cells, droplets]).astype(np.float32)))


def test_a_matrix_of_mostly_empty_droplets_is_warned_about_before_training():
    # a new user's raw_feature_bc_matrix ran without a word and put every real cell in one cluster
    from scgpcl import SCGPCL

    with pytest.warns(UserWarning, match=r"^(9[0-9]|1[0-9]{2}) of the 150 cells \(\d+%\) have 50 counts or fewer: the "
                                         r"matrix looks unfiltered.*filtered_feature_bc_matrix.*sc\.pp\.filter_cells"):
        SCGPCL(_unfiltered(), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # half the cells or fewer: no warning
        SCGPCL(_unfiltered(n_cells=80, n_droplets=70), 3)


def test_the_low_count_share_counts_the_cells_dropped_as_empty():
    from types import SimpleNamespace

    from scgpcl.data._checks import LOW_COUNTS, warn_low_count_cells

    kept = np.full(40, 1000.0)
    data = SimpleNamespace(cell_mask=np.r_[np.ones(40, bool), np.zeros(41, bool)], total_counts=kept)
    with pytest.warns(UserWarning, match=r"^41 of the 81 cells \(51%\) have 50 counts or fewer"):
        warn_low_count_cells(data)  # 41 cells without counts in the genes used
    data = SimpleNamespace(cell_mask=np.ones(81, bool), total_counts=np.r_[kept, np.full(41, float(LOW_COUNTS))])
    with pytest.warns(UserWarning, match=r"^41 of the 81"):
        warn_low_count_cells(data)  # at the threshold counts as low
    data.total_counts = np.r_[kept, np.full(41, LOW_COUNTS + 1.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_low_count_cells(data)


@pytest.mark.skipif(not (SHARED / "data" / "real").is_dir(), reason="needs ../shared/data/real (the shared datasets)")
def test_no_shared_dataset_looks_unfiltered():
    """The warning is about a matrix of empty droplets, not about shallow cells: none of the shared count
    matrices (filtered, some cut to their 2,000 most variable genes) has more than 6 % of its cells at 50
    counts or fewer."""
    from types import SimpleNamespace

    from scgpcl.data._checks import LOW_COUNTS, warn_low_count_cells

    for path in sorted((SHARED / "data" / "real").glob("*.h5ad")):
        if path.name == NOT_COUNTS.name:
            continue
        totals = np.asarray(anndata.read_h5ad(path).X.sum(axis=1)).ravel()
        share = float(np.mean(totals <= LOW_COUNTS))
        assert share < 0.06, (path.name, share)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warn_low_count_cells(SimpleNamespace(cell_mask=totals > 0, total_counts=totals[totals > 0]))
