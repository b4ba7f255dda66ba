"""Read count matrices from the common single-cell formats; write h5ad atomically.

Supported inputs (chosen by the path):

========================================  ====================================
path                                      reader
========================================  ====================================
``*.h5ad``                                :func:`anndata.io.read_h5ad`
``*.h5`` / ``*.hdf5``, 10x Genomics       :func:`scanpy.read_10x_h5`
``*.h5`` / ``*.hdf5``, ``X``/``Y`` sets   h5py (scDeepCluster / scDCC layout)
folder with ``matrix.mtx[.gz]``           :func:`scanpy.read_10x_mtx`
``*matrix.mtx[.gz]`` inside such a folder :func:`scanpy.read_10x_mtx`
``*.csv`` / ``*.tsv`` / ``*.txt`` /       :func:`anndata.io.read_csv` /
``*.tab`` (each optionally ``.gz``,       :func:`anndata.io.read_text`
``.bz2``)
========================================  ====================================

An ``.h5`` file is told apart by its contents: a ``matrix`` group (Cell Ranger
v3+) or genome groups holding ``data``/``indices``/``indptr``/``shape`` (Cell
Ranger v2) make it a 10x file; a top-level ``X`` (cells x genes counts, dense
or a sparse group) with optional ``Y`` (labels) makes it a benchmark file; an
AnnData file saved as ``.h5`` is read as h5ad.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import os
import re
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scgpcl._errors import InputError
from scgpcl._signals import deferred, raise_if_interrupted
from scgpcl.data._checks import check_label_key, is_number

logger = logging.getLogger("scgpcl")

SUPPORTED_FORMATS = (
    ".h5ad (AnnData); "
    ".h5 / .hdf5 (10x Genomics, or the scDeepCluster/scDCC layout with datasets X and Y); "
    "a 10x matrix folder (matrix.mtx[.gz] with features.tsv.gz or genes.tsv, and barcodes.tsv[.gz]); "
    ".csv / .tsv / .txt / .tab text tables, optionally compressed as .gz or .bz2"
)

_TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": None, ".tab": None}
_COMPRESSED_SUFFIXES = {".gz", ".bz2"}
_H5_SUFFIXES = {".h5", ".hdf5", ".he5"}
_MTX_NAMES = ("matrix.mtx", "matrix.mtx.gz")
# values read at once when converting a dense on-disk matrix to CSR
_BLOCK_VALUES = 1 << 24


# ---------------------------------------------------------------------------
# public API


def read_counts(
    path: str | os.PathLike,
    *,
    layer: str | None = None,
    genes_as_rows: bool | None = None,
    label_key: str | None = None,
    use_raw: bool = False,
) -> AnnData:
    """Read a cells x genes count matrix into an AnnData.

    Parameters
    ----------
    path
        A ``.h5ad`` file, a 10x Genomics ``.h5`` file, a 10x matrix folder (or
        its ``matrix.mtx[.gz]``, any file-name prefix allowed), an ``.h5`` file
        in the scDeepCluster/scDCC layout (datasets ``X``: cells x genes counts
        and ``Y``: labels), or a text table ``.csv``/``.tsv``/``.txt``/``.tab``
        (optionally ``.gz``/``.bz2``).
    layer
        ``.h5ad`` only: the counts are in ``adata.layers[layer]``, not in
        ``X``. They stay there (converted like ``X`` is otherwise, see
        Returns) and ``X`` is kept as the file had it, so pass the same
        ``layer`` to :class:`~scgpcl.SCGPCL` or :func:`scgpcl.tl.cluster`.
    use_raw
        ``.h5ad`` only: the counts are in ``adata.raw`` (next to, say, a
        log-normalised ``X``). The result is ``adata.raw.to_adata()``: the raw
        counts in ``X``, ``var`` from ``raw`` (which may have more genes), and
        ``obs``/``obsm``/``uns`` from the file.
    genes_as_rows
        Text tables and benchmark ``.h5`` files only, whose orientation the
        format does not fix. By default (``None`` or ``False``) rows are cells
        and columns are genes; ``True`` means rows are genes, and the table is
        transposed. Passing ``True`` for ``.h5ad`` or 10x input is an error.
    label_key
        If given, ``obs[label_key]`` must exist (see
        :func:`~scgpcl.data._checks.check_label_key`). Benchmark ``.h5`` files
        put their ``Y`` labels in ``obs['cell_type']``.

    Returns
    -------
    AnnData with ``X`` (or ``layers[layer]``) a :class:`scipy.sparse.csr_matrix` of float32 in
    canonical form (sorted indices, no duplicates, no stored zeros) and unique
    ``obs_names``/``var_names`` (duplicates get ``-1``, ``-2``, ... appended).
    Sparse input is never densified; dense input is converted to CSR. ``uns``
    is left as the file had it. The counts are not checked here: call
    :func:`~scgpcl.data._checks.check_counts`.

    Raises
    ------
    InputError
        Missing file, unsupported format, unreadable or corrupt file, unknown
        layer, misplaced ``layer``/``genes_as_rows``, or missing ``label_key``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"input file '{path}' does not exist")

    fmt, mtx_prefix = _detect_format(path)
    if use_raw and layer is not None:
        raise InputError("use_raw (--use-raw) and layer (--layer) name two different count matrices; pass one")
    if use_raw and fmt != "h5ad":
        raise InputError(f"use_raw (--use-raw) applies only to .h5ad input; '{path}' is read as {_FORMAT_NAMES[fmt]}")
    if layer is not None and fmt != "h5ad":
        raise InputError(
            f"layer={layer!r} applies only to .h5ad input; '{path}' is read as {_FORMAT_NAMES[fmt]}"
        )
    if genes_as_rows and fmt in {"h5ad", "10x-h5", "10x-mtx"}:
        raise InputError(
            f"genes_as_rows=True applies only to text tables and X/Y benchmark .h5 files; "
            f"'{path}' is read as {_FORMAT_NAMES[fmt]}, whose rows are always cells"
        )

    with _reading(path, _FORMAT_NAMES[fmt]), warnings.catch_warnings():
        # names are made unique below, with a log message of our own
        warnings.filterwarnings("ignore", message=r".*names are not unique")
        if fmt == "h5ad":
            adata = _read_h5ad(path, layer, use_raw)
        elif fmt == "10x-h5":
            import scanpy as sc

            adata = sc.read_10x_h5(path)
        elif fmt == "10x-mtx":
            adata = _read_10x_mtx(path, mtx_prefix)
        elif fmt == "xy-h5":
            adata = _read_xy_h5(path, genes_as_rows=bool(genes_as_rows))
        else:
            adata = _read_text(path, genes_as_rows=bool(genes_as_rows))
        adata = _finalize(adata, layer)

    check_label_key(adata, label_key)
    logger.info("read %d cells x %d genes from '%s' (%s)", adata.n_obs, adata.n_vars, path, fmt)
    return adata


def read_clustered(path: str | os.PathLike) -> AnnData:
    """Read an ``.h5ad`` written by ``scgpcl cluster`` (or saved after :func:`scgpcl.tl.cluster`) as stored.

    For ``scgpcl markers`` / ``scgpcl report``, which take the counts from
    where the clustering did (``uns[key]['params']['layer']``), so ``X`` may
    be absent. Unlike :func:`read_counts`, nothing is converted.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"input file '{path}' does not exist")
    fmt, _ = _detect_format(path)
    if fmt != "h5ad":
        raise InputError(
            f"'{path}' is read as {_FORMAT_NAMES[fmt]}; this command needs the .h5ad written by 'scgpcl cluster'"
        )
    from anndata.io import read_h5ad

    with _reading(path, _FORMAT_NAMES[fmt]):
        return read_h5ad(path)


def write_h5ad_atomic(
    adata: AnnData,
    path: str | os.PathLike,
    *,
    compression: str | None = None,
) -> None:
    """Write ``adata`` to ``path`` as h5ad so that a failure never leaves a partial file.

    The data go to a hidden temporary file in the same directory, which then
    replaces ``path`` in one :func:`os.replace`. If writing fails (or is
    interrupted), the temporary file is removed, the error is re-raised and any
    existing file at ``path`` is left as it was. An existing file is
    overwritten on success: refusing to overwrite is the caller's decision.

    Parameters
    ----------
    adata
        The object to write.
    path
        Output file.
    compression
        Passed to :meth:`anndata.AnnData.write_h5ad` (``"gzip"``, ``"lzf"`` or ``None``).

    Raises
    ------
    InputError
        If the output directory does not exist or ``path`` is a directory.
    """
    path = Path(path).expanduser()
    directory = path.parent
    if not directory.is_dir():
        raise InputError(f"cannot write '{path}': directory '{directory}' does not exist")
    if path.is_dir():
        raise InputError(f"cannot write '{path}': it is a directory")
    tmp = directory / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        adata.write_h5ad(tmp, compression=compression)
        raise_if_interrupted()  # a Ctrl-C or SIGTERM dropped inside a finaliser during the write
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt and the CLI's SIGTERM (scgpcl._signals)
        with deferred():  # a second signal must not cut the clean-up short
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # pragma: no cover - nothing more we can do
                logger.warning("could not remove temporary file '%s'", tmp)
        raise


# ---------------------------------------------------------------------------
# format detection

_FORMAT_NAMES = {
    "h5ad": ".h5ad (AnnData) file",
    "10x-h5": "10x Genomics .h5 file",
    "10x-mtx": "10x matrix folder (matrix.mtx[.gz], features/genes and barcodes .tsv[.gz])",
    "xy-h5": ".h5 file with datasets X (cells x genes counts) and Y (labels)",
    "text": "text table (numbers only, with optional header row and first column of names)",
    "h5": "HDF5 file",
}


def _detect_format(path: Path) -> tuple[str, str]:
    """Return the format key and, for 10x mtx files, the file-name prefix."""
    if path.is_dir():
        return "10x-mtx", ""
    name = path.name.lower()
    for mtx in _MTX_NAMES:
        if name.endswith(mtx):
            return "10x-mtx", path.name[: len(path.name) - len(mtx)]
    suffixes = [s.lower() for s in path.suffixes]
    last = suffixes[-1] if suffixes else ""
    if last == ".h5ad":
        return "h5ad", ""
    if last in _H5_SUFFIXES:
        return _sniff_h5(path), ""
    if last in _COMPRESSED_SUFFIXES and len(suffixes) >= 2:
        last = suffixes[-2]
    if last in _TEXT_SUFFIXES:
        return "text", ""
    raise InputError(
        f"unsupported input '{path}' (extension '{''.join(path.suffixes) or 'none'}'); "
        f"supported formats: {SUPPORTED_FORMATS}"
    )


def _decode(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sniff_h5(path: Path) -> str:
    """Tell a 10x .h5, an X/Y benchmark .h5 and an AnnData file apart by their keys."""
    with _reading(path, _FORMAT_NAMES["h5"]), h5py.File(path, "r") as f:
        keys = list(f.keys())
        if _decode(f.attrs.get("encoding-type", "")) == "anndata":
            return "h5ad"
        if isinstance(f.get("matrix"), h5py.Group):
            return "10x-h5"
        if "X" in f:
            return "xy-h5"
        sparse_parts = {"data", "indices", "indptr", "shape"}
        if any(isinstance(f[k], h5py.Group) and sparse_parts <= set(f[k].keys()) for k in keys):
            return "10x-h5"  # Cell Ranger v2: one group per genome
    shown = ", ".join(repr(k) for k in keys[:20]) or "none"
    raise InputError(
        f"cannot read '{path}': it is an HDF5 file but neither a 10x Genomics .h5 "
        "(group 'matrix', or genome groups with data/indices/indptr/shape) nor the "
        f"scDeepCluster/scDCC layout (datasets 'X' and 'Y'); its top-level keys are: {shown}"
    )


@contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn any reader failure into an InputError naming the file."""
    try:
        yield
    except (InputError, MemoryError):
        raise
    except Exception as err:
        reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else ""
        reason = reason[:300] or type(err).__name__
        raise InputError(f"cannot read '{path}': {reason}. Is it a valid {what}?") from err


# ---------------------------------------------------------------------------
# readers


def _read_h5ad(path: Path, layer: str | None, use_raw: bool = False) -> AnnData:
    from anndata.io import read_h5ad

    adata = read_h5ad(path)
    if use_raw:
        if adata.raw is None:
            raise InputError(f"'{path}' has no .raw; drop --use-raw / use_raw (counts in X) or pick a --layer")
        return adata.raw.to_adata()
    if layer is not None:
        if layer not in adata.layers:
            available = ", ".join(repr(k) for k in adata.layers.keys())
            available = f"layers {available} and X (layer=None)" if available else "only X (layer=None)"
            raise InputError(f"layer {layer!r} not found in '{path}'; available: {available}")
    elif adata.X is None:
        available = ", ".join(repr(k) for k in adata.layers.keys()) or "none"
        raw = "; or --use-raw / use_raw=True for the counts in .raw" if adata.raw is not None else ""
        raise InputError(
            f"'{path}' has no X matrix; pick the layer holding raw counts with "
            f"--layer / layer= (available layers: {available}){raw}"
        )
    return adata


def _read_10x_mtx(path: Path, prefix: str) -> AnnData:
    import scanpy as sc

    folder = path if path.is_dir() else path.parent
    present = {p.name for p in folder.iterdir()}
    legacy = {f"{prefix}matrix.mtx", f"{prefix}genes.tsv", f"{prefix}barcodes.tsv"}
    v3 = {f"{prefix}matrix.mtx.gz", f"{prefix}features.tsv.gz", f"{prefix}barcodes.tsv.gz"}
    if not (legacy <= present or v3 <= present):
        found = ", ".join(sorted(n for n in present if prefix in n))[:300] or "nothing relevant"
        raise InputError(
            f"cannot read '{path}' as a 10x matrix folder: it needs either "
            f"{', '.join(sorted(v3))} (Cell Ranger v3+) or {', '.join(sorted(legacy))} "
            f"(Cell Ranger v2); found: {found}"
        )
    return sc.read_10x_mtx(folder, prefix=prefix or None)


def _dense_to_csr(dset, *, transpose: bool) -> sp.csr_matrix:
    """Read a dense 2-d (on-disk) array into float32 CSR, one block of rows at a time."""
    n_rows, n_cols = dset.shape
    step = max(1, _BLOCK_VALUES // max(1, n_cols))
    blocks = [
        sp.csr_matrix(np.asarray(dset[start : start + step], dtype=np.float32))
        for start in range(0, n_rows, step)
    ]
    X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((n_rows, n_cols), dtype=np.float32)
    return X.T.tocsr() if transpose else X


def _sparse_group_to_csr(group: h5py.Group, *, transpose: bool) -> sp.csr_matrix:
    """Read a CSR/CSC matrix stored as data/indices/indptr/shape in an HDF5 group."""
    fmt = _decode(group.attrs.get("encoding-type", group.attrs.get("h5sparse_format", "csr")))
    if "shape" in group.attrs:
        shape = group.attrs["shape"]
    elif isinstance(group.get("shape"), h5py.Dataset):
        shape = group["shape"][()]
    else:
        raise InputError(f"cannot read sparse 'X' in '{group.file.filename}': it has no shape")
    shape = tuple(int(n) for n in np.asarray(shape))
    parts = (group["data"][()], group["indices"][()], group["indptr"][()])
    cls = sp.csc_matrix if fmt.startswith("csc") else sp.csr_matrix
    X = cls(parts, shape=shape)
    if transpose:
        X = X.T
    return sp.csr_matrix(X, dtype=np.float32)


def _first_names(f: h5py.File, candidates: tuple[str, ...], n: int) -> np.ndarray | None:
    for key in candidates:
        obj = f.get(key)
        if isinstance(obj, h5py.Dataset) and obj.ndim == 1 and obj.shape[0] == n:
            return np.array([_decode(v) for v in obj[()]], dtype=object)
    return None


def _labels_to_categorical(y: np.ndarray) -> pd.Categorical:
    """Benchmark labels (numbers or strings) as a categorical of strings, NaN kept missing."""
    if y.dtype.kind in "SO":
        values = [None if v is None else _decode(v) for v in y]
        return pd.Categorical(values)
    if y.dtype.kind == "U":
        return pd.Categorical(y)
    if y.dtype.kind in "iub":
        y = y.astype(np.int64)
        return pd.Categorical(y.astype(str), categories=[str(v) for v in np.unique(y)])
    missing = np.isnan(y)
    present = y[~missing]
    if present.size and np.all(present == np.round(present)):
        present_str = present.astype(np.int64).astype(str)
        categories = [str(v) for v in np.unique(present.astype(np.int64))]
    else:
        present_str = present.astype(str)
        categories = [str(v) for v in np.unique(present)]
    values = np.empty(y.shape[0], dtype=object)
    values[~missing] = present_str
    values[missing] = None
    return pd.Categorical(values, categories=categories)


def _read_xy_h5(path: Path, *, genes_as_rows: bool) -> AnnData:
    with h5py.File(path, "r") as f:
        x = f["X"]
        if isinstance(x, h5py.Group):
            X = _sparse_group_to_csr(x, transpose=genes_as_rows)
        else:
            if x.ndim != 2:
                raise InputError(f"cannot read '{path}': dataset 'X' should be 2-d, it has shape {x.shape}")
            X = _dense_to_csr(x, transpose=genes_as_rows)
        n_cells, n_genes = X.shape
        obs = pd.DataFrame(index=pd.Index([f"cell_{i}" for i in range(n_cells)]))
        var = pd.DataFrame(index=pd.Index([f"gene_{j}" for j in range(n_genes)]))
        cell_names = _first_names(f, ("cell_names", "barcodes", "obs_names"), n_cells)
        gene_names = _first_names(f, ("gene_names", "genes", "var_names"), n_genes)
        if cell_names is not None:
            obs.index = pd.Index(cell_names)
        if gene_names is not None:
            var.index = pd.Index(gene_names)
        if "Y" in f:
            y = np.asarray(f["Y"][()])
            if y.ndim == 2 and 1 in y.shape:
                y = y.ravel()
            if y.ndim != 1 or y.shape[0] != n_cells:
                fix = ""
                if y.ndim == 1 and y.shape[0] == n_genes:  # one label per column: X is the other way round
                    fix = (
                        "; drop genes_as_rows (CLI: --genes-as-rows), X's rows are cells"
                        if genes_as_rows
                        else "; if X is stored genes x cells, pass genes_as_rows=True (CLI: --genes-as-rows)"
                    )
                raise InputError(
                    f"cannot read '{path}': labels 'Y' have shape {y.shape} but 'X' has "
                    f"{n_cells} cells{' (X was transposed: genes_as_rows=True)' if genes_as_rows else ''}{fix}"
                )
            obs["cell_type"] = _labels_to_categorical(y)
    return AnnData(X, obs=obs, var=var)


def _open_text(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rt")
    if suffix == ".bz2":
        return bz2.open(path, "rt")
    return open(path)


def _sniff_delimiter(path: Path) -> str | None:
    """Delimiter of a .txt/.tab table: tab or comma if the first data line has one."""
    with _open_text(path) as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                if "\t" in line:
                    return "\t"
                if "," in line:
                    return ","
                return None
    return None


def _header_starts_empty(path: Path, delimiter: str | None) -> list[str] | None:
    """The header's fields if its first one is empty (``,g1,g2``): the first column then holds row names.

    anndata's reader takes a first column of numbers (pandas' default integer
    index, numeric gene ids) for data otherwise, and adds a gene (or cell) named ''.
    """
    if delimiter is None:
        return None
    with _open_text(path) as handle:
        for line in handle:
            if line.strip() and not line.startswith("#"):
                fields = [f.strip().strip('"') for f in line.rstrip("\r\n").split(delimiter)]
                return fields if fields[0] == "" else None
    return None


def _read_text(path: Path, *, genes_as_rows: bool) -> AnnData:
    from anndata.io import read_text

    suffixes = [s.lower() for s in path.suffixes]
    table_suffix = suffixes[-2] if suffixes[-1] in _COMPRESSED_SUFFIXES else suffixes[-1]
    delimiter = _TEXT_SUFFIXES[table_suffix]
    if delimiter is None:
        delimiter = _sniff_delimiter(path)
    header = _header_starts_empty(path, delimiter)
    try:
        adata = read_text(path, delimiter=delimiter, first_column_names=True if header else None, dtype="float32")
        if header and len(header) > 1 and is_number(header[-1]) and adata.n_obs > 1 and adata.obs_names[0] == "":
            # column names that are all numbers (',0,1,2'): anndata read the header as a row named ''
            adata = AnnData(adata.X[1:], obs=pd.DataFrame(index=adata.obs_names[1:]),
                            var=pd.DataFrame(index=pd.Index(header[1:])))
    except IndexError as err:  # anndata's parser found no row of numbers
        raise InputError(
            f"cannot read '{path}': it has no rows of numbers. Is it a valid {_FORMAT_NAMES['text']}?"
        ) from err
    if genes_as_rows:
        adata = AnnData(
            sp.csr_matrix(adata.X.T),
            obs=pd.DataFrame(index=adata.var_names.copy()),
            var=pd.DataFrame(index=adata.obs_names.copy()),
        )
    # the orientation is the user's to say; warn when the gene side looks like barcodes
    gene_names = adata.var_names
    if _mostly_barcodes(gene_names):
        side = "row" if genes_as_rows else "column"
        warnings.warn(
            f"the {side} names of '{path}', read as genes, look like cell barcodes (e.g. {gene_names[0]!r}); "
            f"if the {side}s are cells, pass genes_as_rows={not genes_as_rows} "
            f"(CLI: {'drop --genes-as-rows' if genes_as_rows else '--genes-as-rows'})",
            UserWarning,
            stacklevel=2,
        )
    logger.info(
        "text table '%s': rows are %s (pass genes_as_rows=%s if they are %s)",
        path,
        "genes" if genes_as_rows else "cells",
        not genes_as_rows,
        "cells" if genes_as_rows else "genes",
    )
    return adata


_BARCODE = re.compile(r"^(?:[A-Za-z0-9]+[_:.-])?[ACGTN]{10,}(?:[-_.][A-Za-z0-9]+)?$")


def _mostly_barcodes(names: pd.Index, sample: int = 200) -> bool:
    """Whether most names look like 10x/Drop-seq cell barcodes (ACGT strings of 10+ bases)."""
    head = [str(n) for n in names[:sample]]
    return bool(head) and sum(bool(_BARCODE.match(n)) for n in head) > 0.8 * len(head)


# ---------------------------------------------------------------------------
# common post-processing


def _finalize(adata: AnnData, layer: str | None = None) -> AnnData:
    """The counts (X, or ``layers[layer]``) as canonical float32 CSR; unique string names."""
    X = adata.X if layer is None else adata.layers[layer]
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
    else:
        X = sp.csr_matrix(np.asarray(X, dtype=np.float32))
    if not X.has_canonical_format:
        X.sum_duplicates()
    X.eliminate_zeros()
    if layer is None:
        adata.X = X
    else:
        adata.layers[layer] = X
    for axis, names in (("obs", adata.obs_names), ("var", adata.var_names)):
        n_duplicated = int(names.duplicated().sum())
        if n_duplicated:
            getattr(adata, f"{axis}_names_make_unique")()
            logger.info(
                "made %d duplicated %s names unique by appending -1, -2, ...",
                n_duplicated,
                "cell" if axis == "obs" else "gene",
            )
    return adata
