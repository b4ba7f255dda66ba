"""Marker genes: scgpcl.tl.markers and the 'scgpcl markers' command."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scgpcl
from scgpcl import InputError, tl
from scgpcl.cli import main
from scgpcl.cli import main as cli_main

from helpers import TINY, _one_line_error, clustered


def _grouped(n_per=40, n_genes=60, seed=1) -> tuple[ad.AnnData, dict[str, list[str]]]:
    """Three groups, each with 5 strongly up-regulated genes of its own: clusters given, no training."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(1.0, size=(3 * n_per, n_genes)).astype(np.float32)
    up = {}
    for g in range(3):
        genes = list(range(5 * g, 5 * g + 5))
        x[g * n_per:(g + 1) * n_per, genes] = rng.poisson(20.0, size=(n_per, 5))
        up[str(g)] = [f"g{j}" for j in genes]
    a = ad.AnnData(sp.csr_matrix(x))
    a.var_names = [f"g{j}" for j in range(n_genes)]
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.obs["scgpcl"] = pd.Categorical(np.repeat(["0", "1", "2"], n_per))
    return a, up


def test_markers_table_finds_the_up_regulated_genes():
    a, up = _grouped()
    before = a.X.copy()
    table = scgpcl.tl.markers(a, n_genes=5)
    assert list(table.columns) == ["cluster", "rank", "gene", "score", "logfoldchange", "pval_adj", "pct_cluster",
                                   "pct_rest"]
    assert len(table) == 15 and list(table["cluster"].cat.categories) == ["0", "1", "2"]
    for cl, df in table.groupby("cluster", observed=True):
        assert list(df["rank"]) == [1, 2, 3, 4, 5]
        assert set(df["gene"]) == set(up[cl])
        assert (np.diff(df["score"].to_numpy()) <= 0).all() and (df["logfoldchange"] > 1).all()
        # the fractions expressing, recomputed from the counts
        x = a[:, df["gene"].to_numpy()].X.toarray() > 0
        inside = (a.obs["scgpcl"] == cl).to_numpy()
        assert np.allclose(df["pct_cluster"], x[inside].mean(0)) and np.allclose(df["pct_rest"], x[~inside].mean(0))
    # no labels needed, and adata is left as it was
    assert "cell_type" not in a.obs and "rank_genes_groups" not in a.uns and "log1p" not in a.uns
    assert (a.X != before).nnz == 0


def test_markers_reads_the_counts_layer():
    a, up = _grouped()
    a.layers["counts"] = a.X.copy()
    a.X = a.X.multiply(0.5).tocsr()  # something that is not the counts
    table = scgpcl.tl.markers(a, n_genes=3, layer="counts")
    assert set(table.loc[table["cluster"] == "0", "gene"]) <= set(up["0"])
    with pytest.raises(InputError, match="nope"):
        scgpcl.tl.markers(a, layer="nope")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"key": "missing"}, "missing"), ({"n_genes": 0}, "n_genes")],
)
def test_markers_bad_input(kwargs, message):
    a, _ = _grouped()
    with pytest.raises(InputError, match=message):
        scgpcl.tl.markers(a, **kwargs)


def test_markers_refuse_scaled_data():
    a, _ = _grouped()
    a.X = a.X.toarray() - 1.0
    with pytest.raises(InputError, match="negative"):
        scgpcl.tl.markers(a)


def test_markers_on_a_trained_clustering():
    a = clustered()
    table = scgpcl.tl.markers(a, n_genes=2)
    assert len(table) == 6 and table["gene"].isin(a.var_names).all()


def test_markers_cli(tmp_path, capsys):
    a, up = _grouped()
    path = tmp_path / "clustered.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "markers.tsv"
    assert main(["markers", str(path), "--n-genes", "4", "--output", str(out), "--quiet"]) == 0
    table = pd.read_csv(out, sep="\t", dtype={"cluster": str})
    assert list(table.columns) == ["cluster", "rank", "gene", "score", "logfoldchange", "pval_adj", "pct_cluster",
                                   "pct_rest"]
    assert len(table) == 12 and set(table.loc[table["cluster"] == "2", "gene"]) <= set(up["2"])
    assert "wrote" in capsys.readouterr().out
    # without --output the table goes to stdout
    assert main(["markers", str(path), "--n-genes", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split("\t")[:3] == ["cluster", "rank", "gene"] and len(printed) == 4


def test_markers_cli_missing_key(tmp_path, capsys):
    a, _ = _grouped()
    path = tmp_path / "clustered.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "markers.tsv"
    assert main(["markers", str(path), "--key", "leiden", "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "leiden" in err[0]
    assert not out.exists() and list(tmp_path.iterdir()) == [path]


def test_markers_output_never_replaces_the_input_or_an_existing_file(tmp_path, capsys, monkeypatch):
    # 'scgpcl markers c.h5ad -o c.h5ad' replaced the clustered .h5ad with a 1.5 KB table, exit 0
    a, _ = _grouped()
    path = tmp_path / "c.h5ad"
    a.write_h5ad(path)
    before = path.read_bytes()

    def no_work(*args, **kwargs):
        raise AssertionError("markers computed although the output is refused")

    monkeypatch.setattr(scgpcl.tl, "markers", no_work)
    for extra in ([], ["--overwrite"]):
        assert main(["markers", str(path), "-o", str(path), "--quiet", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is the input file" in err[0] and "c_markers.tsv" in err[0]
        assert path.read_bytes() == before
    # the same file under another name (a relative path) is still the input
    monkeypatch.chdir(tmp_path)
    assert main(["markers", str(path), "-o", "c.h5ad", "--overwrite", "--quiet"]) == 2
    assert path.read_bytes() == before and "is the input file" in capsys.readouterr().err
    # another existing file: only with --overwrite, as every other command
    table = tmp_path / "markers.tsv"
    table.write_text("an earlier table\n")
    assert main(["markers", str(path), "-o", str(table), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and table.read_text() == "an earlier table\n"
    # a table named .h5ad would be read as AnnData by the next command
    assert main(["markers", str(path), "-o", str(tmp_path / "other.h5ad"), "--quiet"]) == 2
    assert "a name ending in .tsv or .csv" in capsys.readouterr().err and not (tmp_path / "other.h5ad").exists()
    monkeypatch.undo()
    assert main(["markers", str(path), "-o", str(table), "--overwrite", "--quiet", "--n-genes", "2"]) == 0
    assert table.read_text().startswith("cluster\trank\tgene") and path.read_bytes() == before


def test_missing_key_lists_the_columns_and_names_the_flag(tmp_path, capsys):
    # 'markers --key nope' said "run scgpcl.tl.cluster(adata, ...) first (or pass key=)" and listed nothing
    a, _ = _grouped()
    a.obs["leiden"] = a.obs["scgpcl"]
    path = tmp_path / "clustered.h5ad"
    a.write_h5ad(path)
    assert main(["markers", str(path), "--key", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "obs columns: 'scgpcl', 'leiden'" in err[0] and "--key" in err[0]
    assert "key=" not in err[0] and "tl.cluster" not in err[0] and "scgpcl cluster" in err[0]
    # from Python the same problem names the Python argument
    with pytest.raises(InputError, match=r"obs columns: 'scgpcl', 'leiden'.*key=.*scgpcl\.tl\.cluster"):
        scgpcl.tl.markers(a, key="nope")


def test_markers_and_report_read_files_without_x(small_toy, tmp_path):
    a = small_toy.copy()
    tl.cluster(a, n_clusters=3, random_state=0, progress=False, **TINY)
    a.layers["counts"] = a.X.copy()
    a.uns["scgpcl"]["params"]["layer"] = "counts"
    a.X = None
    path = tmp_path / "clustered.h5ad"
    a.write_h5ad(path)
    tsv = tmp_path / "m.tsv"
    assert cli_main(["markers", str(path), "--layer", "counts", "-o", str(tsv), "--quiet"]) == 0
    assert tsv.read_text().count("\n") > 3
    assert cli_main(["markers", str(path), "-o", str(tsv), "--overwrite", "--quiet"]) == 0  # the layer the clustering used


def test_unwritable_markers_output_is_refused(small_toy, tmp_path, locked, capsys):
    clustered = small_toy.copy()
    clustered.obs["scgpcl"] = pd.Categorical(clustered.obs["cell_type"].astype(str))
    path = tmp_path / "clustered.h5ad"
    clustered.write_h5ad(path)
    code = main(["markers", str(path), "--n-genes", "2", "--output", str(locked / "m.tsv"), "--quiet"])
    assert code == 2
    _one_line_error(capsys, str(locked), "permission")
    assert list(locked.iterdir()) == []


def test_markers_table_gets_the_usual_file_permissions(small_toy, tmp_path):
    # the table was written through mkstemp and kept its 0600 mode: unreadable by the group on a
    # shared server, unlike the .h5ad, the report and the simulated data
    clustered = small_toy.copy()
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


def test_markers_say_why_when_every_cluster_is_a_single_cell(small_toy):
    # K = number of cells: the error said "need at least two clusters" although there were 60
    a = small_toy.copy()
    a.obs["scgpcl"] = pd.Categorical([str(i) for i in range(a.n_obs)])
    with pytest.warns(UserWarning, match="fewer than 2 cells"), pytest.raises(InputError, match="2 or more cells"):
        tl.markers(a, n_genes=2)


def test_markers_output_named_csv_is_comma_separated(tmp_path):
    # '-o markers.csv' wrote tab-separated text into the .csv, one column in a spreadsheet
    a, _ = _grouped()
    path = tmp_path / "clustered.h5ad"
    a.write_h5ad(path)
    assert main(["markers", str(path), "-o", str(tmp_path / "m.csv"), "--quiet"]) == 0
    assert main(["markers", str(path), "-o", str(tmp_path / "m.tsv"), "--quiet"]) == 0
    as_csv = pd.read_csv(tmp_path / "m.csv")
    as_tsv = pd.read_csv(tmp_path / "m.tsv", sep="\t")
    assert as_csv.shape[1] > 1 and "\t" not in (tmp_path / "m.csv").read_text()
    pd.testing.assert_frame_equal(as_csv, as_tsv)


def test_markers_and_the_report_on_a_backed_anndata_say_to_load_it(tmp_path):
    # tl.markers failed with numpy's IndexError (a 0-d array), write_report with an AttributeError
    from scgpcl.report import write_report

    a = clustered()
    a.write_h5ad(tmp_path / "c.h5ad")
    backed = ad.read_h5ad(tmp_path / "c.h5ad", backed="r")
    try:
        with pytest.raises(InputError, match=r"X is stored on disk \(a backed AnnData.*adata\.to_memory\(\)"):
            tl.markers(backed)
        with pytest.raises(InputError, match=r"X is stored on disk \(a backed AnnData.*adata\.to_memory\(\)"):
            write_report(backed, tmp_path / "rep")
        assert not (tmp_path / "rep").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["c.h5ad"]
    finally:
        backed.file.close()
    assert len(tl.markers(ad.read_h5ad(tmp_path / "c.h5ad"))) > 0  # in memory: the table


def test_many_clusters_do_not_flood_the_output_with_pandas_performance_warnings():
    """From ~40 clusters scanpy's rank_genes_groups made pandas warn "DataFrame is highly fragmented" about a
    hundred times per call (200 lines of a report at K = 60)."""
    import warnings

    rng = np.random.default_rng(0)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, size=(900, 60)).astype(np.float32)))
    a.obs["k"] = pd.Categorical((np.arange(900) % 45).astype(str))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = tl.markers(a, key="k", n_genes=2)
    assert not [w for w in caught if issubclass(w.category, pd.errors.PerformanceWarning)]
    assert table["cluster"].nunique() == 45
