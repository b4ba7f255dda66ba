"""Write docs/bad_inputs.md: every kind of bad input the test suite covers, what scgpcl says, and the exit code.

    python tools/bad_inputs.py            # writes docs/bad_inputs.md
    python tools/bad_inputs.py --check    # exit 1 if docs/bad_inputs.md is out of date

Each case below builds its bad input in an empty folder, runs the command line
(``scgpcl.cli.main``, in this process) or, for problems only the Python API can
have, the call, and records the first error line and the exit code. Each case
names the tests that cover the same input; the script also scans ``tests/``
for the tests that assert on ``InputError`` or exit code 2 and lists any no
case cites, so the table cannot silently fall behind the tests. Nothing trains:
every bad input is refused before training.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bad_inputs.md"
sys.path.insert(0, str(ROOT / "src"))

import anndata as ad  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from scgpcl import InputError  # noqa: E402
from scgpcl.cli import main  # noqa: E402


# ----------------------------------------------------------------------------- inputs
def _rare_genes(a: ad.AnnData) -> ad.AnnData:
    """The toy with one gene kept in every cell and the others in at most 20 cells each."""
    a = a.copy()
    x = np.asarray(a.X.toarray() if sp.issparse(a.X) else a.X)
    x[:, 0] = np.maximum(x[:, 0], 1)
    x[20:, 1:] = 0
    a.X = sp.csr_matrix(x)
    return a


def toy(n_per: int = 10, n_genes: int = 30, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    x = rng.poisson(2.0, size=(3 * n_per, n_genes)).astype(np.float32)
    a = ad.AnnData(sp.csr_matrix(x))
    a.obs_names = [f"cell_{i}" for i in range(a.n_obs)]
    a.var_names = [f"gene_{j}" for j in range(n_genes)]
    a.obs["cell_type"] = pd.Categorical(np.repeat(["a", "b", "c"], n_per))
    return a


def h5ad(name: str, change: Callable[[ad.AnnData], object] | None = None, **kw) -> str:
    a = toy(**kw)
    if change is not None:
        result = change(a)
        a = result if isinstance(result, ad.AnnData) else a
    a.write_h5ad(name)
    return name


def text(name: str, content: str) -> str:
    Path(name).write_text(content)
    return name


def clustered(name: str = "clustered.h5ad", one_cell_each: bool = False) -> str:
    a = toy()
    a.obs["scgpcl"] = (pd.Categorical([str(i) for i in range(a.n_obs)]) if one_cell_each
                       else pd.Categorical(a.obs["cell_type"].astype(str)))
    a.write_h5ad(name)
    return name


def damaged_values(name: str) -> str:
    h5ad(name)
    with h5py.File(name, "r+") as f:
        f["X/data"][:20] = np.frombuffer(np.random.default_rng(3).bytes(80), dtype=np.float32)
    return name


def text_values(name: str) -> str:
    """A dense X of strings, as from a table read without converting its numbers."""
    values = np.random.default_rng(0).poisson(3, (60, 40)).astype(str).astype(object)
    values[5, 7] = "n/a"
    ad.AnnData(values).write_h5ad(name)
    return name


def damaged_indices(name: str) -> str:
    h5ad(name)
    with h5py.File(name, "r+") as f:
        f["X/indices"][3] = 10**6
    return name


def xy_h5(name: str, transpose: bool = False, n_labels: int | None = None) -> str:
    a = toy(n_genes=40)
    x = a.X.toarray()
    with h5py.File(name, "w") as f:
        f["X"] = x.T if transpose else x
        f["Y"] = np.arange(n_labels if n_labels is not None else a.n_obs)
    return name


def dangling_link(name: str) -> str:
    Path(name).symlink_to(Path("nowhere") / "y.h5ad")
    return name


def mtx_folder(name: str, drop: str | None = None, n_genes_listed: int | None = None) -> str:
    import gzip

    import scipy.io

    a = toy()
    folder = Path(name)
    folder.mkdir()
    with gzip.open(folder / "matrix.mtx.gz", "wb") as handle:
        scipy.io.mmwrite(handle, sp.coo_matrix(a.X.T), field="integer")
    with gzip.open(folder / "features.tsv.gz", "wt") as handle:
        listed = a.var_names[:n_genes_listed] if n_genes_listed is not None else a.var_names
        handle.write("".join(f"ENSG{j:011d}\t{g}\tGene Expression\n" for j, g in enumerate(listed)))
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as handle:
        handle.write("".join(f"{c}\n" for c in a.obs_names))
    if drop:
        (folder / drop).unlink()
    return name


def folder(name: str, *files: str) -> str:
    Path(name).mkdir()
    for f in files:
        (Path(name) / f).write_text("mine")
    return name


@contextlib.contextmanager
def unwritable(name: str):
    """A folder os.access reports as not writable (root can write anywhere, so patch it, as the tests do)."""
    Path(name).mkdir()
    real = os.access
    os.access = lambda p, mode, *a, **k: False if Path(p).resolve() == Path(name).resolve() and mode & os.W_OK \
        else real(p, mode, *a, **k)
    try:
        yield
    finally:
        os.access = real


@contextlib.contextmanager
def environment(**values: str):
    """Environment variables set for one case (a launcher's, e.g. torchrun's WORLD_SIZE)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def refusing_new_files():
    """A file system that refuses new files although the permission bits allow them (as /sys does for root)."""
    real = tempfile.mkstemp

    def refused(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    tempfile.mkstemp = refused
    try:
        yield
    finally:
        tempfile.mkstemp = real


# ----------------------------------------------------------------------------- cases
@dataclass
class Case:
    what: str
    tests: list[str]
    argv: Callable[[], list[str]] | None = None  # builds the input, returns the command line (after 'scgpcl')
    call: Callable[[], object] | None = None  # Python-API-only problems
    context: Callable[[], contextlib.AbstractContextManager] | None = None
    # filled in by run()
    command: str = ""
    message: str = ""
    exit: str = ""
    extra: dict = field(default_factory=dict)


T = "tests/"
B = "tests/test_batches.py::"
CLUSTER = ["-k", "3", "--quiet"]
#: the launcher of --processes refuses these before it starts a process or imports torch
_EARLY = "test_cli.py::test_processes_refuse_a_bad_option_before_starting_any_and_without_torch"
CASES: list[Case] = [
    # --- the input file
    Case("input file does not exist", [T + "test_cli.py::test_missing_and_corrupt_input", T + "test_io.py::test_missing_file_named"],
         lambda: ["cluster", "none.h5ad", "out.h5ad", *CLUSTER]),
    Case("random bytes named .h5ad", [T + "test_cli.py::test_missing_and_corrupt_input", T + "test_io.py::test_random_bytes_refused"],
         lambda: ["cluster", text("junk.h5ad", "not an hdf5 file at all"), "out.h5ad", *CLUSTER]),
    Case("random bytes named .h5", [T + "test_io.py::test_random_bytes_refused"],
         lambda: ["cluster", text("junk.h5", "not an hdf5 file at all"), "out.h5ad", *CLUSTER]),
    Case("an empty (0-byte) .h5ad", [T + "test_io.py::test_an_empty_file_is_called_empty"],
         lambda: ["cluster", text("empty.h5ad", ""), "out.h5ad", *CLUSTER]),
    Case("truncated .h5ad (half the file)", [T + "test_io.py::test_truncated_h5ad_refused"],
         lambda: ["cluster", _truncated("truncated.h5ad"), "out.h5ad", *CLUSTER]),
    Case(".h5ad whose values are damaged (random bytes in X)", [T + "test_io.py::test_corrupt_h5ad_is_called_corrupt_not_scaled"],
         lambda: ["cluster", damaged_values("damaged.h5ad"), "out.h5ad", *CLUSTER]),
    Case(".h5ad whose sparse indices are damaged", [T + "test_io.py::test_corrupt_h5ad_is_called_corrupt_not_scaled"],
         lambda: ["cluster", damaged_indices("bad_indices.h5ad"), "out.h5ad", *CLUSTER]),
    Case("unsupported extension (.xlsx)", [T + "test_io.py::test_unsupported_extension_lists_formats"],
         lambda: ["cluster", text("table.xlsx", "x"), "out.h5ad", *CLUSTER]),
    Case("HDF5 file of another layout", [T + "test_io.py::test_h5_of_unknown_layout_lists_keys"],
         lambda: ["cluster", _other_h5("other.h5"), "out.h5ad", *CLUSTER]),
    Case("a .zarr folder that is not an AnnData store", [T + "test_io.py::test_a_zarr_store_that_is_not_anndata_is_named"],
         lambda: ["cluster", _not_anndata_zarr("other.zarr"), "out.h5ad", *CLUSTER]),
    Case("a zipped .zarr store (a file)", [T + "test_io.py::test_zipped_zarr_and_10x_folder_named_zarr"],
         lambda: ["cluster", text("data.zarr", "PK"), "out.h5ad", *CLUSTER]),
    Case("a loom file", [T + "test_io.py::test_loom_names_the_conversion"],
         lambda: ["cluster", text("velocyto.loom", "x"), "out.h5ad", *CLUSTER]),
    Case("10x matrix folder without barcodes.tsv.gz", [T + "test_io.py::test_10x_mtx_folder_incomplete"],
         lambda: ["cluster", mtx_folder("mtx", drop="barcodes.tsv.gz"), "out.h5ad", *CLUSTER]),
    Case("10x matrix folder whose features file lists fewer genes than the matrix holds",
         [T + "test_io.py::test_10x_mtx_folders_as_geo_holds_them"],
         lambda: ["cluster", mtx_folder("mtx_short", n_genes_listed=-1), "out.h5ad", *CLUSTER]),
    Case("X/Y .h5 with fewer labels than cells", [T + "test_io.py::test_xy_h5_label_length_mismatch"],
         lambda: ["cluster", xy_h5("bench.h5", n_labels=29), "out.h5ad", *CLUSTER]),
    Case(".h5ad whose X holds text", [T + "test_io.py::test_text_in_a_dense_matrix_is_bad_input_and_a_failure_of_ours_is_not"],
         lambda: ["cluster", text_values("text.h5ad"), "out.h5ad", *CLUSTER]),
    Case("X/Y .h5 stored genes x cells", [T + "test_io.py::test_xy_h5_label_mismatch_from_orientation_names_the_fix"],
         lambda: ["cluster", xy_h5("bench_t.h5", transpose=True), "out.h5ad", *CLUSTER]),
    # --- text tables
    Case("CSV with a word among the counts", [T + "test_io.py::test_csv_not_numeric", T + "test_io.py::test_ragged_or_non_numeric_table_names_the_line"],
         lambda: ["cluster", text("words.csv", ",gene_1,gene_2\ncell_1,1,2\ncell_2,3,lots\ncell_3,6,7\n"), "out.h5ad", *CLUSTER]),
    Case("CSV with a row of extra fields", [T + "test_io.py::test_ragged_or_non_numeric_table_names_the_line"],
         lambda: ["cluster", text("ragged.csv", ",gene_1,gene_2\ncell_1,1,2\ncell_2,3,4,5\ncell_3,6,7\n"), "out.h5ad", *CLUSTER]),
    Case("CSV with an NA (or empty) count", [T + "test_io.py::test_missing_value_names_its_row_and_column"],
         lambda: ["cluster", text("missing.csv", ",gene_1,gene_2,gene_3\ncell_1,1,2,3\ncell_2,4,NA,6\ncell_3,7,8,9\n"), "out.h5ad", *CLUSTER]),
    Case("CSV with a header and no rows", [T + "test_io.py::test_csv_without_data_rows"],
         lambda: ["cluster", text("header_only.csv", "g1,g2,g3\n"), "out.h5ad", *CLUSTER]),
    Case("CSV whose orientation cannot be told", [T + "test_io.py::test_unclear_orientation_is_refused_naming_both_choices"],
         lambda: ["cluster", _unclear("unclear.csv"), "out.h5ad", *CLUSTER]),
    # --- what in the file to use
    Case("--layer that the file does not have", [T + "test_cli.py::test_bad_input_exit_code_and_no_output", T + "test_io.py::test_h5ad_unknown_layer_lists_layers_and_x"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--layer", "spliced", *CLUSTER]),
    Case("--layer for a 10x folder", [T + "test_io.py::test_misplaced_options_refused"],
         lambda: ["cluster", mtx_folder("mtx"), "out.h5ad", "--layer", "counts", *CLUSTER]),
    Case("--genes-as-rows for a 10x folder", [T + "test_io.py::test_misplaced_options_refused"],
         lambda: ["cluster", mtx_folder("mtx"), "out.h5ad", "--genes-as-rows", *CLUSTER]),
    Case(".h5ad stored genes x cells (AnnData of an R export)", [T + "test_io.py::test_h5ad_stored_genes_x_cells_is_refused_naming_both_choices", T + "test_cli.py::test_cluster_refuses_an_h5ad_stored_genes_x_cells_before_training"],
         lambda: ["cluster", h5ad("t.h5ad", lambda a: a.T.copy()), "out.h5ad", *CLUSTER]),
    Case("log-normalised X and .raw (scanpy's tutorial order)", [T + "test_io.py::test_a_log_normalised_raw_is_not_pointed_to"],
         lambda: ["cluster", h5ad("tutorial.h5ad", _tutorial), "out.h5ad", *CLUSTER]),
    Case("--use-raw where .raw is log-normalised", [T + "test_io.py::test_a_log_normalised_raw_is_not_pointed_to"],
         lambda: ["cluster", h5ad("tutorial.h5ad", _tutorial), "out.h5ad", "--use-raw", *CLUSTER]),
    Case("--use-raw where .raw is log-normalised and a layer holds the counts",
         [T + "test_io.py::test_a_log_normalised_raw_is_not_pointed_to"],
         lambda: ["cluster", h5ad("tutorial.h5ad", _tutorial_with_counts), "out.h5ad", "--use-raw", *CLUSTER]),
    Case("--use-raw for a file without .raw", [T + "test_io.py::test_counts_in_raw_are_pointed_to_and_readable"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--use-raw", *CLUSTER]),
    Case("--use-raw with --layer", [T + "test_io.py::test_counts_in_raw_are_pointed_to_and_readable"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--use-raw", "--layer", "counts", *CLUSTER]),
    Case("--label-key that is not a column", [T + "test_cli.py::test_bad_input_exit_code_and_no_output", T + "test_io.py::test_missing_label_key_lists_columns", T + "test_checks.py::test_label_key_missing_lists_columns"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--label-key", "celltype", *CLUSTER]),
    Case("--label-key column with one value per cell (cell ids)", [T + "test_checks.py::test_label_key_with_one_value_per_cell_is_refused"],
         lambda: ["cluster", h5ad("in.h5ad", lambda a: a.obs.__setitem__("barcode", list(a.obs_names))), "out.h5ad",
                  "--label-key", "barcode", *CLUSTER]),
    Case("--label-key column with no labels (all NaN)", [T + "test_checks.py::test_label_key_all_missing_refused"],
         lambda: ["cluster", h5ad("in.h5ad", lambda a: a.obs.__setitem__("empty", pd.Categorical([None] * a.n_obs, categories=["x"]))),
                  "out.h5ad", "--label-key", "empty", *CLUSTER]),
    Case("--batch-key that is not a column", [B + "test_cli_batch_key", B + "test_a_bad_batch_key_is_refused",
                                               B + "test_a_bad_batch_key_is_refused_before_training"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--batch-key", "sample", *CLUSTER]),
    Case("--batch-key column with no batches (all NaN)", [B + "test_a_bad_batch_key_is_refused"],
         lambda: ["cluster", h5ad("in.h5ad", lambda a: a.obs.__setitem__("sample", pd.Categorical([None] * a.n_obs, categories=["x"]))),
                  "out.h5ad", "--batch-key", "sample", *CLUSTER]),
    Case("--batch-key column with one batch only", [B + "test_a_bad_batch_key_is_refused"],
         lambda: ["cluster", h5ad("in.h5ad", lambda a: a.obs.__setitem__("sample", "s1")), "out.h5ad",
                  "--batch-key", "sample", *CLUSTER]),
    Case("--batch-key column with one value per cell (cell ids)", [B + "test_a_bad_batch_key_is_refused"],
         lambda: ["cluster", h5ad("in.h5ad", lambda a: a.obs.__setitem__("barcode", list(a.obs_names))), "out.h5ad",
                  "--batch-key", "barcode", *CLUSTER]),
    Case("--batch-key column of per-cell values (fewer than 5 cells per value)", [B + "test_a_bad_batch_key_is_refused"],
         lambda: ["cluster", h5ad("in.h5ad", lambda a: a.obs.__setitem__("n_genes", np.arange(a.n_obs) % 12)),
                  "out.h5ad", "--batch-key", "n_genes", *CLUSTER]),
    Case("--batch-key or --label-key named like the runs' agreement column", [B + "test_a_key_named_like_the_agreement_column_is_refused"],
         lambda: ["cluster", h5ad("in.h5ad", lambda a: a.obs.__setitem__("scgpcl_agreement", ["s1", "s2"] * (a.n_obs // 2))),
                  "out.h5ad", "--batch-key", "scgpcl_agreement", *CLUSTER]),
    # --- the values
    Case("negative values (scaled or log-transformed X)", [T + "test_cli.py::test_non_counts_refused", T + "test_checks.py::test_negative_refused_with_advice", T + "test_checks.py::test_real_scaled_data_refused"],
         lambda: ["cluster", h5ad("scaled.h5ad", lambda a: _set_x(a, a.X.toarray() - 1.0)), "out.h5ad", *CLUSTER]),
    Case("NaN values", [T + "test_checks.py::test_nan_and_inf_refused", T + "test_model.py::test_refuses_non_counts"],
         lambda: ["cluster", h5ad("nan.h5ad", lambda a: _set_x(a, np.where(np.eye(a.n_obs, a.n_vars) > 0, np.nan, a.X.toarray()))), "out.h5ad", *CLUSTER]),
    Case("non-integer values (normalised X)", [T + "test_checks.py::test_non_integer_refused_for_zinb", T + "test_model.py::test_refuses_non_counts"],
         lambda: ["cluster", h5ad("norm.h5ad", lambda a: _set_x(a, a.X.toarray() * 0.5)), "out.h5ad", *CLUSTER]),
    Case("values normalised to one total per cell (CPM)", [T + "test_checks.py::test_normalised_values_are_named_as_such"],
         lambda: ["cluster", h5ad("cpm.h5ad", lambda a: _set_x(a, _per_cell(a.X.toarray(), 1e6))), "out.h5ad", *CLUSTER]),
    Case("only zeros", [T + "test_checks.py::test_all_zero_refused"],
         lambda: ["cluster", h5ad("zeros.h5ad", lambda a: _set_x(a, np.zeros(a.shape, dtype=np.float32))), "out.h5ad", *CLUSTER]),
    Case("boolean matrix (detected / not detected)", [T + "test_io.py::test_boolean_matrix_is_not_counts", T + "test_checks.py::test_boolean_matrix_refused"],
         lambda: ["cluster", h5ad("bool.h5ad", lambda a: _set_x(a, a.X.toarray() > 0)), "out.h5ad", *CLUSTER]),
    Case("a single gene", [T + "test_model.py::test_one_gene_is_refused_by_name"],
         lambda: ["cluster", h5ad("one_gene.h5ad", lambda a: a[:, :1].copy()), "out.h5ad", *CLUSTER]),
    Case("--min-cells that leaves fewer than 2 genes", [T + "test_preprocess.py::test_min_cells_that_leaves_too_few_genes_names_the_option"],
         lambda: ["cluster", h5ad("rare_genes.h5ad", _rare_genes), "out.h5ad", "--min-cells", "25", *CLUSTER]),
    # --- options
    Case("-k 1", [T + "test_cli.py::test_k_below_2_is_refused_before_the_input_is_read", T + "test_checks.py::test_bad_n_clusters", T + "test_model.py::test_bad_arguments", T + "test_auto_k.py::test_bad_n_clusters_still_raise"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "-k", "1", "--quiet"]),
    Case("-k larger than the number of cells", [T + "test_cli.py::test_bad_input_exit_code_and_no_output", T + "test_checks.py::test_bad_n_clusters", T + "test_model.py::test_bad_arguments"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "-k", "100", "--quiet"]),
    Case("-k above the number of different cells (the others are copies)", [T + "test_model.py::test_more_clusters_than_different_cells_is_refused_before_training", T + "test_model.py::test_the_count_of_different_cells_stops_early_and_reads_every_block", T + "test_model.py::test_different_cells_are_counted_on_the_features_at_the_scaling_used"],
         lambda: ["cluster", h5ad("copies.h5ad", lambda a: _set_x(a, np.tile(a.X[:2].toarray(), (15, 1)))), "out.h5ad", *CLUSTER]),
    Case("-k that is not a number", [T + "test_cli.py::test_n_clusters_garbage_is_a_usage_error"],
         lambda: ["cluster", "in.h5ad", "out.h5ad", "-k", "many"]),
    Case("no input or output given", [T + "test_cli.py::test_usage_error_exit_code"],
         lambda: ["cluster"]),
    Case("--batch-size 0", [T + "test_cli.py::test_bad_option_value_is_an_input_error", T + "test_cli.py::test_a_bad_option_value_is_refused_before_the_input_is_read", T + "test_model.py::test_out_of_range_options_refused_before_training"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--batch-size", "0", *CLUSTER]),
    Case("--dec-init with an unknown value", [T + "test_cli.py::test_dec_init_flag_reaches_the_config"],
         lambda: ["cluster", "in.h5ad", "out.h5ad", "-k", "3", "--dec-init", "random"]),
    Case("--auto-k-method unknown", [T + "test_cli.py::test_cluster_auto_k_with_report", T + "test_auto_k.py::test_bad_auto_k_options_raise"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "-k", "auto", "--auto-k-method", "astrology", "--quiet"]),
    Case("--device cuda:7 (no such GPU)", [T + "test_model.py::test_torch_device_objects_are_checked_like_strings", T + "test_model.py::test_bad_arguments",
                                            T + "test_cli.py::test_a_bad_device_is_refused_before_the_data_is_read"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--device", "cuda:7", *CLUSTER]),
    Case("--device mps (an Apple GPU)", [T + "test_model.py::test_torch_device_objects_are_checked_like_strings"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--device", "mps", *CLUSTER]),
    Case("--seed out of range", [T + "test_model.py::test_bad_seed_refused",
                                  T + "test_cli.py::test_random_state_none_draws_a_seed_and_records_it_with_the_thread_count_and_versions"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--seed", "-1", *CLUSTER]),
    Case("--random-state none under torchrun (each process would draw its own seed)",
         [T + "test_cli.py::test_random_state_none_is_refused_under_torchrun"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--random-state", "none", *CLUSTER],
         context=lambda: environment(WORLD_SIZE="2", RANK="0")),
    Case("--key-added with a '/'", [T + "test_cli.py::test_key_added_with_a_slash_is_refused_before_training"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--key-added", "a/b", *CLUSTER]),
    Case("--key-added equal to --label-key", [T + "test_model.py::test_key_added_equal_to_label_key_is_refused"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--key-added", "cell_type", "--label-key", "cell_type", *CLUSTER]),
    # --- outputs
    Case("output not ending in .h5ad", [T + "test_cli.py::test_output_must_be_h5ad"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.csv", *CLUSTER]),
    Case("output exists, no --overwrite", [T + "test_cli.py::test_existing_output_needs_overwrite",
                                             T + "test_cli.py::test_report_shows_the_command_input_checksum_and_cpu"],
         lambda: ["cluster", h5ad("in.h5ad"), text("out.h5ad", "an earlier result"), *CLUSTER]),
    Case("output is the input file (even with --overwrite)", [T + "test_cli.py::test_the_output_is_never_the_input",
                                                               T + "test_cli.py::test_cluster_reads_an_anndata_zarr_store"],
         lambda: ["cluster", h5ad("in.h5ad"), "in.h5ad", "--overwrite", *CLUSTER]),
    Case("output inside the input .zarr store", [T + "test_cli.py::test_cluster_reads_an_anndata_zarr_store"],
         lambda: ["cluster", _zarr_store("in.zarr"), "in.zarr/out.h5ad", *CLUSTER]),
    Case("output folder does not exist", [T + "test_cli.py::test_output_paths_checked_before_training"],
         lambda: ["demo", "--output", "no/such/out.h5ad", "--quiet"]),
    Case("output folder is a file", [T + "test_cli.py::test_output_paths_checked_before_training"],
         lambda: ["cluster", h5ad("in.h5ad"), text("afile", "x") + "/out.h5ad", *CLUSTER]),
    Case("output folder not writable", [T + "test_cli.py::test_unwritable_output_folders_are_refused_before_training"],
         lambda: ["cluster", h5ad("in.h5ad"), "locked/out.h5ad", *CLUSTER], context=lambda: unwritable("locked")),
    Case("output folder refuses new files (read-only file system, seen as writable)",
         [T + "test_cli.py::test_a_folder_that_refuses_new_files_is_caught_before_training"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", *CLUSTER], context=lambda: refusing_new_files()),
    Case("--save-model names a file", [T + "test_cli.py::test_output_paths_checked_before_training", T + "test_model.py::test_save_and_load_errors_name_the_problem"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--save-model", text("model_file", "x"), *CLUSTER]),
    Case("--report folder holding other files", [T + "test_cli.py::test_bad_report_folder_fails_before_training", T + "test_report.py::test_refuses_a_foreign_folder"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--report", folder("busy", "notes.txt"), *CLUSTER]),
    Case("--report folder holding an earlier report, no --overwrite",
         [T + "test_cli.py::test_an_earlier_report_is_replaced_only_with_overwrite",
          T + "test_report.py::test_an_earlier_report_is_replaced_only_with_overwrite"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--report", folder("rep", "index.html", "metrics.json"),
                  *CLUSTER]),
    Case("--report folder whose parent does not exist", [T + "test_report.py::test_refuses_a_foreign_folder"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--report", "no/such/report", *CLUSTER]),
    Case("--report at the output's path",
         [T + "test_cli.py::test_outputs_that_name_the_same_path_are_refused_before_training",
          T + "test_cli.py::test_demo_refuses_a_report_at_its_output_path"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--report", "out.h5ad", *CLUSTER]),
    Case("--save-model inside the --report folder",
         [T + "test_cli.py::test_outputs_that_name_the_same_path_are_refused_before_training",
          T + "test_cli.py::test_paths_under_the_output_file_or_the_model_folder_are_refused"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--report", "rep", "--save-model", "rep/model", *CLUSTER]),
    Case("--sample-cells below K", [T + "test_model.py::test_sample_cells_below_k_is_refused_before_training"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--sample-cells", "2", *CLUSTER]),
    # --- markers
    Case("markers --output onto its own input", [T + "test_markers.py::test_markers_output_never_replaces_the_input_or_an_existing_file"],
         lambda: ["markers", clustered("c.h5ad"), "-o", "c.h5ad", "--overwrite", "--quiet"]),
    Case("markers --output exists, no --overwrite", [T + "test_markers.py::test_markers_output_never_replaces_the_input_or_an_existing_file"],
         lambda: ["markers", clustered(), "-o", text("markers.tsv", "an earlier table\n"), "--quiet"]),
    Case("markers --output named .h5ad", [T + "test_markers.py::test_markers_output_never_replaces_the_input_or_an_existing_file"],
         lambda: ["markers", clustered(), "-o", "other.h5ad", "--quiet"]),
    Case("markers -o a spreadsheet name (.xlsx)", [T + "test_cli.py::test_output_names_are_read_as_a_user_means_them"],
         lambda: ["markers", clustered(), "-o", "markers.xlsx", "--quiet"]),
    Case("markers --output is a folder", [T + "test_cli.py::test_markers_output_that_is_a_folder_is_an_input_error"],
         lambda: ["markers", clustered(), "-o", folder("markers_dir"), "--quiet"]),
    Case("markers --output folder not writable", [T + "test_markers.py::test_unwritable_markers_output_is_refused"],
         lambda: ["markers", clustered(), "-o", "locked/m.tsv", "--quiet"], context=lambda: unwritable("locked")),
    Case("markers --key that is not a column", [T + "test_markers.py::test_markers_cli_missing_key", T + "test_markers.py::test_missing_key_lists_the_columns_and_names_the_flag", T + "test_markers.py::test_markers_bad_input"],
         lambda: ["markers", clustered(), "--key", "leiden", "--quiet"]),
    Case("markers --layer that the file does not have", [T + "test_markers.py::test_markers_reads_the_counts_layer"],
         lambda: ["markers", clustered(), "--layer", "nope", "--quiet"]),
    Case("markers of scaled data", [T + "test_markers.py::test_markers_refuse_scaled_data"],
         lambda: ["markers", _scaled_clustered("scaled_c.h5ad"), "--quiet"]),
    Case("markers when every cluster has one cell", [T + "test_markers.py::test_markers_say_why_when_every_cluster_is_a_single_cell"],
         lambda: ["markers", clustered(one_cell_each=True), "--quiet"]),
    Case("markers --n-genes 0", [T + "test_markers.py::test_markers_bad_input"],
         lambda: ["markers", "clustered.h5ad", "--n-genes", "0"]),
    Case("--key-added equal to --batch-key", [B + "test_cli_batch_key", B + "test_a_bad_batch_key_is_refused_before_training"],
         lambda: ["cluster", h5ad("in.h5ad", lambda a: a.obs.__setitem__("sample", ["s1", "s2"] * (a.n_obs // 2))),
                  "out.h5ad", "--key-added", "sample", "--batch-key", "sample", *CLUSTER]),
    # --- report
    Case("report --key with no clustering", [T + "test_cli.py::test_report_subcommand", T + "test_report.py::test_bad_input_writes_nothing"],
         lambda: ["report", clustered(), "rep", "--key", "nope", "--quiet"]),
    Case("report --label-key that is not a column", [T + "test_report.py::test_bad_input_writes_nothing"],
         lambda: ["report", _clustered_with_record("c.h5ad"), "rep", "--label-key", "nope", "--quiet"]),
    Case("report --batch-key that is not a column", [B + "test_cli_batch_key"],
         lambda: ["report", _clustered_with_record("c.h5ad"), "rep", "--batch-key", "nope", "--quiet"]),
    Case("report --batch-key naming the clustering itself", [B + "test_cli_batch_key"],
         lambda: ["report", _clustered_with_record("c.h5ad"), "rep", "--batch-key", "scgpcl", "--quiet"]),
    # --- simulate
    Case("simulate: unknown preset", [T + "test_cli.py::test_simulate_subcommand", T + "test_simulate.py::test_cli_bad_input", T + "test_simulate.py::test_bad_calls_raise_input_error"],
         lambda: ["simulate", "sim.h5ad", "--preset", "no_such_preset"]),
    Case("simulate: output not ending in .h5ad", [T + "test_simulate.py::test_simulate_refuses_an_output_that_is_not_h5ad"],
         lambda: ["simulate", "counts.csv", "--n-cells", "20", "--n-genes", "30"]),
    Case("simulate: group probabilities not summing to 1", [T + "test_simulate.py::test_cli_bad_input", T + "test_simulate.py::test_bad_params_raise_input_error"],
         lambda: ["simulate", "sim.h5ad", "--group-prob", "0.5", "0.4"]),
    Case("simulate: output folder does not exist", [T + "test_simulate.py::test_cli_bad_input"],
         lambda: ["simulate", "missing/sim.h5ad"]),
    Case("output: a link into a folder that does not exist", [T + "test_simulate.py::test_a_link_into_a_missing_folder_is_named_as_such"],
         lambda: ["simulate", dangling_link("dang.h5ad"), "--n-cells", "20", "--n-genes", "30"]),
    Case("simulate: --n-cells not a number", [T + "test_simulate.py::test_cli_bad_input"],
         lambda: ["simulate", "sim.h5ad", "--n-cells", "many"]),
    Case("--target-sum that --choose-target-sum would discard",
         [T + "test_config.py::test_a_target_sum_that_choose_target_sum_would_discard_is_refused"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--choose-target-sum", "--target-sum", "5000", *CLUSTER]),
    # --- data-parallel training
    Case("--processes 0", [T + "test_distributed.py::test_distributed_options_are_checked"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--processes", "0", *CLUSTER]),
    Case("--runs 0", [T + "test_runs.py::test_cli_runs"],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--runs", "0", *CLUSTER]),
    Case("--runs 2 with --processes 2", [T + "test_runs.py::test_cli_runs", T + _EARLY],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--runs", "2", "--processes", "2", *CLUSTER]),
    Case("--kmeans-select central with --processes 2 (refused before any process starts)",
         [T + "test_distributed.py::test_central_kmeans_selection_is_refused_with_two_processes", T + _EARLY],
         lambda: ["cluster", h5ad("in.h5ad"), "out.h5ad", "--kmeans-select", "central", "--processes", "2", *CLUSTER]),
]


def _set_x(a: ad.AnnData, x) -> ad.AnnData:
    a.X = x
    return a


def _per_cell(x: np.ndarray, total: float) -> np.ndarray:
    """Every cell scaled to ``total`` (scanpy's normalize_total)."""
    return x / x.sum(1, keepdims=True) * total


def _tutorial(a: ad.AnnData) -> ad.AnnData:
    """scanpy's tutorial order: normalize_total, log1p, then adata.raw = adata (so .raw is log-normalised too)."""
    a.X = sp.csr_matrix(np.log1p(_per_cell(a.X.toarray(), 1e4)))
    a.raw = a.copy()
    return a


def _tutorial_with_counts(a: ad.AnnData) -> ad.AnnData:
    """scanpy's tutorial order, the counts kept first in layers['counts'] (as many tutorials advise)."""
    counts = a.X.copy()
    a = _tutorial(a)
    a.layers["counts"] = counts
    return a


def _truncated(name: str) -> str:
    h5ad(name)
    data = Path(name).read_bytes()
    Path(name).write_bytes(data[: len(data) // 2])
    return name


def _other_h5(name: str) -> str:
    with h5py.File(name, "w") as f:
        f["expression"] = np.ones((3, 3))
    return name


def _zarr_store(name: str) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata's note that zarr v3 becomes the default
        toy().write_zarr(name)
    return name


def _not_anndata_zarr(name: str) -> str:
    Path(name).mkdir()
    (Path(name) / "zarr.json").write_text("not json")
    return name


def _unclear(name: str) -> str:
    counts = np.random.default_rng(0).poisson(1.5, size=(12, 7))
    pd.DataFrame(counts, index=[f"r{i}" for i in range(12)], columns=[f"x{j}" for j in range(7)]).to_csv(name)
    return name


def _scaled_clustered(name: str) -> str:
    a = toy()
    a.X = a.X.toarray() - 1.0
    a.obs["scgpcl"] = pd.Categorical(a.obs["cell_type"].astype(str))
    a.write_h5ad(name)
    return name


def _clustered_with_record(name: str) -> str:
    a = toy()
    a.obs["scgpcl"] = pd.Categorical(a.obs["cell_type"].astype(str))
    a.obsm["X_scgpcl"] = np.zeros((a.n_obs, 2), dtype=np.float32)
    a.uns["scgpcl"] = {"params": {"n_clusters": 3}}
    a.write_h5ad(name)
    return name


# ----------------------------------------------------------------------------- Python-only problems
def _python_cases() -> list[Case]:
    import scgpcl
    from scgpcl import SCGPCL, tl
    from scgpcl.data._checks import check_counts, check_n_clusters
    from scgpcl.sklearn import SCGPCLClustering

    def reordered_cells():
        a = toy()
        tl.store_results(a[::-1].copy(), SCGPCL(a, 3))  # refused before predict(): no training needed

    @contextlib.contextmanager
    def read_backed(a, name: str):
        """``a`` written to ``name`` and read back backed (X on disk), closed after the block."""
        a.write_h5ad(name)
        b = ad.read_h5ad(name, backed="r")
        try:
            yield b
        finally:  # an h5py file left open until the interpreter's exit can crash it there
            b.file.close()

    def backed():
        with read_backed(toy(), "backed.h5ad") as a:
            check_counts(a.X)

    def x_none():
        a = toy()
        a.layers["counts"] = a.X.copy()
        a.X = None
        tl.cluster(a, n_clusters=3, progress=False)

    def duplicated_genes():
        a = toy()
        names = a.var_names.to_numpy().copy()
        names[1] = names[0]
        a.var_names = names
        SCGPCL(a, 3)

    def unknown_option():
        SCGPCL(toy(), 3, no_such_option=1)

    def scanpy_option():
        tl.cluster(toy(), n_clusters=3, progress=False, use_raw=True)

    def load_other_genes():
        import shutil

        m = SCGPCL(toy(), 3, pretrain_rounds=2, warmup_rounds=1, finetune_rounds=1)
        m.train(progress=False)
        shutil.rmtree("m", ignore_errors=True)
        m.save("m")
        SCGPCL.load("m", toy()[:, :10].copy())

    def load_few_cells():
        import shutil

        m = SCGPCL(toy(), 3, pretrain_rounds=2, warmup_rounds=1, finetune_rounds=1)
        m.train(progress=False)
        shutil.rmtree("m3", ignore_errors=True)
        m.save("m3")
        SCGPCL.load("m3", toy()[:2].copy())

    def load_corrupt():
        Path("m2").mkdir()
        Path("m2/config.json").write_text("{not json")
        SCGPCL.load("m2", toy())

    def load_mixed_pair():
        import os
        import shutil

        for k in (2, 3):
            shutil.rmtree(f"pair{k}", ignore_errors=True)
            SCGPCL(toy(), k, pretrain_rounds=2, warmup_rounds=1, finetune_rounds=1).train(progress=False).save(f"pair{k}")
        os.replace("pair2/model.pt", "pair3/model.pt")
        SCGPCL.load("pair3", toy())

    def save_over_leftovers():
        Path("left").mkdir(exist_ok=True)
        Path("left/model.pt.0123456789ab.tmp").write_bytes(b"partial")
        SCGPCL(toy(), 3, pretrain_rounds=2, warmup_rounds=1, finetune_rounds=1).train(progress=False).save("left")

    def unknown_loss_term():
        SCGPCL(toy(), 3, loss_weights={"sprad": 1.0})

    def no_loss_left():
        SCGPCL(toy(), 3, lambda_ins=0, loss_weights={"zinb": 0.0})

    def sklearn_preset():
        SCGPCLClustering(n_clusters=3, preset="nope").fit(np.ones((30, 20)))

    def pl_missing():
        from scgpcl import pl

        a = toy()
        a.obs["scgpcl"] = pd.Categorical(a.obs["cell_type"].astype(str))
        pl.cluster_sizes(a, key="other")

    def umap_one_axes_for_two_panels():
        from matplotlib.figure import Figure

        from scgpcl import pl

        a = toy()
        a.obs["scgpcl"] = pd.Categorical(a.obs["cell_type"].astype(str))
        pl.umap(a, label_key="cell_type", ax=Figure().subplots())

    def umap_identical_cells():
        from scgpcl import pl

        a = toy()
        a.obsm["X_scgpcl"] = np.ones((a.n_obs, 4), dtype=np.float32)
        pl.umap_coordinates(a)

    def auto_k_three_cells():
        SCGPCL(toy(n_per=1)[:2].copy(), None)

    def zero_runs():
        import scgpcl

        scgpcl.tl.cluster(toy(), n_clusters=3, n_runs=0)

    def sklearn_anndata():
        SCGPCLClustering(n_clusters=3).fit(toy())

    def sklearn_masked():
        x = toy().X.toarray()
        SCGPCLClustering(n_clusters=3).fit(np.ma.masked_array(x, mask=x > 2))

    def backed_view():
        with read_backed(toy(), "backed_view.h5ad") as a:
            tl.cluster(a[:50], n_clusters=3, progress=False)

    def backed_markers():
        a = toy()
        a.obs["scgpcl"] = pd.Categorical(a.obs["cell_type"].astype(str))
        with read_backed(a, "backed_markers.h5ad") as b:
            tl.markers(b)

    def sklearn_boolean():
        SCGPCLClustering(n_clusters=3).fit(toy().X > 0)

    def backed_raw():
        a = toy()
        a.layers["ln"] = a.X.copy()
        a.layers["ln"].data = np.log1p(a.layers["ln"].data)
        a.raw = a.copy()
        a.raw.X.data[:] = np.log1p(a.raw.X.data)
        with read_backed(a, "raw_backed.h5ad") as b:
            SCGPCL(b, 3, layer="ln")

    return [
        Case("n_clusters=2.5", [T + "test_checks.py::test_bad_n_clusters", T + "test_auto_k.py::test_bad_n_clusters_still_raise"],
             call=lambda: check_n_clusters(2.5, 100)),
        Case("a backed AnnData (X on disk)", [T + "test_checks.py::test_backed_matrix_refused_with_advice"], call=backed),
        Case("a backed AnnData whose .raw (on disk) holds no counts either", [T + "test_io.py::test_a_backed_or_boolean_raw_is_described_not_crashed_on"],
             call=backed_raw),
        Case("an AnnData given to SCGPCLClustering.fit", [T + "test_sklearn.py::test_inputs_fit_takes_for_something_else_are_named"],
             call=sklearn_anndata),
        Case("a view of a backed AnnData, clustered in place", [T + "test_model.py::test_not_an_anndata_or_not_a_config_is_named_with_the_fix"],
             call=backed_view),
        Case("marker genes (or a report) of a backed AnnData", [T + "test_markers.py::test_markers_and_the_report_on_a_backed_anndata_say_to_load_it"],
             call=backed_markers),
        Case("a boolean matrix given to SCGPCLClustering.fit", [T + "test_sklearn.py::test_a_backed_matrix_is_read_and_a_boolean_one_refused"],
             call=sklearn_boolean),
        Case("a masked array given to SCGPCLClustering.fit", [T + "test_sklearn.py::test_inputs_fit_takes_for_something_else_are_named"],
             call=sklearn_masked),
        Case("adata.X is None, counts in a layer", [T + "test_model.py::test_x_none_points_to_the_layers"], call=x_none),
        Case("duplicated gene names in var_names", [T + "test_model.py::test_duplicated_gene_names_refused"],
             call=duplicated_genes),
        Case("an option scgpcl does not have", [T + "test_model.py::test_bad_arguments", T + "test_sklearn.py::test_bad_input_raises_input_error"],
             call=unknown_option),
        Case("use_raw=True, as scanpy's functions take it", [T + "test_config.py::test_options_of_other_tools_say_what_scgpcl_takes_instead"],
             call=scanpy_option),
        Case("loss_weights naming a loss term that is not registered", [T + "test_objective.py::test_a_zero_weight_skips_the_term_and_an_unknown_name_is_refused"],
             call=unknown_loss_term),
        Case("every loss term of pre-training weighted 0", [T + "test_objective.py::test_a_stage_left_with_no_loss_is_refused_before_training",
                                                            T + "test_objective.py::test_a_term_of_the_users_is_enough_for_a_stage"],
             call=no_loss_left),
        Case("n_clusters=None (estimate K) with 2 cells", [T + "test_auto_k.py::test_auto_k_needs_three_cells"],
             call=auto_k_three_cells),
        Case("SCGPCL.load on data lacking the model's genes", [T + "test_model.py::test_load_checks_genes"],
             call=load_other_genes),
        Case("SCGPCL.load on fewer cells than the model's clusters",
             [T + "test_model.py::test_load_on_fewer_cells_than_clusters_names_the_model_not_n_clusters"],
             call=load_few_cells),
        Case("SCGPCL.load of a damaged config.json", [T + "test_model.py::test_load_refuses_corrupt_files_by_name", T + "test_model.py::test_save_and_load_errors_name_the_problem"],
             call=load_corrupt),
        Case("SCGPCL.load of a model.pt from another save than its config.json",
             [T + "test_failures.py::test_weights_and_config_of_two_saves_are_not_loaded_as_one_model"],
             call=load_mixed_pair),
        Case("SCGPCL.save into a folder holding only a killed save's temporary file",
             [T + "test_failures.py::test_a_folder_holding_only_a_killed_saves_leftovers_says_so"],
             call=save_over_leftovers),
        Case("SCGPCLClustering(preset='nope')", [T + "test_sklearn.py::test_bad_input_raises_input_error"], call=sklearn_preset),
        Case("a key that is not a column name (a list)", [B + "test_keys_that_are_not_column_names_are_refused"],
             call=lambda: tl.cluster(toy(), n_clusters=3, batch_key=["sample"], progress=False)),
        Case("tl.store_results into an AnnData with the model's cells in another order",
             [T + "test_model.py::test_results_go_only_to_the_cells_the_model_was_built_on"], call=reordered_cells),
        Case("config=scgpcl.faithful (the function, not called)",
             [T + "test_model.py::test_not_an_anndata_or_not_a_config_is_named_with_the_fix"],
             call=lambda: tl.cluster(toy(), n_clusters=3, config=scgpcl.faithful)),
        Case("a matrix instead of an AnnData", [T + "test_model.py::test_not_an_anndata_or_not_a_config_is_named_with_the_fix"],
             call=lambda: tl.cluster(toy().X, n_clusters=3)),
        Case("n_runs=0", [T + "test_runs.py::test_a_bad_number_of_runs_is_refused_before_training"], call=zero_runs),
        Case("a figure for a key with no clustering", [T + "test_pl.py::test_missing_keys_raise_input_error", T + "test_pl.py::test_umap_without_embedding"],
             call=pl_missing),
        Case("pl.umap with label_key (two panels) given one axes", [T + "test_pl.py::test_figures_draw_into_axes_of_ones_own"],
             call=umap_one_axes_for_two_panels),
        Case("a UMAP of a representation with fewer than 4 distinct cells",
             [T + "test_pl.py::test_umap_needs_four_distinct_cells"], call=umap_identical_cells),
    ]


# ----------------------------------------------------------------------------- running
def _first_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line
    return lines[0] if lines else ""


def run(case: Case, workdir: Path) -> None:
    here = Path.cwd()
    workdir.mkdir()
    os.chdir(workdir)
    try:
        with warnings.catch_warnings(), (case.context() if case.context else contextlib.nullcontext()):
            warnings.simplefilter("ignore")
            if case.call is not None:
                case.command = "(Python)"
                try:
                    case.call()
                except InputError as err:
                    case.message, case.exit = str(err).splitlines()[0], "InputError"
                else:
                    case.message, case.exit = "(no error)", "none"
                return
            argv = case.argv()
            case.command = "scgpcl " + " ".join(argv)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv)
                except SystemExit as e:  # argparse: usage errors
                    code = e.code
            case.message, case.exit = _first_error_line(err.getvalue()), str(code)
    finally:
        os.chdir(here)


def tests_asserting_bad_input() -> list[str]:
    """Test functions whose body asserts on InputError or on exit code 2."""
    found = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        src = path.read_text()
        for node in ast.parse(src).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                body = ast.get_source_segment(src, node) or ""
                if "InputError" in body or re.search(r"(==|code ==)\s*2\b", body):
                    found.append(f"tests/{path.name}::{node.name}")
    return found


#: tests that assert on InputError or exit code 2 but whose bad input is not a separate row above, and why
NOT_A_ROW = {
    "tests/test_io.py::test_a_zarr_store_without_the_zarr_package_names_the_install":
        "a .zarr store where the zarr package is missing (anndata 0.11): the page is made where zarr is installed",
    "tests/test_io.py::test_orientation_is_not_guessed_on_scaled_or_backed_data":
        "the inputs of the rows 'negative values' and the backed AnnData: checks that the orientation guess "
        "leaves both to their own messages",
    "tests/test_cli.py::test_argument_errors_take_one_line":
        "the rows '-k that is not a number' and 'no input or output given': checks that each is one line",
    "tests/test_model.py::test_load_reads_the_counts_from_another_layer_when_told":
        "the Python API's SCGPCL.load on log-normalised X: the same check as 'non-integer values (normalised X)'",
    "tests/test_runs.py::test_the_medoid_is_the_run_the_others_agree_with":
        "not an input: '== 2' matched the index of the medoid",
    "tests/test_runs.py::test_sklearn_runs": "not an input: '== 2' matched the number of runs",
    "tests/test_cli.py::test_a_model_trained_with_use_raw_loads_on_the_file_it_came_from":
        "loads a model on data whose .raw holds no counts: the 'X not integer counts' refusal of the rows above",
    "tests/test_runs.py::test_cluster_sizes_are_warned_about_for_the_kept_run_only":
        "not an input: '== 2' matched a count of warnings",
    "tests/test_report.py::test_a_cluster_is_not_shown_as_a_label_it_holds_no_cell_of":
        "not an input: '== 2' matched the number of outlined pairs",
    "tests/test_cli.py::test_an_interrupted_stage_ends_its_progress_bar_before_the_message":
        "a Ctrl-C during training, not a bad input",
    "tests/test_checks.py::test_the_advice_names_a_layer_only_when_there_is_one_to_pick":
        "the inputs of the value rows; checks the advice with and without layers to pick",
    "tests/test_checks.py::test_float_round_off_counts_as_integer": "asserts that round-off is *not* refused",
    "tests/test_checks.py::test_negative_message_lists_layers": "same input as 'negative values'; checks the layer list",
    "tests/test_checks.py::test_empty_matrix_refused": "0 cells or 0 genes: no file format produces it before another error",
    "tests/test_checks.py::test_unknown_reconstruction": "check_counts(reconstruction='x'); the CLI's --reconstruction has fixed choices",
    "tests/test_checks.py::test_sparse_checked_without_densifying": "memory behaviour of the NaN check",
    "tests/test_checks.py::test_auto_is_none_where_k_may_be_estimated": "check_n_clusters('auto') where K must be "
        "given, called directly; every caller that takes 'auto' allows it, and '-k that is not a number' stands for the refusal",
    "tests/test_sklearn.py::test_input_errors_speak_of_the_matrix_not_of_an_anndata": "the 'negative values' "
        "refusal through the scikit-learn estimator; checks that its advice speaks of a matrix",
    "tests/test_checks.py::test_empty_labels_are_missing_and_placeholders_are_named": "the 'no labels (all NaN)' "
        "refusal with empty strings; the rest of it asserts warnings",
    "tests/test_pl.py::test_umap_writes_dozens_of_clusters_on_the_data_and_sizes_panels_for_their_legends": "a "
        "figure that succeeds; the '== 2' is the legend's two columns",
    "tests/test_saved_models.py::test_options_an_earlier_version_had_load_when_they_did_nothing_and_are_named_when_they_did":
        "a saved model's config.json edited to hold another version's options; load() of a model made by an "
        "earlier version cannot be built on the command line",
    "tests/test_checks.py::test_label_key_no_obs_columns": "same as '--label-key that is not a column', on an obs without columns",
    "tests/test_checks.py::test_values_of_absurd_size_are_called_corrupt": "the check behind '.h5ad whose values are damaged'",
    "tests/test_cli.py::test_quiet_keeps_warnings_that_change_the_data": "uses -k 100000 to stop early; checks the warning",
    "tests/test_cli.py::test_the_report_umap_is_added_to_the_output_after_the_report": "a run that succeeds; the "
        "'== 2' is the UMAP's two columns",
    "tests/test_io.py::test_orientation_warning_survives_quiet": "uses -k 100000 to stop early; checks the warning",
    "tests/test_model.py::test_large_data_path_rounds_within_an_epoch_and_global_steps_on_a_sample": "not an input: '== 2' matched a comparison (steps per round)",
    "tests/test_auto_k_rules.py::test_scores_on_the_joined_space_use_the_saved_components": "not an input: '== 2' matched a comparison (the PCA weight recorded)",
    "tests/test_model.py::test_fine_tuning_stops_before_a_round_that_empties_a_cluster": "a training behaviour (DEC stops before a cluster empties), not a bad input",
    "tests/test_docs.py::test_readme_keeps_the_two_commands": "checks the README text for the exit code of pytest, not a bad input",
    "tests/test_io.py::test_write_h5ad_atomic_missing_directory": "write_h5ad_atomic() called directly; the CLI checks the folder first",
    "tests/test_graph.py::test_graph_ignores_stored_zeros": "only the graph; the InputError is from an unrelated check",
    "tests/test_model.py::test_save_load_round_trip": "a good round trip; one assertion on a refused overwrite",
    "tests/test_model.py::test_out_of_range_options_refused_before_training": "17 option values, one message pattern: '--batch-size 0' stands for them",
    "tests/test_auto_k.py::test_leiden_criterion_without_igraph_fails_early": "needs igraph to be missing",
    "tests/test_preprocess.py::test_seurat_v3_without_scikit_misc_names_the_package": "needs scikit-misc to be missing",
    "tests/test_preprocess.py::test_unknown_selection_is_refused": "select_genes() directly; the CLI's --gene-selection has fixed choices",
    "tests/test_preprocess.py::test_choose_target_sum_scores_the_features_prepare_makes": "choose_target_sum() directly with n_clusters = the cells; the model never calls it with such a K (it skips the choice and logs why)",
    "tests/test_pl.py::test_training_curves_marks_stages_and_stops": "one assertion on a history without epochs",
    "tests/test_pl.py::test_marker_dotplot_columns": "n_genes=0 of the dot plot, as 'markers --n-genes 0'",
    "tests/test_simulate.py::test_bad_params_raise_input_error": "17 Splat parameter values; 'group probabilities not summing to 1' stands for them",
    "tests/test_simulate.py::test_cli_writes_file": "one assertion on an existing output",
    "tests/test_report.py::test_report_without_markers_when_every_cluster_is_a_single_cell": "asserts the report is written; n_markers=0 as '--n-genes 0'",
    "tests/test_packaging.py::test_no_exact_pins": "not an input: '== 2' matched a comparison",
    "tests/test_failures.py::test_the_check_before_training_asks_for_the_compressed_share":
        "the same check as the full-disk row, with --compression: checks the room asked, not a message",
    "tests/test_failures.py::test_cluster_refuses_an_output_the_disk_has_no_room_for_before_training":
        "an output the disk has no room for: needs a full disk, faked in the test; the page runs on a disk with room",
    "tests/test_failures.py::test_a_save_cut_between_its_two_files_leaves_a_pair_load_refuses_even_over_an_older_model":
        "the same refusal as 'SCGPCL.load of a model.pt from another save than its config.json', after a save cut "
        "between its two renames",
    "tests/test_failures.py::test_cluster_refuses_a_model_folder_the_disk_has_no_room_for_before_training":
        "a --save-model folder the disk has no room for: needs a full disk, faked in the test",
    "tests/test_report.py::test_report_files_and_html": "not an input: '== 2' matched the count of a version in the "
        "report (the run's and the report's own)",
    "tests/test_distributed.py::test_command_refuses_central_kmeans_for_several_processes_without_a_process_group":
        "the same '--kmeans-select central' refusal, called directly with WORLD_SIZE=2",
    "tests/test_joined.py::test_negative_weight_is_refused_before_training":
        "one more option out of range (kmeans_pca_weight < 0): '--batch-size 0' stands for them",
    "tests/test_distributed.py::test_bad_input_under_two_processes_is_one_error_and_no_hang":
        "'-k larger than the number of cells' under --processes 2: one error line from two processes, no hang",
    "tests/test_distributed.py::test_nccl_without_cuda_is_one_input_error": "needs two processes and a machine "
        "without CUDA; the page does not start process groups",
    "tests/test_distributed.py::test_processes_nccl_cannot_give_a_gpu_each_are_refused_before_any_work":
        "processes nccl cannot give a GPU each (--device cuda:0 for all, more processes than GPUs, nccl on the CPU): "
        "needs GPUs, faked in the test; the page is made on a machine without CUDA",
    "tests/test_distributed.py::test_sharded_loader_splits_every_global_minibatch":
        "a minibatch too small to give 8 processes 2 cells each: needs 8 processes to reach from the CLI",
    "tests/test_distributed.py::test_processes_two_clusters_and_rank_0_writes_in_input_order":
        "not an input: '== 2' matched the number of processes",
    "tests/test_distributed.py::test_a_signal_ends_every_process_and_leaves_no_output":
        "not an input: '== 2' matched the number of processes",
    "tests/test_distributed.py::test_processes_with_different_features_refuse_to_train_together":
        "processes of one group that prepared different data (another cell scaling on one rank): needs a "
        "process group whose ranks are given different inputs; the page does not start process groups",
}


def render(cases: list[Case], api: list[Case]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    cited = {t for c in cases + api for t in c.tests}
    scanned = tests_asserting_bad_input()
    uncited = [t for t in scanned if t not in cited]
    unknown_cited = sorted(t for t in cited if t not in set(scanned) and not _test_exists(t))
    lines = [
        "# Bad inputs and what scgpcl says",
        "",
        "Generated by `python tools/bad_inputs.py` (from the repository root; `--check` compares); do not edit by hand.",
        "Each row builds the bad input in an empty folder and runs the command line on it (or, in the second table,",
        "the Python call); *message* is the first error line on stderr, *exit* the exit code (2: bad input or usage).",
        "Nothing trains: every one is refused before training. *tests* are the tests that cover the same input.",
        "",
        f"{len(cases)} command-line cases, {len(api)} Python-only cases; {len(scanned)} test functions assert on",
        f"`InputError` or exit code 2, and {len(scanned) - len(uncited)} of them are cited below"
        + (f" (the other {len(uncited)} are listed at the end, with the reason)." if uncited else "."),
        "",
        "## Command line",
        "",
        "| # | bad input | command | message | exit | tests |",
        "|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(cases, 1):
        tests = "<br>".join(f"`{t.removeprefix('tests/')}`" for t in c.tests)
        lines.append(f"| {i} | {cell(c.what)} | `{cell(c.command)}` | {cell(c.message)} | {c.exit} | {tests} |")
    lines += ["", "## Python API only", "", "| # | bad input | message | raises | tests |", "|---|---|---|---|---|"]
    for i, c in enumerate(api, 1):
        tests = "<br>".join(f"`{t.removeprefix('tests/')}`" for t in c.tests)
        lines.append(f"| {i} | {cell(c.what)} | {cell(c.message)} | {c.exit} | {tests} |")
    if uncited:
        lines += ["", "## Tests asserting on a bad input that is not a row above", ""]
        for t in uncited:
            lines.append(f"- `{t.removeprefix('tests/')}`: {NOT_A_ROW.get(t, 'NOT EXPLAINED: add a case or a reason')}")
    if unknown_cited:
        lines += ["", "## Cited tests that do not exist", ""] + [f"- `{t}`" for t in unknown_cited]
    return "\n".join(lines) + "\n"


def _test_exists(ref: str) -> bool:
    path, _, name = ref.partition("::")
    p = ROOT / path
    return p.exists() and re.search(rf"^def {re.escape(name)}\(", p.read_text(), re.M) is not None


def build() -> str:
    logging.getLogger().addHandler(logging.NullHandler())  # the CLI's logging.basicConfig then leaves stderr alone
    # one thread for the processes the cases start; restored after, since the tests run this in their own process
    with environment(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")), tempfile.TemporaryDirectory() as tmp:
        api = _python_cases()
        for i, case in enumerate(CASES + api):
            run(case, Path(tmp) / f"case{i:02d}")
    for case in CASES:
        if case.exit not in {"2"}:
            raise SystemExit(f"case {case.what!r}: exit {case.exit}, expected 2: {case.message}")
    for case in api:
        if case.exit != "InputError":
            raise SystemExit(f"case {case.what!r}: {case.exit}, expected an InputError")
    return render(CASES, api)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with docs/bad_inputs.md instead of writing it")
    args = parser.parse_args()
    page = build()
    if args.check:
        same = OUT.exists() and OUT.read_text() == page
        print("docs/bad_inputs.md is up to date" if same else "docs/bad_inputs.md is out of date: run tools/bad_inputs.py")
        raise SystemExit(0 if same else 1)
    OUT.write_text(page)
    print(f"wrote {OUT.relative_to(ROOT)}")
