"""Clusters against batches (samples, donors): the composition, the batch-specific clusters and their warning."""

from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scgpcl
from scgpcl import InputError
from scgpcl.cli import main
from scgpcl.data._checks import check_batch_key
from scgpcl.report import write_report
from scgpcl.tl._batches import BATCH_SHARE, batch_record, batch_specific

from helpers import TINY, TINY_ARGS, _one_line_error, toy_counts


def _table(rows: dict[str, list[int]], batches=("a", "b")) -> pd.DataFrame:
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(batches))


def _with_batches(batches) -> ad.AnnData:
    a = toy_counts()
    a.obs["sample"] = pd.Categorical(batches)
    return a


def _one_type_in_its_own_batch() -> ad.AnnData:
    """The toy's first type all in batch 's3'; the other two types split at random between 's1' and 's2'."""
    a = toy_counts()
    types = a.obs["cell_type"].astype(str).to_numpy()
    batches = np.where(np.random.default_rng(0).random(a.n_obs) < 0.5, "s1", "s2")
    batches[types == types[0]] = "s3"
    a.obs["sample"] = pd.Categorical(batches)
    return a


# ----------------------------------------------------------------------------- the rule
def test_a_cluster_of_one_minority_batch_is_named():
    # cluster 0: 95 % batch a, which holds 50 % of the cells
    found = batch_specific(_table({"0": [95, 5], "1": [5, 95], "2": [50, 50]}))
    assert [(c, b) for c, b, _ in found] == [("0", "a"), ("1", "b")]
    assert found[0][2] == pytest.approx(0.95)


def test_mixed_clusters_are_not_named():
    assert batch_specific(_table({"0": [60, 40], "1": [40, 60], "2": [50, 50]})) == []


def test_the_share_threshold_is_inclusive_and_exact():
    just = int(BATCH_SHARE * 100)
    assert batch_specific(_table({"0": [just, 100 - just], "1": [100 - just, just]}))  # exactly 80 %: named
    assert not batch_specific(_table({"0": [just - 1, 101 - just], "1": [101 - just, just - 1]}))  # 79 %: not


def test_a_batch_holding_most_cells_fills_clusters_without_being_named():
    # batch a holds 90 % of all cells: clusters of 86 % and 94 % a are not halfway from 90 % to 100 %, though a
    # binomial test alone would call the 94 % one (2,000 cells) far beyond chance
    table = _table({"0": [1720, 280], "1": [1880, 120]})
    assert table["a"].sum() / table.to_numpy().sum() == pytest.approx(0.9)
    assert batch_specific(table) == []
    # 99 % is: past 95 %, and beyond chance
    assert [c for c, _, _ in batch_specific(_table({"0": [405, 95], "1": [495, 5]}))] == ["1"]


def test_small_clusters_are_named_only_beyond_chance():
    # of two equal batches, 11 cells all from one happen by chance with probability 0.5 ** 11; times 2 clusters x 2
    # batches: 0.002, not named; 12 cells: 0.00098, named
    assert batch_specific(_table({"0": [11, 0], "1": [500, 511]})) == []
    assert batch_specific(_table({"0": [12, 0], "1": [500, 512]}))[0][:2] == ("0", "a")
    # two cells of one of 40 batches are not named, however pure (the reviewer's case: 1 in 40 under chance)
    many = [f"b{i}" for i in range(40)]
    assert batch_specific(_table({"0": [2] + [0] * 39, "1": [50] * 40}, batches=many)) == []


def test_composition_keeps_empty_clusters_and_leaves_out_cells_without_cluster_or_batch():
    clusters = pd.Series(pd.Categorical(["0", "0", None, "1", "1"], categories=["0", "1", "2"]))
    batches = pd.Series(["a", "b", "a", None, "a"])
    record = batch_record(clusters, batches, "sample", warn=False)
    assert record["clusters"].tolist() == ["0", "1", "2"] and record["batches"].tolist() == ["a", "b"]
    assert record["counts"].tolist() == [[1, 1], [1, 0], [0, 0]]


# ----------------------------------------------------------------------------- the key
@pytest.mark.parametrize("values, words", [
    (None, ["'sample' is not a column of obs", "'cell_type'"]),
    ([np.nan] * 180, ["no batches", "missing"]),
    (["one"] * 180, ["one batch only", "'one'"]),
    ([f"cell{i}" for i in range(180)], ["cell ids"]),
    ([f"n{i % 60}" for i in range(180)], ["60 different values for 180 cells", "per-cell value"]),
])
def test_a_bad_batch_key_is_refused(values, words):
    a = toy_counts() if values is None else _with_batches(values)
    with pytest.raises(InputError) as err:
        check_batch_key(a, "sample")
    for w in words:
        assert w in str(err.value), str(err.value)


def test_keys_that_are_not_column_names_are_refused():
    a = _with_batches(["x", "y"] * 90)
    with pytest.raises(InputError, match="batch key \\['sample'\\] is not a column name"):
        scgpcl.tl.cluster(a, n_clusters=3, batch_key=["sample"], progress=False, **TINY)
    with pytest.raises(InputError, match="label key \\['cell_type'\\] is not a column name"):
        scgpcl.tl.cluster(a, n_clusters=3, label_key=["cell_type"], progress=False, **TINY)


def test_a_key_named_like_the_agreement_column_is_refused():
    # every clustering under key_added removes obs[key_added + '_agreement'] (an earlier run's): it would take the
    # batches or the labels with it
    a = _with_batches(["x", "y"] * 90)
    a.obs["scgpcl_agreement"] = a.obs["sample"]
    for kw in ({"batch_key": "scgpcl_agreement"}, {"label_key": "scgpcl_agreement"}):
        with pytest.raises(InputError, match="keeps its runs' agreement"):
            scgpcl.tl.cluster(a, n_clusters=3, progress=False, **kw, **TINY)
    assert "scgpcl_agreement" in a.obs


def test_batches_are_listed_in_their_natural_order():
    clusters = pd.Series(pd.Categorical(["0"] * 6))
    assert batch_record(clusters, pd.Series([10, 2, 1, 2, 10, 1]), "b", warn=False)["batches"].tolist() == \
        ["1", "2", "10"]
    ordered = pd.Series(pd.Categorical(["late", "early"] * 3, categories=["early", "mid", "late"]))
    assert batch_record(clusters, ordered, "b", warn=False)["batches"].tolist() == ["early", "late"]


def test_cluster_sizes_splits_by_at_most_20_labels():
    from scgpcl import pl

    from helpers import clustered

    a = clustered()
    a.obs["b"] = pd.Categorical([f"b{i % 60}" for i in range(a.n_obs)])
    fig = pl.cluster_sizes(a, label_key="b", match_colours=False)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(legend) == 20 and legend[-1] == "41 others"
    heights = sum(p.get_height() for p in fig.axes[0].patches)
    assert heights == a.obs["scgpcl"].notna().sum()  # every cell is still in a bar


def test_a_bad_batch_key_is_refused_before_training(monkeypatch):
    a = toy_counts()

    def no_training(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(scgpcl.SCGPCL, "train", no_training)
    with pytest.raises(InputError, match="batch key 'sample'"):
        scgpcl.tl.cluster(a, n_clusters=3, batch_key="sample", progress=False, **TINY)
    with pytest.raises(InputError, match="also the batch key"):
        scgpcl.tl.cluster(_with_batches(["x", "y"] * 90), n_clusters=3, batch_key="sample", key_added="sample",
                          progress=False, **TINY)
    assert "scgpcl" not in a.obs


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def clustered_by_batch():
    a = _one_type_in_its_own_batch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scgpcl.tl.cluster(a, n_clusters=3, batch_key="sample", label_key="cell_type", progress=False, **TINY)
    return a, [str(w.message) for w in caught]


def test_a_cluster_of_one_batch_is_warned_about_and_recorded(clustered_by_batch, tmp_path):
    a, caught = clustered_by_batch
    assert a.uns["scgpcl"]["metrics"]["ARI"] > 0.9  # the types are found: the s3 cluster is the first type
    said = [m for m in caught if "mostly of one batch" in m]
    assert len(said) == 1 and "'s3'" in said[0] and "does not remove batch effects" in said[0]
    rec = a.uns["scgpcl"]["batches"]
    assert rec["batch_key"] == "sample" and rec["batches"].tolist() == ["s1", "s2", "s3"]
    assert rec["specific_batch"].tolist() == ["s3"] and rec["specific_share"].tolist() == [1.0]
    assert rec["counts"].sum() == a.n_obs
    path = tmp_path / "c.h5ad"
    a.write_h5ad(path)
    back = ad.read_h5ad(path).uns["scgpcl"]["batches"]
    assert list(back["specific"]) == list(rec["specific"]) and np.array_equal(back["counts"], rec["counts"])


def test_no_warning_when_batches_are_mixed_and_the_empty_record_reads_back(tmp_path):
    a = toy_counts()
    a.obs["scgpcl"] = pd.Categorical(a.obs["cell_type"].astype(str))
    batches = pd.Series(np.tile(["s1", "s2"], a.n_obs // 2), index=a.obs_names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # pandas 1.5's crosstab calls NumPy functions that NumPy 1.25 deprecates: not this test's concern
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(pandas|numpy)\.")
        rec = batch_record(a.obs["scgpcl"], batches, "sample")
    assert rec["specific"].size == 0
    a.uns["scgpcl"] = {"batches": rec}
    a.write_h5ad(tmp_path / "m.h5ad")
    assert ad.read_h5ad(tmp_path / "m.h5ad").uns["scgpcl"]["batches"]["specific"].size == 0


def test_the_report_splits_the_clusters_by_batch(clustered_by_batch, tmp_path):
    a, _ = clustered_by_batch
    out = write_report(a.copy(), tmp_path / "rep")  # the batch key the clustering was given
    page = (out / "index.html").read_text()
    assert "<h3>Batches</h3>" in page and "Cells per cluster, split by batch (sample)" in page
    assert "cells across the clusters (sample), as shares of the batch" in page
    assert page.count('src="data:image/png;base64,') == 7  # the five of test_report, the batches and each batch's composition
    table = pd.read_csv(out / "clusters.tsv", sep="\t")
    assert (table["sample"].to_numpy() == a.obs["sample"].astype(str).to_numpy()).all()
    record = json.loads((out / "metrics.json").read_text())
    assert record["batch_key"] == "sample"
    assert [d["batch"] for d in record["batch_specific_clusters"]] == ["s3"]
    assert sum(sum(row.values()) for row in record["cells_per_batch"].values()) == a.n_obs


def test_cli_batch_key(tmp_path, capsys, caplog, monkeypatch):
    src = tmp_path / "in.h5ad"
    _one_type_in_its_own_batch().write_h5ad(src)
    out = tmp_path / "out.h5ad"
    with monkeypatch.context() as m:  # refused before training, not by the record written after it
        m.setattr(scgpcl.SCGPCL, "train", lambda *a, **k: pytest.fail("trained"))
        assert main(["cluster", str(src), str(out), "-k", "3", "--batch-key", "smple", "--quiet", *TINY_ARGS]) == 2
        _one_line_error(capsys, "batch key 'smple' is not a column of obs", "'sample'", "--batch-key")
        assert main(["cluster", str(src), str(out), "-k", "3", "--batch-key", "sample", "--key-added", "sample",
                     "--quiet", *TINY_ARGS]) == 2
        _one_line_error(capsys, "--key-added 'sample' is also the batch key")
    assert not out.exists()
    assert main(["cluster", str(src), str(out), "-k", "3", "--batch-key", "sample", "--report", str(tmp_path / "r0"),
                 "--quiet", *TINY_ARGS]) == 0
    # the command line logs warnings; once, though the report looks at the batches again
    assert caplog.text.count("mostly of one batch of obs['sample']") == 1
    assert ad.read_h5ad(out).uns["scgpcl"]["batches"]["batch_key"] == "sample"
    # 'scgpcl report' takes the recorded batch key, or another column
    assert main(["report", str(out), str(tmp_path / "rep"), "--quiet"]) == 0
    assert "split by batch (sample)" in (tmp_path / "rep" / "index.html").read_text()
    assert main(["report", str(out), str(tmp_path / "rep2"), "--batch-key", "nope", "--quiet"]) == 2
    _one_line_error(capsys, "batch key 'nope'")
    assert main(["report", str(out), str(tmp_path / "rep2"), "--batch-key", "scgpcl", "--quiet"]) == 2
    _one_line_error(capsys, "is the clustering itself")
    assert not (tmp_path / "rep2").exists()


def test_cells_without_a_batch_are_counted_once(tmp_path, caplog):
    # a new user's 20 cells without a batch were left out of the report's tables without a word
    a = _one_type_in_its_own_batch()
    a.obs["sample"] = a.obs["sample"].astype(object)
    a.obs.iloc[:7, a.obs.columns.get_loc("sample")] = None
    a.write_h5ad(tmp_path / "in.h5ad")
    assert main(["cluster", str(tmp_path / "in.h5ad"), str(tmp_path / "out.h5ad"), "-k", "3", "--batch-key",
                 "sample", "--report", str(tmp_path / "r"), "--quiet", *TINY_ARGS]) == 0
    said = f"7 of the {a.n_obs} cells have no batch in obs['sample'] (missing values): they are clustered, but left " \
           "out of the clusters' batch composition"
    assert caplog.text.count(said) == 1
    b = _one_type_in_its_own_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every cell has a batch: no warning
        check_batch_key(b, "sample", warn_missing=True)
    b.obs["sample"] = b.obs["sample"].astype(object)
    b.obs.iloc[:2, b.obs.columns.get_loc("sample")] = np.nan
    with pytest.warns(UserWarning, match=rf"^2 of the {b.n_obs} cells have no batch"):
        check_batch_key(b, "sample", warn_missing=True)


def test_a_recorded_batch_column_changed_since_is_left_out_of_the_report(clustered_by_batch, tmp_path, caplog):
    a = clustered_by_batch[0].copy()
    a.obs["sample"] = "one"  # a single batch now: nothing to compare
    out = write_report(a, tmp_path / "rep")
    assert "<h3>Batches</h3>" not in (out / "index.html").read_text()
    assert "leaves out the batches" in caplog.text and "one batch only" in caplog.text
