"""Reading counts from every supported format, and atomic h5ad writing."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import anndata
import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from scgpcl import SCGPCL
from scgpcl._errors import InputError
from scgpcl.cli import main as cli_main
from scgpcl.data._checks import check_counts
from scgpcl.data._io import read_counts, write_h5ad_atomic

from helpers import needs_zarr, write_10x_mtx

N_CELLS, N_GENES = 12, 7


@pytest.fixture
def counts() -> np.ndarray:
    """Small cells x genes integer count matrix with zeros and a large value."""
    rng = np.random.default_rng(0)
    x = rng.poisson(1.5, size=(N_CELLS, N_GENES)).astype(np.int64)
    x[0, 0] = 123456  # exact in float32, must survive every reader
    return x


@pytest.fixture
def cells() -> list[str]:
    return [f"AAAC{i:02d}-1" for i in range(N_CELLS)]


@pytest.fixture
def genes() -> list[str]:
    return [f"Gene{j}" for j in range(N_GENES)]


def assert_counts(adata: anndata.AnnData, counts, cells, genes) -> None:
    assert isinstance(adata.X, sp.csr_matrix)
    assert adata.X.dtype == np.float32
    assert adata.X.has_canonical_format
    np.testing.assert_array_equal(adata.X.toarray(), counts)
    assert list(adata.obs_names) == list(cells)
    assert list(adata.var_names) == list(genes)


# --------------------------------------------------------------------------- writers


def write_10x_h5(path, counts, cells, genes, *, extra_antibody: bool = False) -> None:
    """10x Cell Ranger v3 layout: genes x cells CSC under /matrix."""
    names = list(genes) + (["CD3_TotalSeqB"] if extra_antibody else [])
    matrix = counts
    if extra_antibody:
        matrix = np.hstack([counts, np.full((counts.shape[0], 1), 5)])
    csc = sp.csc_matrix(matrix.T.astype(np.int32))  # genes x cells, one column per cell
    kinds = ["Gene Expression"] * len(genes) + (["Antibody Capture"] if extra_antibody else [])
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(cells, dtype="S")
        m["data"] = csc.data
        m["indices"] = csc.indices.astype(np.int64)
        m["indptr"] = csc.indptr.astype(np.int64)
        m["shape"] = np.array(csc.shape, dtype=np.int32)
        feat = m.create_group("features")
        feat["id"] = np.array([f"ENSG{j:05d}" for j in range(len(names))], dtype="S")
        feat["name"] = np.array(names, dtype="S")
        feat["feature_type"] = np.array(kinds, dtype="S")
        feat["genome"] = np.array(["GRCh38"] * len(names), dtype="S")
        feat["_all_tag_keys"] = np.array([b"genome"])


def write_table(path, counts, rows, cols, *, sep: str) -> None:
    frame = pd.DataFrame(counts, index=rows, columns=cols)
    frame.to_csv(path, sep=sep)


def write_xy_h5(path, counts, labels, **extra) -> None:
    with h5py.File(path, "w") as f:
        f["X"] = counts
        if labels is not None:
            f["Y"] = labels
        for key, value in extra.items():
            f[key] = value


# --------------------------------------------------------------------------- h5ad


def test_h5ad_roundtrip_sparse(tmp_path, counts, cells, genes):
    path = tmp_path / "in.h5ad"
    adata = anndata.AnnData(
        sp.csr_matrix(counts.astype(np.float32)),
        obs=pd.DataFrame({"cell_type": pd.Categorical(["a", "b"] * 6)}, index=cells),
        var=pd.DataFrame(index=genes),
    )
    adata.uns["note"] = "kept"
    adata.write_h5ad(path)
    out = read_counts(path, label_key="cell_type")
    assert_counts(out, counts, cells, genes)
    assert list(out.obs["cell_type"]) == ["a", "b"] * 6
    assert out.uns["note"] == "kept"


def test_h5ad_dense_x_becomes_csr(tmp_path, counts, cells, genes):
    path = tmp_path / "dense.h5ad"
    anndata.AnnData(
        counts.astype(np.float64), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes)
    ).write_h5ad(path)
    assert_counts(read_counts(path), counts, cells, genes)


def test_h5ad_layer_stays_a_layer_and_x_is_kept(tmp_path, counts, cells, genes):
    path = tmp_path / "layered.h5ad"
    normalised = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)
    adata = anndata.AnnData(normalised, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes))
    adata.layers["counts"] = counts.astype(np.int64)  # dense integers: converted to float32 CSR
    adata.layers["other"] = normalised
    adata.write_h5ad(path)
    out = read_counts(path, layer="counts")
    np.testing.assert_array_equal(np.asarray(out.X), normalised)  # the file's X, untouched
    assert set(out.layers) == {"counts", "other"}
    c = out.layers["counts"]
    assert sp.isspmatrix_csr(c) and c.dtype == np.float32 and c.has_canonical_format
    np.testing.assert_array_equal(c.toarray(), counts)


def test_h5ad_counts_only_in_a_layer(tmp_path, counts):
    path = tmp_path / "no_x.h5ad"
    adata = anndata.AnnData(shape=counts.shape)
    adata.layers["counts"] = sp.csr_matrix(counts.astype(np.float32))
    adata.write_h5ad(path)
    out = read_counts(path, layer="counts")
    assert out.X is None
    np.testing.assert_array_equal(out.layers["counts"].toarray(), counts)


def test_h5ad_unknown_layer_lists_layers_and_x(tmp_path, counts):
    path = tmp_path / "layered.h5ad"
    adata = anndata.AnnData(counts.astype(np.float32))
    adata.layers["counts"] = counts.astype(np.float32)
    adata.write_h5ad(path)
    with pytest.raises(InputError, match=r"layer 'spliced' not found.*'counts'.*X \(layer=None\)"):
        read_counts(path, layer="spliced")


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_duplicate_names_made_unique(tmp_path, counts, cells):
    path = tmp_path / "dup.h5ad"
    genes = ["A", "A", "B", "C", "C", "C", "D"]
    anndata.AnnData(
        counts.astype(np.float32), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes)
    ).write_h5ad(path)
    # a warning, not an INFO line that --quiet hides: the renamed genes no longer join with other tables
    with pytest.warns(UserWarning, match=r"renamed 3 duplicated gene names .*'A' -> 'A-1'.*will not match"):
        out = read_counts(path)
    assert out.var_names.is_unique
    assert list(out.var_names) == ["A", "A-1", "B", "C", "C-1", "C-2", "D"]


# --------------------------------------------------------------------------- AnnData .zarr


@pytest.mark.filterwarnings("ignore:Writing zarr v2 data")
@needs_zarr
def test_zarr_store_reads_like_h5ad(tmp_path, counts, cells, genes):
    store = tmp_path / "data.zarr"
    adata = anndata.AnnData(counts.astype(np.float32), obs=pd.DataFrame({"cell_type": ["a", "b"] * 6}, index=cells),
                            var=pd.DataFrame(index=genes))
    adata.layers["counts"] = sp.csr_matrix(counts.astype(np.float32))
    adata.write_zarr(store)
    assert_counts(read_counts(store, label_key="cell_type"), counts, cells, genes)
    out = read_counts(store, layer="counts")
    np.testing.assert_array_equal(out.layers["counts"].toarray(), counts)
    flipped = read_counts(store, genes_as_rows=True)  # a store written genes x cells is read transposed
    assert flipped.shape == (N_GENES, N_CELLS) and list(flipped.obs_names) == genes


@pytest.mark.filterwarnings("ignore:Writing zarr v2 data")
@needs_zarr
def test_zarr_store_counts_in_raw(tmp_path, counts, cells, genes):
    store = tmp_path / "norm"  # no .zarr suffix: told from a 10x folder by its zarr metadata
    adata = anndata.AnnData(counts.astype(np.float32), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes))
    adata.raw = adata.copy()
    adata.X = np.log1p(adata.X)
    adata.write_zarr(store)
    assert_counts(read_counts(store, use_raw=True), counts, cells, genes)


@needs_zarr  # without zarr the store is refused first for that (the next test)
def test_a_zarr_store_that_is_not_anndata_is_named(tmp_path):
    store = tmp_path / "other.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("not json")
    with pytest.raises(InputError, match=r"cannot read .*other\.zarr.*AnnData \.zarr store"):
        read_counts(store)


def test_a_zarr_store_without_the_zarr_package_names_the_install(tmp_path, monkeypatch):
    # anndata 0.11 does not install zarr: its read_zarr failed with "zarr is not installed. Is it a valid
    # AnnData .zarr store?", which sent the user to check a good file
    import importlib.metadata
    import importlib.util

    store = tmp_path / "data.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{}")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "zarr" else real(name, *a))
    real_version = importlib.metadata.version
    for anndata_version, install in (("0.11.4", "pip install 'zarr<3'"), ("0.12.19", "pip install zarr ")):
        monkeypatch.setattr(importlib.metadata, "version",
                            lambda name, v=anndata_version: v if name == "anndata" else real_version(name))
        with pytest.raises(InputError, match=r"cannot read .*data\.zarr.*needs the zarr package") as err:
            read_counts(store)
        assert install in str(err.value), (anndata_version, str(err.value))


def test_loom_names_the_conversion(tmp_path):
    path = tmp_path / "velocyto.loom"
    path.write_bytes(b"\x89HDF")
    with pytest.raises(InputError, match=r"loom file.*anndata\.io\.read_loom.*write_h5ad"):
        read_counts(path)


def test_checksum_of_a_store_covers_every_file(tmp_path):
    from scgpcl._machine import sha256_of

    store = tmp_path / "s.zarr"
    (store / "X").mkdir(parents=True)
    (store / ".zgroup").write_text("{}")
    (store / "X" / "0.0").write_bytes(b"chunk")
    first = sha256_of(store)
    assert isinstance(first, str) and len(first) == 64
    (store / "X" / "0.0").write_bytes(b"chunk!")  # a changed chunk deep in the tree
    assert sha256_of(store) != first
    outside = tmp_path / "chunks"  # a subfolder linked into the store is followed
    (store / "X").rename(outside)
    (store / "X").symlink_to(outside)
    linked = sha256_of(store)
    assert linked == sha256_of(store)
    (outside / "0.0").write_bytes(b"other")
    assert sha256_of(store) != linked
    flat = tmp_path / "tenx"
    (flat / ".ipynb_checkpoints").mkdir(parents=True)  # Jupyter's folder does not make it a tree
    (flat / "matrix.mtx").write_text("%")
    assert set(sha256_of(flat)) == {"matrix.mtx"}  # a 10x folder keeps its digest per file


def test_zipped_zarr_and_10x_folder_named_zarr(tmp_path, counts, cells, genes):
    zipped = tmp_path / "data.zarr"
    zipped.write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match="is a file, not a folder: a zipped zarr store"):
        read_counts(zipped)
    folder = tmp_path / "tenx.zarr"  # no zarr metadata, a matrix.mtx: a 10x folder, whatever its name
    write_10x_mtx(folder, counts, cells, genes)
    assert_counts(read_counts(folder), counts, cells, genes)


# --------------------------------------------------------------------------- 10x


def test_10x_h5_roundtrip_keeps_gene_expression_only(tmp_path, counts, cells, genes):
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    write_10x_h5(path, counts, cells, genes, extra_antibody=True)
    out = read_counts(path)
    assert_counts(out, counts, cells, genes)
    assert "CD3_TotalSeqB" not in out.var_names


def test_10x_mtx_folder_roundtrip(tmp_path, counts, cells, genes):
    folder = tmp_path / "filtered_feature_bc_matrix"
    write_10x_mtx(folder, counts, cells, genes)
    assert_counts(read_counts(folder), counts, cells, genes)


def test_10x_mtx_file_with_prefix(tmp_path, counts, cells, genes):
    folder = tmp_path / "geo"
    write_10x_mtx(folder, counts, cells, genes, prefix="GSM1_")
    assert_counts(read_counts(folder / "GSM1_matrix.mtx.gz"), counts, cells, genes)


def test_10x_mtx_folders_as_geo_holds_them(tmp_path, counts, cells, genes):
    # features.tsv.gz without its type column failed with "cannot read ...: 2." (scanpy's KeyError: 2); a
    # gzipped Cell Ranger v2 folder was refused; a folder of GSM123_-named files was refused
    import gzip

    two = tmp_path / "two_columns"
    write_10x_mtx(two, counts, cells, genes)
    with gzip.open(two / "features.tsv.gz", "wt") as handle:
        handle.write("".join(f"ENSG{j:05d}\t{g}\n" for j, g in enumerate(genes)))
    out = read_counts(two)
    assert_counts(out, counts, cells, genes)
    assert out.var["gene_ids"].iloc[0] == "ENSG00000"
    one = tmp_path / "one_column"
    write_10x_mtx(one, counts, cells, genes)
    with gzip.open(one / "features.tsv.gz", "wt") as handle:
        handle.write("".join(f"{g}\n" for g in genes))
    assert_counts(read_counts(one), counts, cells, genes)
    v2 = tmp_path / "v2_gzipped"
    write_10x_mtx(v2, counts, cells, genes)
    (v2 / "features.tsv.gz").rename(v2 / "genes.tsv.gz")
    assert_counts(read_counts(v2), counts, cells, genes)
    geo = tmp_path / "geo"
    write_10x_mtx(geo, counts, cells, genes, prefix="GSM123_")
    assert_counts(read_counts(geo), counts, cells, genes)
    short = tmp_path / "short"  # the three files of two matrices: said, not a numpy error
    write_10x_mtx(short, counts, cells, genes)
    with gzip.open(short / "features.tsv.gz", "wt") as handle:
        handle.write("".join(f"ENSG{j:05d}\t{g}\n" for j, g in enumerate(genes[:-1])))
    with pytest.raises(InputError, match=r"holds a \d+ x \d+ matrix, but 'features.tsv.gz' lists \d+ genes and "
                                         r"'barcodes.tsv.gz' \d+ barcodes: the files are not of one matrix"):
        read_counts(short)
    write_10x_mtx(short, counts, cells, genes)
    with gzip.open(short / "barcodes.tsv.gz", "wt") as handle:  # the barcodes cut short
        handle.write("".join(f"{c}\n" for c in cells[:-2]))
    with pytest.raises(InputError, match=r"'barcodes.tsv.gz' \d+ barcodes"):
        read_counts(short)
    cells_rows = tmp_path / "cells_as_rows"  # stored cells x genes (GEO): read, not called a damaged download
    write_10x_mtx(cells_rows, counts, cells, genes)
    with gzip.open(cells_rows / "matrix.mtx.gz", "wb") as handle:
        scipy.io.mmwrite(handle, sp.coo_matrix(counts), field="integer")
    assert_counts(read_counts(cells_rows), counts, cells, genes)
    # that reader (scanpy.read_mtx and the lists) keeps the Gene Expression rows only, as read_10x_mtx does
    cite = tmp_path / "with_antibodies"
    with_ab = np.c_[counts, np.ones(len(cells), dtype=counts.dtype)]
    write_10x_mtx(cite, with_ab, cells, [*genes, "CD3_TotalSeqB"])
    with gzip.open(cite / "features.tsv.gz", "wt") as handle:
        handle.write("".join(f"ENSG{j:05d}\t{g}\tGene Expression\n" for j, g in enumerate(genes))
                     + "AB1\tCD3_TotalSeqB\tAntibody Capture\n")
    with gzip.open(cite / "matrix.mtx.gz", "wb") as handle:  # stored cells x genes: not scanpy's 10x reader
        scipy.io.mmwrite(handle, sp.coo_matrix(with_ab), field="integer")
    assert_counts(read_counts(cite), counts, cells, genes)


def test_10x_mtx_folder_incomplete(tmp_path, counts, cells, genes):
    folder = tmp_path / "broken"
    write_10x_mtx(folder, counts, cells, genes)
    (folder / "barcodes.tsv.gz").unlink()
    with pytest.raises(InputError, match=r"10x matrix folder.*barcodes\.tsv\.gz"):
        read_counts(folder)


# --------------------------------------------------------------------------- text


@pytest.mark.parametrize("name", ["in.tsv", "in.tsv.gz"])
def test_text_tables_are_utf8_whatever_the_locale(tmp_path, counts, cells, name, monkeypatch):
    # the header was read in the locale's encoding (cp1252 on Windows), the rest by pandas in UTF-8: gene names
    # were garbled ('Tcr\u03b2' read as 'Tcr\u00ce\u00b2'); a BOM is not part of the first name
    import builtins
    import gzip

    genes = ["Tcr\u03b2", "\u00c1csl1", *[f"G{j}" for j in range(counts.shape[1] - 2)]]
    path = tmp_path / name
    text = "\ufeff" + "\t".join(["cell", *genes]) + "\n" + "".join(
        "\t".join([c, *map(str, row)]) + "\n" for c, row in zip(cells, counts.astype(int), strict=True))
    with (gzip.open(path, "wt", encoding="utf-8") if name.endswith(".gz") else open(path, "w", encoding="utf-8")) as f:
        f.write(text)
    real_open = builtins.open

    def windows_open(file, mode="r", *args, **kwargs):  # a locale whose encoding is not UTF-8
        if "b" not in mode and "encoding" not in kwargs and len(args) < 2:
            kwargs["encoding"] = "cp1252"
        return real_open(file, mode, *args, **kwargs)

    import scgpcl.data._io as io

    real_gzip_open = io.gzip.open

    def windows_gzip_open(file, mode="rb", *args, **kwargs):  # gzip's text mode takes the locale's encoding too
        if "t" in mode and "encoding" not in kwargs:
            kwargs["encoding"] = "cp1252"
        return real_gzip_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", windows_open)
    monkeypatch.setattr(io.gzip, "open", windows_gzip_open)
    out = read_counts(path, genes_as_rows=False)
    monkeypatch.undo()
    assert list(out.var_names) == genes and list(out.obs_names) == cells
    np.testing.assert_array_equal(out.X.toarray(), counts)


@pytest.mark.parametrize(("name", "sep"), [("in.csv", ","), ("in.tsv.gz", "\t"), ("in.txt", "\t")])
def test_text_cells_as_rows(tmp_path, counts, cells, genes, name, sep):
    path = tmp_path / name
    write_table(path, counts, cells, genes, sep=sep)
    assert_counts(read_counts(path), counts, cells, genes)


def test_csv_genes_as_rows_transposed(tmp_path, counts, cells, genes):
    path = tmp_path / "genes_x_cells.csv"
    write_table(path, counts.T, genes, cells, sep=",")
    assert_counts(read_counts(path, genes_as_rows=True), counts, cells, genes)
    # by default the orientation is read from the names ('Gene0' rows), with a warning
    with pytest.warns(UserWarning, match=r"read as genes x cells .*row names look like gene names.*genes_as_rows=False"):
        assert_counts(read_counts(path), counts, cells, genes)
    # an explicit orientation wins, with a warning that the names say otherwise
    with pytest.warns(UserWarning, match=r"genes_as_rows=False as asked.*pass genes_as_rows=True"):
        as_is = read_counts(path, genes_as_rows=False)
    assert as_is.shape == (N_GENES, N_CELLS)


def test_barcodes_read_as_genes_warn(tmp_path, counts):
    rng = np.random.default_rng(0)
    barcodes = ["".join(rng.choice(list("ACGT"), 16)) + "-1" for _ in range(counts.shape[0])]
    genes = [f"Gene{j}" for j in range(counts.shape[1])]
    path = tmp_path / "genes_x_cells.csv"
    write_table(path, counts.T, genes, barcodes, sep=",")
    with pytest.warns(UserWarning, match=r"genes_as_rows=False as asked.*column names look like cell names.*"
                                         r"pass genes_as_rows=True"):
        read_counts(path, genes_as_rows=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right orientation: no warning
        out = read_counts(path, genes_as_rows=True)
    assert list(out.obs_names) == barcodes


def test_csv_numeric_row_index_is_not_a_gene(tmp_path, counts, cells, genes):
    # pandas' DataFrame(counts, columns=genes).to_csv() writes the RangeIndex as an unnamed first
    # column of numbers; it must become the cell names, not a gene '' whose counts are 0, 1, 2, ...
    path = tmp_path / "range_index.csv"
    pd.DataFrame(counts, columns=genes).to_csv(path)
    out = read_counts(path)
    assert out.shape == counts.shape
    assert list(out.var_names) == genes
    assert list(out.obs_names) == [str(i) for i in range(N_CELLS)]
    np.testing.assert_array_equal(out.X.toarray(), counts)
    # genes as rows with numeric gene ids (e.g. Entrez) in an unnamed first column
    path = tmp_path / "entrez_rows.csv"
    pd.DataFrame(counts.T, index=[1000 + j for j in range(N_GENES)], columns=cells).to_csv(path)
    out = read_counts(path, genes_as_rows=True)
    assert out.shape == counts.shape
    assert list(out.var_names) == [str(1000 + j) for j in range(N_GENES)]
    assert list(out.obs_names) == cells
    np.testing.assert_array_equal(out.X.toarray(), counts)


def test_csv_numeric_column_names_are_not_a_data_row(tmp_path, counts, genes):
    # DataFrame(counts.T, index=genes).to_csv() writes the cells' integer names as the header ',0,1,2,...';
    # it must name the cells, not become a gene '' whose counts are 0, 1, 2, ...
    path = tmp_path / "numbered_cells.csv"
    pd.DataFrame(counts.T, index=genes).to_csv(path)
    out = read_counts(path, genes_as_rows=True)
    assert out.shape == counts.shape
    assert list(out.var_names) == genes
    assert list(out.obs_names) == [str(i) for i in range(N_CELLS)]
    np.testing.assert_array_equal(out.X.toarray(), counts)


def test_csv_not_numeric(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(",g1,g2\nc1,1,2\nc2,x,3\n")
    with pytest.raises(InputError, match=r"cannot read '.*bad\.csv'.*Is it a valid text table"):
        read_counts(path)


def test_csv_without_data_rows(tmp_path):
    path = tmp_path / "header_only.csv"
    path.write_text("g1,g2,g3\n")
    with pytest.raises(InputError, match=r"cannot read '.*header_only\.csv': it has no rows of numbers"):
        read_counts(path)


# --------------------------------------------------------------------------- benchmark X/Y


def test_xy_h5_roundtrip_numeric_labels(tmp_path, counts):
    path = tmp_path / "worm_neuron_cell.h5"
    labels = np.array([1.0, 2.0, 10.0] * 4)
    write_xy_h5(path, counts.astype(np.float64), labels)
    out = read_counts(path, label_key="cell_type")
    assert_counts(out, counts, [f"cell_{i}" for i in range(N_CELLS)], [f"gene_{j}" for j in range(N_GENES)])
    assert isinstance(out.obs["cell_type"].dtype, pd.CategoricalDtype)
    assert list(out.obs["cell_type"][:3]) == ["1", "2", "10"]
    assert list(out.obs["cell_type"].cat.categories) == ["1", "2", "10"]


def test_xy_h5_string_labels_and_names(tmp_path, counts, cells, genes):
    path = tmp_path / "bench.h5"
    labels = np.array([b"T cell", b"B cell"] * 6)
    write_xy_h5(
        path,
        counts.astype(np.int32),
        labels,
        gene_names=np.array(genes, dtype="S"),
        cell_names=np.array(cells, dtype="S"),
    )
    out = read_counts(path)
    assert_counts(out, counts, cells, genes)
    assert list(out.obs["cell_type"][:2]) == ["T cell", "B cell"]


def test_xy_h5_genes_as_rows(tmp_path, counts):
    path = tmp_path / "bench_t.h5"
    write_xy_h5(path, counts.T.astype(np.float32), np.arange(N_CELLS))
    out = read_counts(path, genes_as_rows=True)
    np.testing.assert_array_equal(out.X.toarray(), counts)
    assert out.obs["cell_type"].tolist() == [str(i) for i in range(N_CELLS)]


def test_xy_h5_label_length_mismatch(tmp_path, counts):
    path = tmp_path / "bench_bad.h5"
    write_xy_h5(path, counts, np.arange(N_CELLS - 1))
    with pytest.raises(InputError, match=r"labels 'Y' have shape \(11,\) but 'X' has 12 cells"):
        read_counts(path)


def test_xy_h5_label_mismatch_from_orientation_names_the_fix(tmp_path, counts):
    # X stored genes x cells: Y has one label per column, and the error says to pass genes_as_rows
    path = tmp_path / "bench_t.h5"
    write_xy_h5(path, counts.T.astype(np.float32), np.arange(N_CELLS))
    with pytest.raises(InputError, match=r"but 'X' has 7 cells.*genes_as_rows=True \(CLI: --genes-as-rows\)"):
        read_counts(path)
    path = tmp_path / "bench.h5"
    write_xy_h5(path, counts, np.arange(N_CELLS))
    with pytest.raises(InputError, match=r"X was transposed.*drop genes_as_rows \(CLI: --genes-as-rows\)"):
        read_counts(path, genes_as_rows=True)


def test_h5_of_unknown_layout_lists_keys(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["expression"] = np.ones((3, 3))
    with pytest.raises(InputError, match=r"neither a 10x Genomics .h5.*'expression'"):
        read_counts(path)


# --------------------------------------------------------------------------- bad input


def test_missing_file_named(tmp_path):
    path = tmp_path / "nope.h5ad"
    with pytest.raises(InputError, match=r"'.*nope\.h5ad' does not exist"):
        read_counts(path)


@pytest.mark.parametrize(
    ("name", "what"), [("junk.h5ad", r"\.h5ad \(AnnData\) file"), ("junk.h5", "HDF5 file")]
)
def test_random_bytes_refused(tmp_path, name, what):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(InputError, match=rf"cannot read '.*{name}': .*Is it a valid {what}\?"):
        read_counts(path)


def test_truncated_h5ad_refused(tmp_path, counts):
    path = tmp_path / "truncated.h5ad"
    anndata.AnnData(sp.csr_matrix(counts.astype(np.float32))).write_h5ad(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # it showed HDF5's eof numbers and asked whether the file was a valid .h5ad; the review of 2026-12-06
    # wanted the cause (an interrupted copy) and the fix
    with pytest.raises(InputError, match=r"cannot read '.*truncated\.h5ad': the file is incomplete \(truncated: "
                                         r".*so copy it again"):
        read_counts(path)


@pytest.mark.parametrize("name", ["empty.h5ad", "empty.h5"])
def test_an_empty_file_is_called_empty(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(InputError, match=rf"cannot read '.*{name}': the file is empty \(0 bytes\)"):
        read_counts(path)


def test_unsupported_extension_lists_formats(tmp_path):
    path = tmp_path / "table.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(InputError, match=r"unsupported input.*\.xlsx.*supported formats: \.h5ad.*\.csv"):
        read_counts(path)


def test_missing_label_key_lists_columns(tmp_path, counts):
    path = tmp_path / "in.h5ad"
    obs = pd.DataFrame({"louvain": ["0"] * N_CELLS, "batch": ["b"] * N_CELLS})
    obs.index = obs.index.astype(str)
    anndata.AnnData(counts.astype(np.float32), obs=obs).write_h5ad(path)
    with pytest.raises(InputError, match=r"label key 'cell_type' is not a column of obs.*'louvain', 'batch'"):
        read_counts(path, label_key="cell_type")


def test_misplaced_options_refused(tmp_path, counts, cells, genes):
    folder = tmp_path / "mtx"
    write_10x_mtx(folder, counts, cells, genes)
    with pytest.raises(InputError, match=r"layer='counts' applies only to AnnData input \(\.h5ad, \.zarr\)"):
        read_counts(folder, layer="counts")
    with pytest.raises(InputError, match=r"genes_as_rows=True applies only to text tables, AnnData files"):
        read_counts(folder, genes_as_rows=True)


def test_h5ad_stored_genes_x_cells_is_refused_naming_both_choices(tmp_path, counts, cells):
    """An AnnData made from an R export (genes in rows) would have its genes clustered: refused before training,
    unless the user says which way it is; genes_as_rows=True transposes it."""
    ens = [f"ENSG{j:011d}" for j in range(N_GENES)]
    path = tmp_path / "t.h5ad"
    anndata.AnnData(sp.csr_matrix(counts.T.astype(np.float32)), obs=pd.DataFrame(index=ens),
                    var=pd.DataFrame({"cell_type": ["a", "b"] * 6}, index=cells)).write_h5ad(path)
    with pytest.raises(InputError, match=r"'.*t\.h5ad' looks stored genes x cells \(7 rows x 12 columns: 12 cells\?\)"
                                         r", since the row names look like gene names \(e\.g\. 'ENSG00000000000'\).*"
                                         r"pass genes_as_rows=True to read it transposed.*pass genes_as_rows=False"):
        read_counts(path)
    out = read_counts(path, genes_as_rows=True)
    assert_counts(out, counts, cells, ens)
    assert list(out.obs["cell_type"]) == ["a", "b"] * 6  # the cells' annotations come along
    assert read_counts(path, genes_as_rows=False).shape == (N_GENES, N_CELLS)  # taken as it is, as asked
    # the same file the right way round is read without a word; told it is transposed, it is, with a warning
    right = tmp_path / "r.h5ad"
    anndata.AnnData(sp.csr_matrix(counts.astype(np.float32)), obs=pd.DataFrame(index=cells),
                    var=pd.DataFrame(index=ens)).write_h5ad(right)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_counts(read_counts(right), counts, cells, ens)
    with pytest.warns(UserWarning, match=r"'r\.h5ad' is read with genes_as_rows=True as asked, but the column names "
                                         r"look like gene names \(e\.g\. 'ENSG00000000000'\), which suggests the rows are cells"):
        assert read_counts(right, genes_as_rows=True).shape == (N_GENES, N_CELLS)


def test_cells_x_genes_files_the_counts_alone_would_doubt_are_read(tmp_path):
    """Found by fuzzing: unfiltered data with empty barcodes (which faked a spread of the cells' totals) and a
    targeted panel of a few genes over cells of very different depths were refused as genes x cells on the
    counts alone. The counts no longer overrule AnnData's convention without the names; empty rows no longer
    count in the spread."""
    rng = np.random.default_rng(0)
    x = rng.poisson(10 ** rng.normal(0, 0.2, 200)[:, None] * 10 ** rng.uniform(-0.5, 1, 100)[None, :])
    x[:25] = 0  # 12.5 % empty barcodes
    a = anndata.AnnData(x.astype(np.float32))
    a.var_names = [f"Sox{i}a" for i in range(100)]
    a.write_h5ad(tmp_path / "empty.h5ad")
    panel = rng.poisson(10 ** rng.uniform(0, 3, 2000)[:, None] * np.ones(21)[None, :]).astype(np.float32)
    anndata.AnnData(panel).write_h5ad(tmp_path / "panel.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_counts(tmp_path / "empty.h5ad").shape == (200, 100)
        assert read_counts(tmp_path / "panel.h5ad").shape == (2000, 21)
        SCGPCL(a, 3)  # nor warned about in Python
    from scgpcl.data._orientation import _count_evidence

    assert _count_evidence(sp.csr_matrix(x))[0] != "rows_genes"  # the empty rows no longer fake a spread


def test_a_backed_or_boolean_raw_is_described_not_crashed_on(tmp_path):
    x = sp.csr_matrix(np.log1p(np.random.default_rng(0).poisson(1, (60, 40))).astype(np.float32))
    a = anndata.AnnData(x)
    a.layers["ln"] = x.copy()
    a.raw = anndata.AnnData(x.copy())
    a.write_h5ad(tmp_path / "bk.h5ad")
    on_disk = anndata.read_h5ad(tmp_path / "bk.h5ad", backed="r")
    try:
        with pytest.raises(InputError, match=r"adata\.raw holds no raw counts either: non-integer values"):
            SCGPCL(on_disk, 3, layer="ln")  # a sparse .raw on disk
    finally:  # an h5py file left open until the interpreter's exit can crash it there (CI saw a segfault)
        on_disk.file.close()
    b = anndata.AnnData(x.copy())
    b.raw = anndata.AnnData(x.toarray() > 0)
    with pytest.raises(InputError, match=r"adata\.raw holds no raw counts either: True/False values, not counts"):
        SCGPCL(b, 3)


def test_reading_an_h5ad_transposed_says_that_raw_is_left_out(tmp_path, counts, cells):
    ens = [f"ENSG{j:011d}" for j in range(N_GENES)]
    a = anndata.AnnData(sp.csr_matrix(np.log1p(counts.T).astype(np.float32)), obs=pd.DataFrame(index=ens),
                        var=pd.DataFrame(index=cells))
    a.raw = anndata.AnnData(sp.csr_matrix(counts.T.astype(np.float32)), obs=a.obs, var=a.var)
    path = tmp_path / "t_raw.h5ad"
    a.write_h5ad(path)
    with pytest.warns(UserWarning, match=r"'t_raw\.h5ad' has a \.raw, which reading it transposed leaves out; if "
                                         r"\.raw holds the counts, add use_raw=True"):
        read_counts(path, genes_as_rows=True)
    assert_counts(read_counts(path, genes_as_rows=True, use_raw=True), counts, cells, ens)  # raw, then transposed


def test_orientation_is_not_guessed_on_scaled_or_backed_data(tmp_path, counts, cells, capsys):
    """Scaled data's gene totals are about 0, which the totals alone took for cells; backed data crashed the
    guess. Both are left to the count checks, which name their problem."""
    rng = np.random.default_rng(0)
    x = rng.poisson(rng.gamma(0.5, 4.0, size=1000), size=(200, 1000)).astype(np.float64)
    logged = np.log1p(x / x.sum(1, keepdims=True) * 1e4)  # normalize_total, log1p, scale
    scaled = (logged - logged.mean(0)) / (logged.std(0) + 1e-9)
    path = tmp_path / "scaled.h5ad"
    anndata.AnnData(scaled.astype(np.float32)).write_h5ad(path)
    assert read_counts(path).shape == (200, 1000)  # not refused as transposed (the totals alone said so)
    assert cli_main(["cluster", str(path), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "negative value(s)" in err and "genes x cells" not in err
    good = tmp_path / "good.h5ad"
    anndata.AnnData(sp.csr_matrix(x.astype(np.float32))).write_h5ad(good)
    backed = anndata.read_h5ad(good, backed="r")
    try:
        with pytest.raises(InputError, match=r"stored on disk \(a backed AnnData"):
            SCGPCL(backed, 3)
    finally:
        backed.file.close()


# --------------------------------------------------------------------------- atomic write


def test_write_h5ad_atomic_roundtrip(tmp_path, counts):
    path = tmp_path / "out.h5ad"
    write_h5ad_atomic(anndata.AnnData(sp.csr_matrix(counts.astype(np.float32))), path)
    np.testing.assert_array_equal(read_counts(path).X.toarray(), counts)
    assert os.listdir(tmp_path) == ["out.h5ad"]


def test_write_h5ad_atomic_failure_leaves_nothing(tmp_path, counts, monkeypatch):
    def half_write(self, filename, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", half_write)
    path = tmp_path / "out.h5ad"
    with pytest.raises(RuntimeError, match="disk full"):
        write_h5ad_atomic(anndata.AnnData(counts.astype(np.float32)), path)
    assert os.listdir(tmp_path) == []


def test_write_h5ad_atomic_failure_keeps_existing_file(tmp_path, counts, monkeypatch):
    path = tmp_path / "out.h5ad"
    path.write_bytes(b"previous result")

    def failing_write(self, filename, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(anndata.AnnData, "write_h5ad", failing_write)
    with pytest.raises(RuntimeError, match="interrupted"):
        write_h5ad_atomic(anndata.AnnData(counts.astype(np.float32)), path)
    assert path.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["out.h5ad"]


def test_write_h5ad_atomic_missing_directory(tmp_path, counts):
    with pytest.raises(InputError, match=r"directory '.*missing' does not exist"):
        write_h5ad_atomic(anndata.AnnData(counts.astype(np.float32)), tmp_path / "missing" / "out.h5ad")


# --------------------------------------------------------------------------- orientation of text tables


def _nb_counts(n_cells, n_genes, seed=0):
    """Cells x genes counts as real data have them: genes' means span orders of magnitude, library sizes do not."""
    rng = np.random.default_rng(seed)
    means = rng.lognormal(-1.0, 1.6, size=n_genes)
    lib = rng.lognormal(0.0, 0.25, size=(n_cells, 1))
    mu = means * lib
    return rng.negative_binomial(2.0, 2.0 / (2.0 + mu))


def _barcodes(n, seed=0):
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGT"), 16)) + "-1" for _ in range(n)]


def test_seurat_style_genes_x_cells_csv_is_read_as_cells_x_genes(tmp_path):
    # a genes x cells CSV (R/Seurat export, Ensembl ids as row names) was clustered with the genes as cells
    counts = _nb_counts(60, 500)
    genes = [f"ENSG{100000 + j:011d}" for j in range(500)]
    cells = _barcodes(60)
    path = tmp_path / "seurat_export.csv"
    write_table(path, counts.T, genes, cells, sep=",")
    with pytest.warns(UserWarning, match=r"read as genes x cells \(500 rows x 60 columns: 60 cells\).*gene names "
                                         r"\(e.g. 'ENSG.*if the rows are cells, pass genes_as_rows=False"):
        out = read_counts(path)
    assert out.shape == (60, 500) and list(out.obs_names) == cells and list(out.var_names) == genes
    np.testing.assert_array_equal(out.X.toarray(), counts)
    # the explicit orientation stays authoritative
    with pytest.warns(UserWarning, match="as asked"):
        assert read_counts(path, genes_as_rows=False).shape == (500, 60)


def test_orientation_from_symbols_and_from_the_counts_alone(tmp_path):
    symbols = ["ACTB", "GAPDH", "MALAT1", "MT-CO1", "RPL13A", "RPS6"] + [f"Sym{j}" for j in range(194)]
    counts = _nb_counts(40, len(symbols), seed=1)
    path = tmp_path / "cells_x_symbols.tsv"
    write_table(path, counts, [f"sample{i}" for i in range(40)], symbols, sep="\t")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the usual orientation: read as it is, no warning
        assert read_counts(path).shape == (40, 200)
    # names that say nothing (r1.., x1..): genes' totals spread over orders of magnitude, cells' do not
    path = tmp_path / "anonymous.csv"
    write_table(path, counts.T, [f"r{j}" for j in range(200)], [f"x{i}" for i in range(40)], sep=",")
    with pytest.warns(UserWarning, match=r"read as genes x cells.*the counts"):
        out = read_counts(path)
    assert out.shape == (40, 200) and out.obs_names[0] == "x0"


def test_unclear_orientation_is_refused_naming_both_choices(tmp_path, counts, capsys):
    from scgpcl.cli import main

    path = tmp_path / "unclear.csv"
    write_table(path, counts, [f"r{i}" for i in range(N_CELLS)], [f"x{j}" for j in range(N_GENES)], sep=",")
    with pytest.raises(InputError, match=r"cannot tell whether the rows of .*unclear\.csv' \(12 rows x 7 columns.*"
                                         r"genes_as_rows=False if each row is a cell, genes_as_rows=True if each"):
        read_counts(path)
    assert read_counts(path, genes_as_rows=False).shape == (N_CELLS, N_GENES)
    assert read_counts(path, genes_as_rows=True).shape == (N_GENES, N_CELLS)
    # from the command line the message names the flags, and the flags decide
    out = tmp_path / "out.h5ad"
    assert main(["cluster", str(path), str(out), "-k", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cells-as-rows if each row is a cell, --genes-as-rows if each row is a gene" in err[0]
    assert "genes_as_rows" not in err[0] and not out.exists()
    assert main(["cluster", str(path), str(out), "-k", "100000", "--quiet", "--cells-as-rows"]) == 2
    # read, then refused for K above the number of cells: the flag was enough
    assert "more than the number of cells" in capsys.readouterr().err


def test_orientation_warning_survives_quiet(tmp_path):
    # the only hint used to be an INFO line, which --quiet hid
    counts = _nb_counts(30, 300, seed=2)
    path = tmp_path / "genes_x_cells.csv"
    write_table(path, counts.T, [f"ENSMUSG{j:011d}" for j in range(300)], _barcodes(30), sep=",")
    proc = subprocess.run([sys.executable, "-m", "scgpcl", "cluster", str(path), str(tmp_path / "o.h5ad"), "-k",
                           "100000", "--quiet"], capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[-1].startswith("scgpcl: error:")
    assert any(line.startswith("WARNING: 'genes_x_cells.csv' read as genes x cells") and "--cells-as-rows" in line
               for line in lines), proc.stderr


# --------------------------------------------------------------------------- separators, decimals, missing values


def test_semicolon_csv_and_decimal_commas(tmp_path, counts, cells, genes):
    path = tmp_path / "semicolon.csv"
    write_table(path, counts, cells, genes, sep=";")
    assert_counts(read_counts(path), counts, cells, genes)
    path = tmp_path / "decimal_comma.csv"
    path.write_text("cell;gene_1;gene_2\ncell_1;1,5;2\ncell_2;3;0,25\ncell_3;4;5\n")
    out = read_counts(path)
    np.testing.assert_allclose(out.X.toarray(), [[1.5, 2], [3, 0.25], [4, 5]])
    assert list(out.var_names) == ["gene_1", "gene_2"]


@pytest.mark.parametrize("cell", ["NA", "", "nan"])
def test_missing_value_names_its_row_and_column(tmp_path, cell):
    path = tmp_path / "missing.csv"
    path.write_text(f",gene_1,gene_2,gene_3\ncell_1,1,2,3\ncell_2,4,{cell},6\ncell_3,7,8,9\n")
    with pytest.raises(InputError, match=r"cannot read '.*missing\.csv': row 'cell_2', column 'gene_2' is missing "
                                         r"\(NA or empty\).*write 0 there"):
        read_counts(path)


def test_ragged_or_non_numeric_table_names_the_line(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text(",gene_1,gene_2\ncell_1,1,2\ncell_2,3,4,5\ncell_3,6,7\n")
    with pytest.raises(InputError, match=r"line 3 has 4 fields, but the table's rows have 3"):
        read_counts(path)
    path = tmp_path / "words.csv"
    path.write_text(",gene_1,gene_2\ncell_1,1,2\ncell_2,3,lots\ncell_3,6,7\n")
    with pytest.raises(InputError, match=r"row 'cell_2' \(line 3\), column 'gene_2' holds 'lots', which is not a number"):
        read_counts(path)


# --------------------------------------------------------------------------- damaged and boolean data


def test_corrupt_h5ad_is_called_corrupt_not_scaled(tmp_path, counts, capsys):
    # random bytes in X's values read as huge negative floats: the error said "scaled or log-transformed"
    from scgpcl.cli import main

    path = tmp_path / "damaged.h5ad"
    anndata.AnnData(sp.csr_matrix(counts.astype(np.float32))).write_h5ad(path)
    with h5py.File(path, "r+") as f:
        data = f["X/data"]
        data[:20] = np.frombuffer(np.random.default_rng(3).bytes(80), dtype=np.float32)
    assert main(["cluster", str(path), str(tmp_path / "o.h5ad"), "-k", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "look corrupt" in err and "looks scaled or log-transformed" not in err
    # damaged indices crashed scipy (segmentation fault); now an error naming the file
    path = tmp_path / "bad_indices.h5ad"
    anndata.AnnData(sp.csr_matrix(counts.astype(np.float32))).write_h5ad(path)
    with h5py.File(path, "r+") as f:
        f["X/indices"][3] = 10**6
    with pytest.raises(InputError, match=r"cannot read '.*bad_indices\.h5ad': its sparse count matrix is damaged"):
        read_counts(path)


def test_boolean_matrix_is_not_counts(tmp_path, counts):
    path = tmp_path / "detected.h5ad"
    anndata.AnnData(counts > 0).write_h5ad(path)
    with pytest.raises(InputError, match=r"X holds True/False values \(a boolean matrix.*not counts"):
        read_counts(path)


def test_a_log_normalised_raw_is_not_pointed_to(small_toy, tmp_path, capsys):
    """scanpy's tutorials set adata.raw after log1p: then .raw holds no counts, and the messages say so instead
    of sending the user to --use-raw, which would fail with a message about a .raw it no longer sees."""
    logged = small_toy.copy()
    x = small_toy.X.toarray()
    logged.X = sp.csr_matrix(np.log1p(x / x.sum(1, keepdims=True) * 1e4))  # normalize_total, log1p
    logged.raw = logged.copy()
    with pytest.raises(InputError, match=r"Go back to the raw count matrix: this data has no layers, and adata\.raw "
                                         r"holds no raw counts either: its values look log-normalised \(e\.g\. [0-9.]+\), "
                                         r"as when adata\.raw is set after log1p") as e:
        SCGPCL(logged, 3)
    assert "to_adata" not in str(e.value)
    depth, deepest = 0, 0  # no parentheses inside parentheses (a new user found them hard to read)
    for c in str(e.value):
        depth += {"(": 1, ")": -1}.get(c, 0)
        deepest = max(deepest, depth)
    assert deepest == 1
    logged.layers["other"] = logged.X.copy()
    with pytest.raises(InputError, match=r"\(available layers: 'other'; adata\.raw holds no raw counts either"):
        SCGPCL(logged, 3)
    del logged.layers["other"]
    path = tmp_path / "tutorial.h5ad"
    logged.write_h5ad(path)
    from scgpcl.cli import main

    assert main(["cluster", str(path), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "adata.raw holds no raw counts either" in err and "--use-raw" not in err
    assert main(["cluster", str(path), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet", "--use-raw"]) == 2
    err = capsys.readouterr().err
    assert "the .raw of 'tutorial.h5ad' (--use-raw) is not integer counts" in err and "look log-normalised" in err
    assert "Leave out --use-raw, and pick the layer holding the raw counts with --layer" in err
    assert "no .raw to pick from" not in err
    # a layer that holds the counts is named, in Python and for --use-raw (whose matrix drops the layers)
    logged.layers["ln"] = logged.X.copy()
    logged.layers["counts"] = small_toy.X.copy()
    with pytest.raises(InputError, match=r"Use layer='counts': that layer holds integer counts$"):
        SCGPCL(logged, 3)
    with pytest.raises(InputError, match=r"layers\['ln'\] is not integer counts.*Use layer='counts'"):
        SCGPCL(logged, 3, layer="ln")
    logged.write_h5ad(tmp_path / "with_counts.h5ad")
    assert main(["cluster", str(tmp_path / "with_counts.h5ad"), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet",
                 "--use-raw"]) == 2
    err = capsys.readouterr().err
    assert "holds no raw counts: its values look log-normalised" in err
    assert "The layer 'counts' holds integer counts: pass --layer counts instead of --use-raw" in err
    assert not (tmp_path / "o.h5ad").exists()
    # a .raw of CPM values is not said to come from log1p
    cpm = small_toy.copy()
    cpm.X = sp.csr_matrix(np.log1p(x))
    cpm.raw = anndata.AnnData(sp.csr_matrix(x / x.sum(1, keepdims=True) * 1e6), obs=cpm.obs, var=cpm.var)
    with pytest.raises(InputError, match=r"adata\.raw holds no raw counts either: non-integer values, e\.g\. [0-9.e+]+; "
                                         r"they look normalised to a total of 1e\+06 per cell") as e:
        SCGPCL(cpm, 3)
    assert "log1p" not in str(e.value).split("adata.raw holds")[1]


def test_counts_in_raw_are_pointed_to_and_readable(small_toy, tmp_path):
    logged = small_toy.copy()
    logged.raw = small_toy.copy()
    logged.X = sp.csr_matrix(np.log1p(small_toy.X.toarray()) - 0.5)
    with pytest.raises(InputError, match=r"adata\.raw\.to_adata\(\)"):
        SCGPCL(logged, 3)
    from scgpcl._messages import cli_context

    with cli_context(), pytest.raises(InputError, match="use --use-raw"):  # the command line names its flag
        check_counts(logged.X, layers=[], has_raw=True)
    logged.uns["log1p"] = {"base": None}  # what sc.pp.log1p leaves
    path = tmp_path / "logged.h5ad"
    logged.layers["scaled"] = logged.X.copy()
    logged.write_h5ad(path)
    # what the output leaves out was not said (X, layers, var's columns)
    with pytest.warns(UserWarning, match=rf"use_raw: the counts of \.raw \({small_toy.n_vars} genes\) take X's place, "
                                         r"with the cells' annotations \(obs, obsm, obsp, uns\); X \(\d+ genes\), the "
                                         r"layers 'scaled'.* are left out of the AnnData read \(the input file is not"):
        back = read_counts(path, use_raw=True)
    np.testing.assert_array_equal(back.X.toarray(), small_toy.X.toarray())
    assert "log1p" not in back.uns  # X holds the counts now: scanpy must not take them for log-transformed
    assert list(back.obs["cell_type"]) == list(small_toy.obs["cell_type"])
    small_toy.write_h5ad(tmp_path / "plain.h5ad")
    with pytest.raises(InputError, match=r"has no \.raw, so use_raw=True has nothing to read.*layer=NAME; this "
                       r"file's layers: none\)"):
        read_counts(tmp_path / "plain.h5ad", use_raw=True)
    with cli_context(), pytest.raises(InputError, match=r"leave out --use-raw\) or in a layer \(--layer NAME"):
        read_counts(tmp_path / "plain.h5ad", use_raw=True)
    with pytest.raises(InputError, match="pass one"):
        read_counts(path, use_raw=True, layer="counts")
    # the CLI option: clusters the counts in .raw
    out = tmp_path / "out.h5ad"
    assert cli_main(["cluster", str(path), str(out), "-k", "3", "--use-raw", "--quiet",
                     "--pretrain-rounds", "3", "--warmup-rounds", "1", "--finetune-rounds", "2"]) == 0
    assert ad.read_h5ad(out).obs["scgpcl"].notna().all()


def test_is_zarr_store_decides_reader_and_checksum_alike(tmp_path, counts, cells, genes):
    from scgpcl._fs import is_zarr_store

    tenx = tmp_path / "tenx.zarr"
    write_10x_mtx(tenx, counts, cells, genes)
    bare = tmp_path / "bare.zarr"
    bare.mkdir()
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / "zarr.json").write_text("{}")
    assert [is_zarr_store(p) for p in (tenx, bare, marked, tmp_path / "none.zarr")] == [False, True, True, False]


def test_counts_float32_cannot_hold_are_named(tmp_path):
    # int64 counts of 16777217 and 123456789 came back as 16777216 and 123456792 without a word
    x = np.random.default_rng(0).poisson(2, (30, 20)).astype(np.int64)
    x[0, 0], x[1, 1] = 16_777_217, 123_456_789
    for i, m in enumerate((x, sp.csr_matrix(x), x.astype(np.float64))):
        path = tmp_path / f"big{i}.h5ad"
        ad.AnnData(m).write_h5ad(path)
        with pytest.warns(UserWarning, match=r"X holds 2 count\(s\) that float32 cannot hold exactly \(above "
                                             r"16,777,216, e\.g\. 16,777,217, which becomes 16,777,216\)") as w:
            back = read_counts(path)
        assert w[0].filename == __file__  # the user's line
        assert back.X[1, 1] == 123_456_792  # what float32 holds: the warning is true
    # 2^24 itself, and even numbers up to 2^25, float32 holds exactly: nothing changes, no warning
    x[0, 0], x[1, 1] = 16_777_216, 16_777_218
    ad.AnnData(x).write_h5ad(tmp_path / "fine.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = read_counts(tmp_path / "fine.h5ad")
    assert back.X[0, 0] == 16_777_216 and back.X[1, 1] == 16_777_218


def test_text_in_a_dense_matrix_is_bad_input_and_a_failure_of_ours_is_not(tmp_path, monkeypatch):
    """Only the readers' failures are called a bad file: a failure in scgpcl's own steps after the read came out
    as "cannot read ...; is it a valid .h5ad?", hiding the bug behind the user's file."""
    path = tmp_path / "text.h5ad"
    anndata.AnnData(np.array([["1", "2"], ["3", "x"]] * 20, dtype=object)).write_h5ad(path)
    with pytest.raises(InputError, match=r"^X of '.*text\.h5ad' must hold numbers \(raw counts\): could not convert"):
        read_counts(path)
    good = tmp_path / "good.h5ad"
    anndata.AnnData(sp.csr_matrix(np.ones((40, 30), dtype=np.float32))).write_h5ad(good)

    def broken(*args, **kwargs):
        raise TypeError("a bug of ours")

    monkeypatch.setattr("scgpcl.data._io._finalize", broken)
    with pytest.raises(TypeError, match="a bug of ours"):
        read_counts(good)
