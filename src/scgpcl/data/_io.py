"""Read count matrices from the common single-cell formats; write h5ad atomically.

Supported inputs (chosen by the path):

========================================  ====================================
path                                      reader
========================================  ====================================
``*.h5ad``                                :func:`anndata.io.read_h5ad`
AnnData ``.zarr`` store (a folder)        :func:`anndata.io.read_zarr`
``*.h5`` / ``*.hdf5``, 10x Genomics       :func:`scanpy.read_10x_h5`
``*.h5`` / ``*.hdf5``, ``X``/``Y`` sets   h5py (scDeepCluster / scDCC layout)
folder with ``matrix.mtx[.gz]``           :func:`scanpy.read_10x_mtx` (Cell Ranger's
                                          layouts), :func:`scanpy.read_mtx`
                                          (others: a gzipped v2 folder, a
                                          features file without its type
                                          column, as GEO re-uploads hold)
``*matrix.mtx[.gz]`` inside such a folder the same; a folder whose one
                                          matrix is ``PREFIX_matrix.mtx[.gz]``
                                          reads the ``PREFIX_`` files
``*.csv`` / ``*.tsv`` / ``*.txt`` /       :func:`anndata.io.read_csv` /
``*.tab`` (each optionally ``.gz``,       :func:`anndata.io.read_text`
``.bz2``)
========================================  ====================================

A folder is a zarr store when it holds zarr's metadata (``.zgroup``,
``zarr.json``), or is named ``*.zarr`` and holds no ``matrix.mtx``; any other
folder is read as a 10x matrix folder.

An ``.h5`` file is told apart by its contents: a ``matrix`` group (Cell Ranger
v3+) or genome groups holding ``data``/``indices``/``indptr``/``shape`` (Cell
Ranger v2) make it a 10x file; a top-level ``X`` (cells x genes counts, dense
or a sparse group) with optional ``Y`` (labels) makes it a benchmark file; an
AnnData file saved as ``.h5`` is read as h5ad.
"""

from __future__ import annotations

import bz2
import csv
import errno
import gzip
import importlib.util
import logging
import os
import re
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from scgpcl._errors import InputError
from scgpcl._fs import is_zarr_store, keep_unclosable, quiet_hdf5_deallocs, replacement_mode, space_problem
from scgpcl._messages import arg, clip, listing, warn_user
from scgpcl._signals import deferred, raise_if_interrupted
from scgpcl.data._checks import (
    boolean_matrix_message,
    check_label_key,
    count_layers,
    is_number,
    raw_not_even_estimated_counts,
)
from scgpcl.data._orientation import anndata_guess, guess_orientation

logger = logging.getLogger("scgpcl")

SUPPORTED_FORMATS = (
    ".h5ad (AnnData); an AnnData .zarr store; "
    ".h5 / .hdf5 (10x Genomics, or the scDeepCluster/scDCC layout with datasets X and Y); "
    "a 10x matrix folder (matrix.mtx[.gz] with features.tsv[.gz] or genes.tsv[.gz], and barcodes.tsv[.gz]); "
    ".csv / .tsv / .txt / .tab text tables, optionally compressed as .gz or .bz2"
)

#: text table suffixes; the separator is found from the first lines (``_sniff_separator``)
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".tab")
_COMPRESSED_SUFFIXES = {".gz", ".bz2"}
_H5_SUFFIXES = {".h5", ".hdf5", ".he5"}
_MTX_NAMES = ("matrix.mtx", "matrix.mtx.gz")
#: formats that are AnnData: layer= and use_raw= apply; rows are cells unless genes_as_rows says otherwise
_ANNDATA_FORMATS = {"h5ad", "zarr"}
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
        A ``.h5ad`` file, an AnnData ``.zarr`` store (a folder), a 10x
        Genomics ``.h5`` file, a 10x matrix folder (or its
        ``matrix.mtx[.gz]``, any file-name prefix allowed), an ``.h5`` file
        in the scDeepCluster/scDCC layout (datasets ``X``: cells x genes counts
        and ``Y``: labels), or a text table ``.csv``/``.tsv``/``.txt``/``.tab``
        (optionally ``.gz``/``.bz2``).
    layer
        ``.h5ad`` and ``.zarr`` only: the counts are in ``adata.layers[layer]``, not in
        ``X``. They stay there (converted like ``X`` is otherwise, see
        Returns) and ``X`` is kept as the file had it, so pass the same
        ``layer`` to :class:`~scgpcl.SCGPCL` or :func:`scgpcl.tl.cluster`.
    use_raw
        ``.h5ad`` and ``.zarr`` only: the counts are in ``adata.raw`` (next to, say, a
        log-normalised ``X``). The result is ``adata.raw.to_adata()``: the raw
        counts in ``X``, ``var`` from ``raw`` (which may have more genes), and
        ``obs``/``obsm``/``uns`` from the file, less ``uns['log1p']`` (scanpy's
        mark that ``X`` is log-transformed, which no longer holds).
    genes_as_rows
        Text tables, AnnData files and benchmark ``.h5`` files, whose
        orientation the format does not fix. ``True``: rows are genes (the
        table, or the AnnData, is transposed); ``False``: rows are cells.
        ``None`` (default): benchmark ``.h5`` files are read with cells as
        rows; for text tables the orientation is guessed from the row and
        column names (gene ids and symbols, cell barcodes) and the counts
        (:func:`~scgpcl.data._orientation.guess_orientation`), with a
        warning when the table is read as genes x cells, and an
        :class:`InputError` asking for ``True`` or ``False`` when the guess
        is not clear. An explicit value always wins (with a warning when the
        names suggest the opposite). AnnData files are taken as cells x
        genes, as AnnData stores them, unless the same guess clearly says
        the rows are genes: then an :class:`InputError` asks for ``True`` or
        ``False``. Passing ``True`` for 10x input is an error.
    label_key
        If given, ``obs[label_key]`` must exist. Benchmark ``.h5`` files
        put their ``Y`` labels in ``obs['cell_type']``.

    Returns
    -------
    AnnData with ``X`` (or ``layers[layer]``) a :class:`scipy.sparse.csr_matrix` of float32 in
    canonical form (sorted indices, no duplicates, no stored zeros) and unique
    ``obs_names``/``var_names`` (duplicates get ``-1``, ``-2``, ... appended,
    with a warning: the renamed ones no longer match other tables).
    Text tables: the separator (tab, ``;``, ``,`` or spaces) is found from the
    first lines, and decimal commas are read in ``;``-separated tables; a
    missing value (``NA``, empty) is an error naming its row and column, as
    counts cannot be missing (write 0 where missing means "not detected").
    Sparse input is never densified; dense input is converted to CSR. ``uns``
    is left as the file had it (with ``use_raw``, less ``uns['log1p']``). The
    counts are not checked here: :class:`~scgpcl.SCGPCL` and
    :func:`scgpcl.tl.cluster` check them before training.

    Raises
    ------
    InputError
        Missing file, unsupported format, unreadable or corrupt file, unknown
        layer, misplaced ``layer``/``genes_as_rows``, a text table with
        missing or non-numeric values or of unclear orientation, an AnnData
        file that clearly looks stored genes x cells (without
        ``genes_as_rows``), a boolean matrix, or missing ``label_key``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"input file '{path}' does not exist")

    fmt, mtx_prefix = _detect_format(path)
    if use_raw and layer is not None:
        raise InputError("use_raw (--use-raw) and layer (--layer) name two different count matrices; pass one")
    if use_raw and fmt not in _ANNDATA_FORMATS:
        raise InputError(f"use_raw (--use-raw) applies only to AnnData input (.h5ad, .zarr); '{path}' is read as "
                         f"{_FORMAT_NAMES[fmt]}")
    if layer is not None and fmt not in _ANNDATA_FORMATS:
        raise InputError(
            f"{arg(f'layer={layer!r}', f'--layer {layer}')} applies only to AnnData input (.h5ad, .zarr); '{path}' "
            "is read as "
            f"{_FORMAT_NAMES[fmt]}; leave it out"
        )
    if genes_as_rows and fmt in {"10x-h5", "10x-mtx"}:
        raise InputError(
            f"{arg('genes_as_rows=True', '--genes-as-rows')} applies only to text tables, AnnData files and X/Y "
            f"benchmark .h5 files; '{path}' is read as {_FORMAT_NAMES[fmt]}, whose layout fixes the cells"
        )

    with warnings.catch_warnings():
        # names are made unique below, with a log message of our own
        warnings.filterwarnings("ignore", message=r".*names are not unique")
        with _reading(path, _FORMAT_NAMES[fmt]):  # the readers' failures only: a failure of ours is no bad file
            if fmt in _ANNDATA_FORMATS:
                adata = _read_anndata(path, layer, use_raw, zarr=fmt == "zarr")
            elif fmt == "10x-h5":
                import scanpy as sc

                adata = sc.read_10x_h5(path)
            elif fmt == "10x-mtx":
                adata = _read_10x_mtx(path, mtx_prefix)
            elif fmt == "xy-h5":
                adata = _read_xy_h5(path, genes_as_rows=bool(genes_as_rows))
            else:
                adata = _read_text(path, genes_as_rows=genes_as_rows)
        if fmt in _ANNDATA_FORMATS:
            adata = _orient_anndata(adata, path, layer, genes_as_rows)
        adata = _finalize(adata, layer, path)

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


def _nbytes(x) -> int:
    """Bytes an array, sparse matrix, data frame or nested dict of them takes (0 for anything else)."""
    if x is None:
        return 0
    if sp.issparse(x):
        return int(x.data.nbytes + getattr(x, "indices", np.empty(0)).nbytes + getattr(x, "indptr", np.empty(0)).nbytes)
    if isinstance(x, pd.DataFrame):
        return int(x.memory_usage(deep=True, index=True).sum())
    if isinstance(x, pd.Series | pd.Index):
        return int(x.memory_usage(deep=True))
    if isinstance(x, np.ndarray):
        return int(x.nbytes) if x.dtype != object else 8 * x.size + sum(len(str(v)) for v in x.ravel()[:100_000])
    if isinstance(x, dict):
        return sum(_nbytes(v) for v in x.values())
    return 0


def h5ad_bytes(adata: AnnData) -> int:
    """About the size of ``adata`` written uncompressed as .h5ad: its arrays and tables, plus 5 % and 1 MB."""
    parts = [adata.obs, adata.var, adata.uns]
    on_disk = 0
    if not adata.isbacked:
        parts.append(adata.X)
    elif adata.filename is not None and Path(adata.filename).is_file():  # X stays on disk, and is copied
        on_disk = Path(adata.filename).stat().st_size
    for mapping in (adata.layers, adata.obsm, adata.varm, adata.obsp, adata.varp):
        parts += list(mapping.values())
    if adata.raw is not None:
        parts += [adata.raw.X, adata.raw.var]
    return int((sum(_nbytes(x) for x in parts) + on_disk) * 1.05) + 1_000_000


def write_h5ad_atomic(
    adata: AnnData,
    path: str | os.PathLike,
    *,
    compression: str | None = None,
    overwrite: bool = True,
) -> None:
    """Write ``adata`` to ``path`` as h5ad so that a failure never leaves a partial file.

    The data go to a hidden temporary file in the same directory, which then
    replaces ``path`` in one :func:`os.replace`. If writing fails (or is
    interrupted), the temporary file is removed, the error is re-raised and any
    existing file at ``path`` is left as it was. A file too large for the free
    space (or ``ulimit -f``) is refused before writing.

    Parameters
    ----------
    adata
        The object to write.
    path
        Output file.
    compression
        Passed to :meth:`anndata.AnnData.write_h5ad` (``"gzip"``, ``"lzf"`` or ``None``).
    overwrite
        Replace an existing file (the default; refusing is then the caller's
        decision, made before its work). With ``False``, a file that appeared
        at ``path`` meanwhile (another run) is not replaced: the data are kept
        under a new name beside it, which the error names.

    Raises
    ------
    InputError
        If the output directory does not exist or ``path`` is a directory.
    FileExistsError
        ``overwrite=False`` and ``path`` exists; its message names where the data went.
    OSError
        Not enough space, or the write failed.
    """
    path = Path(path).expanduser()
    if path.is_symlink():  # replace the file the link points to, not the link (which would leave it stale)
        path = path.resolve()
    directory = path.parent
    if not directory.is_dir():
        raise InputError(f"cannot write '{path}': directory '{directory}' does not exist")
    if path.is_dir():
        raise InputError(f"cannot write '{path}': it is a directory")
    # h5py ends the process (a segmentation fault) when the disk fills part-way: refuse before writing
    problem = space_problem(directory, space_needed(h5ad_bytes(adata), compression))
    if problem:
        raise OSError(errno.ENOSPC, f"not enough space: the file {problem}")
    tmp = directory / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    placed = False
    try:
        try:
            with quiet_hdf5_deallocs():
                adata.write_h5ad(tmp, compression=compression)
        except Exception as err:
            plain = _system_error(err)
            if plain is None:
                raise
            keep_unclosable(err)  # a system error inside HDF5: h5py cannot free the write's objects
            raise plain from err
        raise_if_interrupted()  # a Ctrl-C or SIGTERM dropped inside a finaliser during the write
        if overwrite and path.exists():  # the replaced file's permissions, not the umask's (a private file stays so)
            os.chmod(tmp, replacement_mode(path, 0o666))
        with deferred():  # a signal during the placing is delivered after it, to a caller told it is placed
            if overwrite:
                os.replace(tmp, path)
            else:
                _place_new(tmp, path)
            placed = True
    except BaseException as err:  # also KeyboardInterrupt and the CLI's SIGTERM (scgpcl._signals)
        if placed:  # the file is complete at path: the interruption came after (say so: err.written)
            err.written = [str(path)]
            raise
        with deferred():  # a second signal must not cut the clean-up short
            try:
                tmp.unlink(missing_ok=True)
            except OSError:  # e.g. a file system gone read-only, which refuses even to unlink a missing file
                if tmp.exists():
                    logger.warning("could not remove temporary file '%s'", tmp)
        raise


#: what to do about the system errors HDF5 reports inside its messages
_WRITE_ERROR_FIX = {errno.ENOSPC: "free some space, or write the output elsewhere",
                    errno.EFBIG: "raise the file-size limit (ulimit -f)",
                    errno.EDQUOT: "free some of your quota, or write the output elsewhere"}


def _system_error(err: BaseException) -> OSError | None:
    """A full disk or file-size limit that an HDF5 write failure reports inside its message, as a plain OSError.

    h5py's own message is several lines of HDF5 internals (time, descriptor, buffer address, offset). Only
    these errors leave objects h5py cannot free (:func:`scgpcl._fs.keep_unclosable`); None for the others.
    """
    found = re.search(r"errno = (\d+)", str(err))
    code = int(found.group(1)) if found else None
    if code not in _WRITE_ERROR_FIX:  # others (a file lock: "unable to lock file, errno = 11") keep HDF5's words
        return None
    return OSError(code, f"{os.strerror(code)}: {_WRITE_ERROR_FIX[code]}")


def space_needed(raw_bytes: int, compression: str | None) -> int:
    """The room asked for an .h5ad of ``raw_bytes`` uncompressed (:func:`h5ad_bytes`) written with ``compression``.

    A compressed file is smaller by a factor the data decide. gzip gave 17-36 % of the raw size on the
    benchmark files and the simulator's presets, so half is asked; lzf gave 35-68 % on the shared
    datasets, so the whole raw size is asked (``benchmarks/results/scale_notes.md``).
    """
    return raw_bytes // 2 if compression == "gzip" else raw_bytes


def _place_new(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path`` only if no file is there; else keep it beside ``path`` under a new name.

    A hard link makes the check and the rename one step; on a file system without hard links, the
    check comes just before the rename. Raises FileExistsError naming the new name when ``path`` exists.
    """
    try:
        os.link(tmp, path)
        linked = True
    except FileExistsError:
        linked = False
    except OSError:  # no hard links here
        linked = not path.exists()
        if linked:
            os.replace(tmp, path)
            return
    if linked:
        tmp.unlink()
        return
    for _ in range(100):
        kept = path.with_name(f"{path.stem}.{uuid.uuid4().hex[:6]}{path.suffix}")
        if not kept.exists():
            os.replace(tmp, kept)
            raise FileExistsError(errno.EEXIST, f"'{path}' appeared while this ran (another run?) and is not replaced "
                                  f"without {arg('overwrite=True', '--overwrite')}; the results were written to "
                                  f"'{kept}' instead", str(kept))
    raise FileExistsError(errno.EEXIST, f"'{path}' appeared while this ran")  # pragma: no cover - 100 names taken


# ---------------------------------------------------------------------------
# format detection

_FORMAT_NAMES = {
    "h5ad": ".h5ad (AnnData) file",
    "zarr": "AnnData .zarr store",
    "10x-h5": "10x Genomics .h5 file",
    "10x-mtx": "10x matrix folder (matrix.mtx[.gz], features/genes and barcodes .tsv[.gz])",
    "xy-h5": ".h5 file with datasets X (cells x genes counts) and Y (labels)",
    "text": "text table (numbers only, with optional header row and first column of names)",
    "h5": "HDF5 file",
}


def _detect_format(path: Path) -> tuple[str, str]:
    """Return the format key and, for 10x mtx files, the file-name prefix."""
    if path.is_dir():
        # a .zarr folder without zarr's metadata is a store too: anndata's reader then says what is wrong
        if is_zarr_store(path):
            return "zarr", ""
        return "10x-mtx", _folder_mtx_prefix(path)
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
    if last == ".zarr":
        raise InputError(f"'{path}' is a file, not a folder: a zipped zarr store? Unzip it and pass the folder")
    if last == ".loom":
        raise InputError(
            f"'{path}' is a loom file, which scgpcl does not read directly: convert it once with anndata "
            "(pip install loompy; then in Python: anndata.io.read_loom(path).write_h5ad('data.h5ad')) and pass the "
            ".h5ad, with --layer naming the raw counts if X does not hold them"
        )
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
        with suppress(OSError):
            if path.is_file() and path.stat().st_size == 0:
                raise InputError(f"cannot read '{path}': the file is empty (0 bytes); write or copy it again") from err
        reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else ""
        if "truncated file" in reason:  # HDF5: the file ends before its own recorded end
            raise InputError(f"cannot read '{path}': the file is incomplete (truncated: {clip(reason)}); an "
                             "interrupted copy or download leaves this, so copy it again") from err
        reason = clip(reason, 300) or type(err).__name__
        raise InputError(f"cannot read '{path}': {reason}. Is it a valid {what}?") from err


# ---------------------------------------------------------------------------
# readers


def _read_anndata(path: Path, layer: str | None, use_raw: bool = False, *, zarr: bool = False) -> AnnData:
    from anndata.io import read_h5ad, read_zarr

    if zarr and importlib.util.find_spec("zarr") is None:  # anndata installs zarr itself only from 0.12 on
        raise InputError(f"cannot read '{path}': reading a .zarr store needs the zarr package, which is not "
                         f"installed; run: {_zarr_install()} (or write the data as .h5ad)")
    adata = read_zarr(path) if zarr else read_h5ad(path)
    if use_raw:
        if adata.raw is None:
            layers = ", ".join(repr(k) for k in adata.layers) or "none"
            raise InputError(f"'{path}' has no .raw, so {arg('use_raw=True', '--use-raw')} has nothing to read: "
                             f"the raw counts must be in X (leave out {arg('use_raw', '--use-raw')}) or in a layer "
                             f"({arg('layer=NAME', '--layer NAME')}; this file's layers: {layers})")
        _refuse_raw_beside_a_counts_layer(adata, path)
        counts = adata.raw.to_adata()
        # scanpy's mark that X is log-transformed describes the X left behind, not the counts now in X
        counts.uns.pop("log1p", None)
        left = ([f"X ({adata.n_vars} genes)"] if adata.X is not None else []) + \
            ([f"the layers {listing(list(adata.layers))}"] if len(adata.layers) else []) + \
            ([f"var's columns {listing(list(adata.var.columns))}"] if len(adata.var.columns) else [])
        if left:
            warn_user(f"{arg('use_raw', '--use-raw')}: the counts of .raw ({counts.n_vars} genes) take X's place, "
                      f"with the cells' annotations (obs, obsm, obsp, uns); {', '.join(left)} "
                      f"{'is' if len(left) == 1 else 'are'} left out of the {arg('AnnData read', 'output')} "
                      "(the input file is not changed)")
        return counts
    if layer is not None:
        if layer not in adata.layers:
            available = ", ".join(repr(k) for k in adata.layers)
            x = arg("X (layer=None)", "X (leave out --layer)")
            available = f"layers {available} and {x}" if available else f"only {x}"
            raise InputError(f"layer {layer!r} not found in '{path}'; available: {available}")
    elif adata.X is None:
        available = ", ".join(repr(k) for k in adata.layers) or "none"
        raw = "; or --use-raw / use_raw=True for the counts in .raw" if adata.raw is not None else ""
        raise InputError(
            f"'{path}' has no X matrix; pick the layer holding raw counts with "
            f"--layer / layer= (available layers: {available}){raw}"
        )
    return adata


def _zarr_install() -> str:
    """The pip command that installs a zarr this anndata can use: anndata before 0.12 reads zarr 2 only."""
    from importlib.metadata import version

    try:
        major, minor = (int(part) for part in version("anndata").split(".")[:2])
    except ValueError:  # a development version such as "0.13.0.dev1+g..." still parses; anything else: 0.12+
        major, minor = 0, 12
    return "pip install 'zarr<3'" if (major, minor) < (0, 12) else "pip install zarr"


def _refuse_raw_beside_a_counts_layer(adata: AnnData, path: Path) -> None:
    """``use_raw`` on a .raw that is clearly no count matrix while a layer holds counts: name that layer.

    The layers are dropped with the rest of X's side once .raw is taken, so this is the last point that
    can name them. Values that are only non-integer (estimated counts, which ``reconstruction='mse'``
    accepts) are left to the later checks.
    """
    if not len(adata.layers):
        return
    problem = raw_not_even_estimated_counts(adata.raw.X)
    if problem is None:
        return
    good = count_layers(adata.layers)
    if good:
        others = f" (so do {listing(good[1:])})" if len(good) > 1 else ""  # the usual names for counts first
        raise InputError(f"the .raw of '{path.name}' ({arg('use_raw=True', '--use-raw')}) holds no raw counts: "
                         f"{problem}. The layer {good[0]!r} holds integer counts{others}: pass "
                         f"{arg(f'layer={good[0]!r}', f'--layer {good[0]}')} instead of {arg('use_raw', '--use-raw')}")


def _orient_anndata(adata: AnnData, path: Path, layer: str | None, genes_as_rows: bool | None) -> AnnData:
    """AnnData keeps cells in rows: a file that looks stored genes x cells is refused unless the user says.

    ``genes_as_rows=True`` transposes it (obs and var swap; ``.raw`` is not carried over, with a warning),
    ``False`` takes it as it is, ``None`` refuses it when :func:`anndata_looks_transposed` says its rows are
    genes. An explicit value that the guess contradicts is followed, with a warning (as for text tables).
    """
    shape = f"{adata.n_obs} rows x {adata.n_vars} columns"
    guess = anndata_guess(adata.obs_names, adata.var_names, adata.X if layer is None else adata.layers[layer])
    if genes_as_rows is None:
        if guess is not None and guess.genes_as_rows:
            raise InputError(
                f"'{path}' looks stored genes x cells ({shape}: {adata.n_vars} cells?), since "
                f"{' and '.join(guess.reasons)}; scgpcl would cluster its genes. If the rows are genes, pass "
                f"{arg('genes_as_rows=True', '--genes-as-rows')} to read it transposed (or save adata.T); if they "
                f"are cells, pass {arg('genes_as_rows=False', '--cells-as-rows')}"
            )
        return adata
    if guess is not None and guess.genes_as_rows is not None and guess.genes_as_rows != genes_as_rows:
        given = arg(f"genes_as_rows={genes_as_rows}", "--genes-as-rows" if genes_as_rows else "--cells-as-rows")
        warnings.warn(
            f"'{path.name}' is read with {given} as asked, but {' and '.join(guess.reasons)}, which suggests "
            f"the {'rows' if genes_as_rows else 'columns'} are cells",
            UserWarning, stacklevel=3,
        )
    if not genes_as_rows:
        return adata
    if adata.raw is not None:
        warnings.warn(
            f"'{path.name}' has a .raw, which reading it transposed leaves out; if .raw holds the counts, add "
            f"{arg('use_raw=True', '--use-raw')}",
            UserWarning, stacklevel=3,
        )
    logger.info("'%s' (%s) transposed as asked: %d cells x %d genes", path, shape, adata.n_vars, adata.n_obs)
    return adata.T


def _folder_mtx_prefix(folder: Path) -> str:
    """The file-name prefix of a matrix folder's files ('' for Cell Ranger's names).

    A folder whose only matrix is e.g. ``GSM123_matrix.mtx.gz`` (as GEO names them) has the prefix ``GSM123_``.
    """
    with suppress(OSError):
        names = [p.name for p in folder.iterdir()]
        if any(n in _MTX_NAMES for n in names):
            return ""
        prefixes = {n[: len(n) - len(m)] for n in names for m in _MTX_NAMES if n.endswith(m)}
        if len(prefixes) == 1:
            prefix = prefixes.pop()
            logger.info("'%s': reading the files named %s*", folder, prefix)
            return prefix
    return ""


def _read_10x_mtx(path: Path, prefix: str) -> AnnData:
    import scanpy as sc

    folder = path if path.is_dir() else path.parent
    present = {p.name for p in folder.iterdir()}
    legacy = {f"{prefix}matrix.mtx", f"{prefix}genes.tsv", f"{prefix}barcodes.tsv"}
    v3 = {f"{prefix}matrix.mtx.gz", f"{prefix}features.tsv.gz", f"{prefix}barcodes.tsv.gz"}

    def first(*stems: str) -> str | None:  # any of the names, gzipped or not
        return next((f"{prefix}{s}{z}" for s in stems for z in ("", ".gz") if f"{prefix}{s}{z}" in present), None)

    matrix, features, barcodes = first("matrix.mtx"), first("features.tsv", "genes.tsv"), first("barcodes.tsv")
    if not (matrix and features and barcodes):
        relevant = sorted(n for n in present if prefix in n)
        more = f" and {len(relevant) - 10} more" if len(relevant) > 10 else ""
        found = (", ".join(relevant[:10]) + more) or "nothing relevant"
        raise InputError(
            f"cannot read '{path}' as a 10x matrix folder: it needs either "
            f"{', '.join(sorted(v3))} (Cell Ranger v3+) or {', '.join(sorted(legacy))} "
            f"(Cell Ranger v2), gzipped or not; found: {found}"
        )
    cells_as_rows, columns = _check_mtx_lists(folder / matrix, folder / features, folder / barcodes)
    if not cells_as_rows and ((v3 <= present and columns >= 3) or (legacy <= present and columns >= 2)):
        return sc.read_10x_mtx(folder, prefix=prefix or None)
    # what scanpy's reader does not take: a v2 folder gzipped, v3 features without their type column (GEO
    # re-uploads: scanpy fails with KeyError: 2), a matrix stored cells x genes
    return _read_mtx_files(folder / matrix, folder / features, folder / barcodes, columns, cells_as_rows)


def _check_mtx_lists(matrix: Path, features: Path, barcodes: Path) -> tuple[bool, int]:
    """Whether the Matrix Market file is stored cells x genes, and the features file's number of columns.

    10x stores genes x cells, and writes id, name and type in the features file (GEO copies may have fewer
    columns). Told from the gene and barcode lists, which must have a line per row and column of it in one of the two
    orders; otherwise the files are not of one matrix, and that is said. Each file is read once.
    """
    listed, columns = [], 0
    for path in (features, barcodes):
        n = 0
        with _open_text(path) as handle:
            for line in handle:
                if line.strip():
                    if n == 0 and path is features:
                        columns = len(line.rstrip("\r\n").split("\t"))
                    n += 1
        listed.append(n)
    n_genes, n_cells = listed
    with _open_text(matrix) as handle:
        header = next((line for line in handle if not line.startswith("%")), "")
    try:
        n_rows, n_cols = (int(v) for v in header.split()[:2])
    except ValueError:
        return False, columns  # the reader says what is wrong with the matrix
    if (n_rows, n_cols) == (n_genes, n_cells):
        return False, columns
    if (n_rows, n_cols) == (n_cells, n_genes):
        logger.info("'%s' is stored cells x genes (%d x %d; 10x stores genes x cells): read as such", matrix.name,
                    n_rows, n_cols)
        return True, columns
    raise InputError(
        f"'{matrix.name}' holds a {n_rows} x {n_cols} matrix, but '{features.name}' lists {n_genes} genes and "
        f"'{barcodes.name}' {n_cells} barcodes: the files are not of one matrix (one of them cut short, or taken "
        "from another sample); download or copy them again"
    )


def _read_mtx_files(matrix: Path, features: Path, barcodes: Path, columns: int, cells_as_rows: bool = False) -> AnnData:
    """A Matrix Market file (genes x cells) with its gene and barcode lists, as an AnnData of cells x genes.

    Named as scanpy's 10x reader names them: gene symbols as var_names with the ids in ``var['gene_ids']``;
    Gene Expression rows only.
    """
    import scanpy as sc

    adata = sc.read_mtx(matrix)
    adata = adata if cells_as_rows else adata.T
    genes = pd.read_csv(features, header=None, sep="\t", dtype=str, keep_default_na=False)
    cells = pd.read_csv(barcodes, header=None, sep="\t", dtype=str, keep_default_na=False)
    adata.obs_names = cells[0].to_numpy()
    if columns >= 2:
        adata.var_names = genes[1].to_numpy()
        adata.var["gene_ids"] = genes[0].to_numpy()
    else:
        adata.var_names = genes[0].to_numpy()
    if columns >= 3:
        adata.var["feature_types"] = genes[2].to_numpy()
        adata = adata[:, (genes[2] == "Gene Expression").to_numpy()].copy()
    logger.info("'%s': read with its %s (%s)", matrix.parent, features.name,
                "one column: gene names" if columns == 1 else "gene ids and names" if columns == 2
                else "gene ids, names and types")
    return adata


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
                    f"{n_cells} cells{' (X was transposed: genes_as_rows=True)' if genes_as_rows else ''}"
                    f"{fix or '; the file is inconsistent: write it again with one label in Y per row of X'}"
                )
            obs["cell_type"] = _labels_to_categorical(y)
    return AnnData(X, obs=obs, var=var)


def _open_text(path: Path):
    # UTF-8 (a BOM dropped), as pandas reads the rest of the file: the locale's encoding (cp1252 on Windows)
    # garbled the names read from here ('Tcrβ' became 'TcrÎ²')
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    if suffix == ".bz2":
        return bz2.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")


#: values read as missing: pandas' usual NA spellings (NA, NaN, N/A, null, empty ...)
_NA_TOKENS = frozenset({"", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None", "#N/A", "<NA>",
                        "#NA", "1.#IND", "1.#QNAN", "-1.#IND", "-1.#QNAN"})
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+(?:[eE][+-]?\d+)?$")


@dataclass
class _TextLayout:
    """How a text table is laid out, from its first lines."""

    sep: str | None  # None: runs of whitespace
    decimal: str
    skip: int  # lines before the first data row (comments, blank lines, the header)
    header: list[str] | None
    names_column: bool  # the first column holds row names
    n_fields: int  # fields per data row


def _split(line: str, sep: str | None) -> list[str]:
    if sep is None:
        return [f[1:-1] if len(f) >= 2 and f[0] == f[-1] == '"' else f for f in line.split()]
    return next(csv.reader([line], delimiter=sep))


def _first_lines(path: Path, n: int = 12) -> tuple[list[str], int]:
    """Up to ``n`` non-blank lines that do not start with '#', and how many lines came before the first."""
    lines: list[str] = []
    before = 0
    with _open_text(path) as handle:
        for line in handle:
            text = line.rstrip("\r\n")
            if not text.strip() or text.startswith("#"):
                if not lines:
                    before += 1
                continue
            lines.append(text)
            if len(lines) >= n:
                break
    return lines, before


def _field_count(lines: list[str], sep: str | None) -> int:
    """The number of fields most of ``lines`` have when split on ``sep`` (0 if fewer than half agree)."""
    counts = [len(_split(line, sep)) for line in lines]
    best = max(set(counts), key=counts.count)
    return best if counts.count(best) * 2 > len(counts) else 0


def _sniff_separator(lines: list[str]) -> str | None:
    """The separator that splits most sampled data lines into the same number (2+) of fields.

    Tab, then ';', then ',', else runs of whitespace. ';' is tried before ','
    so that a European CSV (``1,5;2;0``) is split on the semicolons, its commas
    being decimal commas. The file's suffix does not decide: a ``.csv`` written
    with ';' or tabs is common.
    """
    data = lines[1:] or lines
    for sep in ("\t", ";", ","):
        if _field_count(data, sep) >= 2:
            return sep
    return None


def _text_layout(path: Path) -> _TextLayout:
    lines, before = _first_lines(path)
    if not lines:
        raise InputError(f"cannot read '{path}': it holds no table (empty, or only '#' comment lines)")
    sep = _sniff_separator(lines)
    rows = [[f.strip() for f in _split(line, sep)] for line in lines]
    first, rest = rows[0], rows[1:]
    n_fields = _field_count([line for line in lines[1:]], sep) if rest else len(first)
    if n_fields < 2:
        raise InputError(f"cannot read '{path}': found no separator (tab, ';', ',' or spaces) that splits its lines "
                         f"into the same number of fields. Is it a valid {_FORMAT_NAMES['text']}?")
    rest = [r for r in rest if len(r) == n_fields] or rest  # a ragged line is named by the full read
    header = None
    if (len(first) == n_fields - 1 and rest) or not is_number(first[-1]) or first[0] == "":
        # a header: names in its last field, a blank corner (pandas' index), or one field short (R's write.table)
        header, rest = first, rest
    else:
        rest = rows
    if not rest:
        raise InputError(f"cannot read '{path}': it has no rows of numbers, only the header line. "
                         f"Is it a valid {_FORMAT_NAMES['text']}?")
    names_column = (
        (not is_number(rest[0][0]) and rest[0][0] not in _NA_TOKENS)
        or (header is not None and (header[0] == "" or len(header) == n_fields - 1))
    )
    values = [v for r in rest for v in (r[1:] if names_column else r)]
    decimal = "," if sep != "," and any(_DECIMAL_COMMA.match(v) for v in values) else "."
    return _TextLayout(sep=sep, decimal=decimal, skip=before + (1 if header is not None else 0), header=header,
                       names_column=names_column, n_fields=n_fields)


def _diagnose_text(path: Path, layout: _TextLayout, col_names: list[str]) -> str:
    """The first line that does not fit the table, in words: wrong number of fields, or a value that is no number."""
    with _open_text(path) as handle:
        line_no = 0
        data_seen = 0
        for raw in handle:
            line_no += 1
            text = raw.rstrip("\r\n")
            if not text.strip() or text.startswith("#"):
                continue
            data_seen += 1
            if data_seen == 1 and layout.header is not None:
                continue
            fields = [f.strip() for f in _split(text, layout.sep)]
            if len(fields) != layout.n_fields:
                return (f"line {line_no} has {len(fields)} fields, but the table's rows have {layout.n_fields}"
                        f"{' (is the separator ' + repr(layout.sep) + ' right?)' if layout.sep else ''}")
            start = 1 if layout.names_column else 0
            for j, value in enumerate(fields[start:]):
                number = value.replace(",", ".") if layout.decimal == "," else value
                if value in _NA_TOKENS or not is_number(number):
                    where = (f"row {fields[0]!r} (line {line_no})" if layout.names_column else f"line {line_no}") + (
                        f", column {col_names[j]!r}" if j < len(col_names) else f", field {j + 1 + start}")
                    if value in _NA_TOKENS:
                        return _missing_value(where)
                    return (f"{where} holds {value[:40]!r}, which is not a number. "
                            f"Is it a valid {_FORMAT_NAMES['text']}?")
    return "a value that is not a number"


def _missing_value(where: str) -> str:
    return (f"{where} is missing (NA or empty); scgpcl needs a count in every cell of the table: "
            "if missing means 'not detected', write 0 there")


def _read_text(path: Path, *, genes_as_rows: bool | None) -> AnnData:
    layout = _text_layout(path)
    n_values = layout.n_fields - (1 if layout.names_column else 0)
    if layout.header is None:
        col_names = [str(j) for j in range(n_values)]
    else:
        col_names = layout.header[len(layout.header) - n_values:] if len(layout.header) >= n_values else []
        if len(col_names) != n_values:
            raise InputError(
                f"cannot read '{path}': its header has {len(layout.header)} names but its rows have {n_values} "
                f"values{' and a name' if layout.names_column else ''}. Is it a valid {_FORMAT_NAMES['text']}?"
            )
    dtype = {j: np.float32 for j in range(1 if layout.names_column else 0, layout.n_fields)}
    if layout.names_column:
        dtype[0] = str
    try:
        frame = pd.read_csv(
            path, sep=layout.sep if layout.sep is not None else r"\s+", header=None, skiprows=layout.skip,
            index_col=0 if layout.names_column else None, dtype=dtype, decimal=layout.decimal,
            na_values=sorted(_NA_TOKENS), keep_default_na=False, skip_blank_lines=True, comment=None,
            engine="c", quotechar='"',
        )
    except (ValueError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read '{path}': {_diagnose_text(path, layout, col_names)}") from err
    values = frame.to_numpy(dtype=np.float32, copy=False)
    if values.shape[1] != n_values:  # pragma: no cover - the parser refuses ragged rows first
        raise InputError(f"cannot read '{path}': {_diagnose_text(path, layout, col_names)}")
    missing = np.isnan(values)
    if missing.any():
        i, j = (int(v[0]) for v in np.nonzero(missing))
        row = f"row {str(frame.index[i])!r}" if layout.names_column else f"data row {i + 1}"
        raise InputError(f"cannot read '{path}': {_missing_value(f'{row}, column {col_names[j]!r}')}")
    row_names = [str(n) for n in frame.index] if layout.names_column else [str(i) for i in range(values.shape[0])]
    X = sp.csr_matrix(values)
    del frame, values
    if layout.decimal == ",":
        logger.info("'%s': separator ';', decimal comma", path)

    guess = guess_orientation(row_names, col_names, X)
    shape = f"{X.shape[0]} rows x {X.shape[1]} columns"
    if genes_as_rows is None:
        if guess.genes_as_rows is None:
            raise InputError(
                f"cannot tell whether the rows of '{path}' ({shape}; rows e.g. {row_names[0]!r}, columns e.g. "
                f"{col_names[0]!r}) are cells or genes: {'; '.join(guess.doubts)}. Say which: "
                f"{arg('genes_as_rows=False', '--cells-as-rows')} if each row is a cell, "
                f"{arg('genes_as_rows=True', '--genes-as-rows')} if each row is a gene"
            )
        genes_as_rows = guess.genes_as_rows
        if genes_as_rows:
            warnings.warn(
                f"'{path.name}' read as genes x cells ({shape}: {X.shape[1]} cells), since {' and '.join(guess.reasons)}; "
                f"if the rows are cells, pass {arg('genes_as_rows=False', '--cells-as-rows')}",
                UserWarning, stacklevel=3,
            )
        else:
            logger.info("'%s': rows are cells (%s)", path, " and ".join(guess.reasons))
    elif guess.genes_as_rows is not None and guess.genes_as_rows != genes_as_rows:
        # the orientation given is authoritative; say when the table looks the other way round
        given = arg(f"genes_as_rows={genes_as_rows}", "--genes-as-rows" if genes_as_rows else "--cells-as-rows")
        other = arg(f"genes_as_rows={not genes_as_rows}", "--cells-as-rows" if genes_as_rows else "--genes-as-rows")
        warnings.warn(
            f"'{path.name}' is read with {given} as asked, but {' and '.join(guess.reasons)}, which suggests "
            f"the {'rows' if genes_as_rows else 'columns'} are cells; if so, pass {other}",
            UserWarning, stacklevel=3,
        )
    obs, var = pd.DataFrame(index=pd.Index(row_names)), pd.DataFrame(index=pd.Index(col_names))
    if genes_as_rows:
        return AnnData(X.T.tocsr(), obs=var, var=obs)
    return AnnData(X, obs=obs, var=var)


# ---------------------------------------------------------------------------
# common post-processing


#: float32 holds every integer up to this one exactly; above it, only some
_FLOAT32_EXACT = 2**24


def _warn_float32_rounding(X, where: str) -> None:
    """Say so when counts stored with more precision than float32 hold values it changes (some above 2**24)."""
    dtype = np.dtype(X.dtype) if X is not None else None
    if dtype is None or not ((dtype.kind in "iu" and dtype.itemsize >= 4) or (dtype.kind == "f" and dtype.itemsize > 4)):
        return
    values = X.data if sp.issparse(X) else np.asarray(X)
    big = values[values > _FLOAT32_EXACT]  # below it float32 holds every integer
    changed = big[big.astype(np.float32) != big]
    if changed.size:
        warn_user(
            f"{where} holds {changed.size} count(s) that float32 cannot hold exactly (above {_FLOAT32_EXACT:,}, e.g. "
            f"{float(changed[0]):,.0f}, which becomes {float(np.float32(changed[0])):,.0f}); scgpcl keeps counts as "
            "float32, so the output's counts differ from the input's there. Single cells rarely hold such counts: "
            "check that these are counts of one cell"
        )


def _finalize(adata: AnnData, layer: str | None = None, path: Path | None = None) -> AnnData:
    """The counts (X, or ``layers[layer]``) as canonical float32 CSR; unique string names."""
    X = adata.X if layer is None else adata.layers[layer]
    if X is not None and np.dtype(X.dtype).kind == "b":  # before it becomes 0.0/1.0 floats below
        raise InputError(boolean_matrix_message("X" if layer is None else f"layers[{layer!r}]"))
    _warn_float32_rounding(X, "X" if layer is None else f"layers[{layer!r}]")
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
        try:  # damaged indices would crash scipy's C code below (a segmentation fault), not raise
            X.check_format(full_check=True)
        except ValueError as err:
            raise InputError(
                f"cannot read '{path}': its sparse count matrix is damaged ({err}), so the file looks corrupt, as "
                "from a copy or download that went wrong; copy or export it again"
            ) from None
    else:
        try:
            X = sp.csr_matrix(np.asarray(X, dtype=np.float32))
        except (TypeError, ValueError) as err:  # text or objects in a dense matrix
            where = "X" if layer is None else f"layers[{layer!r}]"
            raise InputError(f"{where} of '{path}' must hold numbers (raw counts): {clip(str(err))}") from None
    if not X.has_canonical_format:
        X.sum_duplicates()
    X.eliminate_zeros()
    if layer is None:
        adata.X = X
    else:
        adata.layers[layer] = X
    for axis, names in (("obs", adata.obs_names), ("var", adata.var_names)):
        duplicated = names[names.duplicated()].unique()
        if len(duplicated):
            n_duplicated = int(names.duplicated().sum())
            getattr(adata, f"{axis}_names_make_unique")()
            what = "cell" if axis == "obs" else "gene"
            # a warning, not a note: the renamed cells (genes) no longer match their names in other tables
            warnings.warn(
                f"renamed {n_duplicated} duplicated {what} names by appending -1, -2, ... "
                f"(e.g. {str(duplicated[0])!r} -> {str(duplicated[0]) + '-1'!r}); joins on the {what} names with "
                f"other tables (metadata, annotations) will not match them",
                UserWarning, stacklevel=3,
            )
    return adata
