"""Defects a first-time user hit in a review (2026-12): each test failed before its fix."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scgpcl import SCGPCL, InputError, tl
from scgpcl.cli import main
from helpers import QUICK, TINY, toy_counts

TINY_ARGS = ["--lr", str(TINY["lr"]), "--pretrain-rounds", "3", "--warmup-rounds", "1", "--finetune-rounds", "2"]


@pytest.fixture(scope="module")
def toy():
    return toy_counts(n_per=20, n_genes=60)


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory, toy):
    path = tmp_path_factory.mktemp("review") / "toy.h5ad"
    toy.write_h5ad(path)
    return path


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scgpcl: error:"), err
    for w in words:
        assert w in err[0], err[0]


def test_key_added_with_a_slash_is_refused_before_training(toy_file, toy, tmp_path, capsys):
    # '--key-added a/b' used to train, exit 0 and write an .h5ad that anndata could not read back
    out = tmp_path / "out.h5ad"
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--key-added", "a/b", "--quiet", *TINY_ARGS])
    assert code == 2
    _one_line_error(capsys, "'/'", "--key-added")
    assert not out.exists()
    with pytest.raises(InputError, match="'/'"):
        tl.cluster(toy.copy(), n_clusters=3, key_added="a/b", progress=False, **TINY)


@pytest.fixture
def locked(tmp_path, monkeypatch):
    """A folder that os.access reports as not writable (chmod does not stop root, so patch it)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == folder.resolve() and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)

    def no_training(self, **kwargs):
        raise AssertionError("training started although the output cannot be written")

    monkeypatch.setattr(SCGPCL, "train", no_training)
    return folder


def test_unwritable_output_folders_are_refused_before_training(toy_file, tmp_path, locked, capsys):
    # the PermissionError used to come only after training, naming a hidden temporary file
    code = main(["cluster", str(toy_file), str(locked / "out.h5ad"), "-k", "3", "--quiet", *TINY_ARGS])
    assert code == 2
    _one_line_error(capsys, str(locked), "permission")

    code = main(["cluster", str(toy_file), str(tmp_path / "out.h5ad"), "-k", "3", "--quiet",
                 "--save-model", str(locked / "model"), *TINY_ARGS])
    assert code == 2
    _one_line_error(capsys, str(locked), "permission")
    assert not (tmp_path / "out.h5ad").exists()


def test_unwritable_markers_output_is_refused(toy, tmp_path, locked, capsys):
    clustered = toy.copy()
    clustered.obs["scgpcl"] = pd.Categorical(clustered.obs["cell_type"].astype(str))
    path = tmp_path / "clustered.h5ad"
    clustered.write_h5ad(path)
    code = main(["markers", str(path), "--n-genes", "2", "--output", str(locked / "m.tsv"), "--quiet"])
    assert code == 2
    _one_line_error(capsys, str(locked), "permission")
    assert list(locked.iterdir()) == []


def test_simulate_refuses_an_output_that_is_not_h5ad(tmp_path, capsys):
    # 'scgpcl simulate counts.csv' wrote an HDF5 file named .csv, which 'scgpcl cluster' then read as text
    out = tmp_path / "counts.csv"
    code = main(["simulate", str(out), "--n-cells", "20", "--n-genes", "30"])
    assert code == 2
    _one_line_error(capsys, ".h5ad")
    assert not out.exists()


def test_model_trained_on_non_string_gene_names_loads_again(toy, tmp_path):
    # save() stored the names as strings and load() compared them with the integers: "lacks all genes"
    a = toy.copy()
    with warnings.catch_warnings():  # anndata warns that it expects strings, and keeps the integers
        warnings.simplefilter("ignore")
        a.var_names = pd.Index(np.arange(a.n_vars))
    assert not isinstance(a.var_names[0], str)
    model = SCGPCL(a, 3, random_state=0, **TINY).train(progress=False)
    model.save(tmp_path / "model")
    again = SCGPCL.load(tmp_path / "model", a)
    np.testing.assert_array_equal(again.predict(), model.predict())


def test_x_none_points_to_the_layers(toy):
    a = toy.copy()
    a.layers["counts"] = a.X.copy()
    a.X = None
    # used to say "X must be a 2-d cells x genes matrix, got 0 dimension(s)"
    with pytest.raises(InputError, match=r"adata\.X is None.*layer=.*'counts'"):
        tl.cluster(a, n_clusters=3, progress=False, **TINY)


def test_reclustering_drops_the_umap_of_the_previous_clustering(toy):
    # obsm['X_scgpcl_umap'] (from pl.umap or --report) survived a new clustering under the same key,
    # so the stored UMAP no longer matched obsm['X_scgpcl'] or obs['scgpcl']
    a = toy.copy()
    a.obsm["X_scgpcl_umap"] = np.zeros((a.n_obs, 2), dtype=np.float32)
    a.obsm["X_other_umap"] = np.zeros((a.n_obs, 2), dtype=np.float32)
    tl.cluster(a, n_clusters=3, progress=False, **TINY)
    assert "X_scgpcl_umap" not in a.obsm
    assert "X_other_umap" in a.obsm


def test_markers_table_gets_the_usual_file_permissions(toy, tmp_path):
    # the table was written through mkstemp and kept its 0600 mode: unreadable by the group on a
    # shared server, unlike the .h5ad, the report and the simulated data
    clustered = toy.copy()
    clustered.obs["scgpcl"] = pd.Categorical(clustered.obs["cell_type"].astype(str))
    path = tmp_path / "clustered.h5ad"
    clustered.write_h5ad(path)
    out = tmp_path / "markers.tsv"
    old = os.umask(0o022)
    try:
        assert main(["markers", str(path), "--n-genes", "2", "--output", str(out), "--quiet"]) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_markers_say_why_when_every_cluster_is_a_single_cell(toy):
    # K = number of cells: the error said "need at least two clusters" although there were 60
    a = toy.copy()
    a.obs["scgpcl"] = pd.Categorical([str(i) for i in range(a.n_obs)])
    with pytest.warns(UserWarning, match="fewer than 2 cells"), pytest.raises(InputError, match="2 or more cells"):
        tl.markers(a, n_genes=2)


def test_auto_k_options_with_a_fixed_k_are_reported_and_scored_cells_counted(toy, tmp_path, capsys, caplog):
    # '--auto-k-method' with '-k 3' was silently ignored; the metrics line did not say how many cells had a label
    a = toy.copy()
    cell_type = a.obs["cell_type"].astype(object)
    cell_type.iloc[:7] = None  # 7 cells without a reference label
    a.obs["cell_type"] = pd.Categorical(cell_type)
    path = tmp_path / "partial.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "out.h5ad"
    with caplog.at_level("WARNING", logger="scgpcl"):
        code = main(["cluster", str(path), str(out), "-k", "3", "--auto-k-method", "eigengap", "--label-key",
                     "cell_type", "--quiet", *TINY_ARGS])
    assert code == 0
    assert any("--auto-k-method ignored" in r.getMessage() and "--n-clusters auto" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert f"({a.n_obs - 7} of {a.n_obs} cells labelled)" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["h5ad", "report"])
def test_ctrl_c_while_writing_says_what_was_written(toy_file, tmp_path, monkeypatch, capsys, where):
    # a Ctrl-C during the report said "no output written" although the .h5ad was complete on disk
    import scgpcl.data._io as io
    import scgpcl.report as report

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(io if where == "h5ad" else report, "write_h5ad_atomic" if where == "h5ad" else "write_report",
                        interrupt)
    out, rep = tmp_path / "out.h5ad", tmp_path / "rep"
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--report", str(rep), "--quiet", *TINY_ARGS])
    assert code == 130
    err = capsys.readouterr().err.strip()
    if where == "h5ad":
        assert err == "scgpcl: interrupted; no output written" and not out.exists()
    else:
        assert "already written and complete" in err and str(out) in err and out.exists()
        assert not (rep / "index.html").exists()


def test_report_without_markers_when_every_cluster_is_a_single_cell(toy, tmp_path):
    # K = number of cells: the report failed as a whole because no cluster can be tested for markers
    from scgpcl.report import write_report

    a = toy.copy()
    tl.cluster(a, n_clusters=a.n_obs, label_key="cell_type", progress=False, **TINY)
    a.obs["scgpcl"] = pd.Categorical([str(i) for i in range(a.n_obs)])  # one cell each, whatever DEC kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_report(a, tmp_path / "rep", key="scgpcl", label_key="cell_type")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "No marker genes:" in page and "2 or more cells" in page
    assert (tmp_path / "rep" / "metrics.json").exists()
    # only a clustering without testable clusters is reported this way; a bad argument is still an error
    a.obs["scgpcl"] = pd.Categorical(a.obs["cell_type"].astype(str))
    with pytest.raises(InputError, match="n_genes must be >= 1"):
        write_report(a, tmp_path / "rep2", key="scgpcl", label_key="cell_type", n_markers=0)
    assert not (tmp_path / "rep2").exists()
