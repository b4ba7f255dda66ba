"""Checks on user input: counts, cluster number and reference labels.

Every problem a user can fix raises :class:`~scgpcl._errors.InputError` with a
message that says what is wrong and what to do about it. Sparse matrices are
checked through their stored values only, in slices, so no check ever
densifies the count matrix.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from scgpcl._errors import InputError
from scgpcl._messages import arg, counted, is_array_input, listing, warn_user
from scgpcl.metrics import has_label, placeholder_labels

#: Reconstruction losses that model the data as counts, and those that do not.
_COUNT_LOSSES = frozenset({"zinb"})
_OTHER_LOSSES = frozenset({"mse"})

#: Values within this relative distance of an integer count as integers
#: (float round-off, e.g. counts recovered as ``expm1(log1p(x))``).
_INTEGER_RTOL = 1e-5

#: Magnitudes that no count matrix, and no normalised, log-transformed or scaled
#: one, holds; random bytes read as float32 (a damaged file) mostly do.
_ABSURD_ABOVE = 1e15
_ABSURD_BELOW = 1e-30

#: Number of values examined at once (bounds temporary memory to a few dozen MiB).
_CHUNK = 1 << 22


@dataclass
class _ValueStats:
    """Summary of the values of a matrix, gathered in one pass."""

    n_values: int = 0
    n_nan: int = 0
    n_inf: int = 0
    n_negative: int = 0
    minimum: float = np.inf
    n_nonzero: int = 0
    n_noninteger: int = 0
    example_noninteger: float | None = None
    n_absurd: int = 0
    example_absurd: float | None = None

    def update(self, values: np.ndarray) -> None:
        values = values.ravel()
        if values.size == 0:
            return
        self.n_values += values.size
        kind = values.dtype.kind
        if kind == "b":
            self.n_nonzero += int(np.count_nonzero(values))
            return
        if kind in "iu":
            self.n_nonzero += int(np.count_nonzero(values))
            if kind == "i":
                self.n_negative += int(np.count_nonzero(values < 0))
                self.minimum = min(self.minimum, float(values.min()))
            return
        if values.dtype.itemsize < 4:  # float16: the bounds below would overflow its range in the comparison
            values = values.astype(np.float32)
        finite = np.isfinite(values)
        if not finite.all():
            nan = np.isnan(values)
            self.n_nan += int(np.count_nonzero(nan))
            self.n_inf += int(values.size - np.count_nonzero(finite) - np.count_nonzero(nan))
            values = values[finite]
            if values.size == 0:
                return
        self.n_nonzero += int(np.count_nonzero(values))
        size = np.abs(values)
        absurd = (size > _ABSURD_ABOVE) | ((size < _ABSURD_BELOW) & (size > 0))
        n_absurd = int(np.count_nonzero(absurd))
        if n_absurd:
            self.n_absurd += n_absurd
            if self.example_absurd is None:
                self.example_absurd = float(values[np.argmax(absurd)])
        negative = np.count_nonzero(values < 0)
        if negative:
            self.n_negative += int(negative)
            self.minimum = min(self.minimum, float(values.min()))
        distance = np.abs(values - np.rint(values))
        noninteger = distance > _INTEGER_RTOL * np.maximum(np.abs(values), 1.0)
        n_noninteger = int(np.count_nonzero(noninteger))
        if n_noninteger:
            self.n_noninteger += n_noninteger
            if self.example_noninteger is None:
                self.example_noninteger = float(values[np.argmax(noninteger)])


def _value_blocks(X) -> Iterator[np.ndarray]:
    """Yield the values to check: stored values of a sparse matrix, else row blocks."""
    if sp.issparse(X):
        if not hasattr(X, "data") or X.format not in {"csr", "csc", "coo", "bsr"}:
            X = X.tocsr()
        data = np.asarray(X.data)
        for start in range(0, data.size, _CHUNK):
            yield data[start : start + _CHUNK]
        return
    rows_per_block = max(1, _CHUNK // max(1, X.shape[1]))
    for start in range(0, X.shape[0], rows_per_block):
        block = X[start : start + rows_per_block]  # a backed sparse matrix (a .raw on disk) gives sparse blocks
        yield np.asarray(block.data) if sp.issparse(block) else np.asarray(block)


#: what ``.raw`` holds, when it is set but is no count matrix either
_RAW_NOT_COUNTS = "adata.raw holds no raw counts either: {}"


def raw_counts_problem(raw_values) -> str | None:
    """Why ``.raw``'s matrix is no count matrix (None: it is one, or it was not given)."""
    return _raw_counts_verdict(raw_values)[0]


def raw_not_even_estimated_counts(raw_values) -> str | None:
    """Why ``.raw``'s matrix is not even estimated counts, or None.

    Non-integer values that do not look normalised (estimated counts, which ``reconstruction='mse'`` accepts)
    are no problem here; anything else :func:`raw_counts_problem` names is.
    """
    problem, estimated = _raw_counts_verdict(raw_values)
    return None if estimated else problem


def _raw_counts_verdict(raw_values) -> tuple[str | None, bool]:
    """The problem of ``.raw``'s values (None: counts, or not given), and whether it is only estimated counts.

    Estimated counts: non-integer, but finite, non-negative and not normalised.
    """
    if raw_values is None:
        return None, False
    if np.dtype(raw_values.dtype).kind == "b":
        return "True/False values, not counts", False
    stats = _ValueStats()
    for block in _value_blocks(raw_values):
        stats.update(block)
    if stats.n_nan or stats.n_inf:
        return "NaN or infinite values", False
    if stats.n_negative:
        return f"negative values, minimum {stats.minimum:g}", False
    if stats.n_noninteger:
        normalised = _normalised_to(raw_values)
        if normalised and normalised.startswith("log"):
            return (f"its values look log-normalised (e.g. {stats.example_noninteger:g}), as when adata.raw is set "
                    "after log1p, the order of scanpy's tutorials"), False
        example = f"non-integer values, e.g. {stats.example_noninteger:g}"
        return (example + f"; they look {normalised}", False) if normalised else (example, True)
    return ("only zeros", False) if stats.n_nonzero == 0 else (None, False)


def holds_counts(values) -> bool:
    """Whether ``values`` (a layer) are raw counts: finite, non-negative integers, not all zero, not boolean."""
    try:
        if np.dtype(values.dtype).kind not in "iuf":
            return False
        stats = _ValueStats()
        for block in _value_blocks(values):
            stats.update(block)
    except Exception:  # a layer of a kind this check does not read (it only names layers in a message)
        return False
    if not stats.n_nonzero or stats.n_nan or stats.n_inf or stats.n_negative or stats.n_noninteger or stats.n_absurd:
        return False
    try:  # integers that sum to one total per cell are rounded normalised values, not counts
        return _one_total(values) is None
    except Exception:
        return False


#: layer names that usually hold the raw counts, named first when several layers hold integers
_COUNT_LAYER_NAMES = ("counts", "raw_counts", "raw", "umi", "umis")


def count_layers(layers: Mapping[str, object] | None, *, skip: str | None = None) -> list[str]:
    """The names of the ``layers`` (but ``skip``) that hold integer counts, the usual names for raw counts first.

    Read only when a message needs them.
    """
    if layers is None:
        return []
    names = [str(name) for name, values in layers.items() if str(name) != skip and holds_counts(values)]
    return sorted(names, key=lambda n: (n.lower() not in _COUNT_LAYER_NAMES, names.index(n)))


def use_counts_layer(names: Sequence[str]) -> str:
    """The fix naming a layer that holds counts: ``Use --layer counts: that layer holds integer counts``."""
    first = names[0]
    others = f" (so do {listing(names[1:])})" if len(names) > 1 else ""
    return f"Use {arg(f'layer={first!r}', f'--layer {first}')}: that layer holds integer counts{others}"


def _layers_hint(layers: Sequence[str] | None, has_raw: bool = False, raw_problem: str | None = None) -> str:
    if not has_raw:
        raw = ""
    elif raw_problem:
        raw = "; " + _RAW_NOT_COUNTS.format(raw_problem)
    else:
        raw = f"; adata.raw is set: if it holds the counts, use {arg('adata.raw.to_adata()', '--use-raw')}"
    if layers is None:
        return f" ({raw[2:]})" if raw else ""
    names = ", ".join(repr(name) for name in layers)
    return f" (available layers: {names}{raw})"


def _use_layer(layers: Sequence[str] | None, has_raw: bool, what: str = "a layer holding raw counts",
               raw_problem: str | None = None) -> str:
    """The fix to suggest: a layer (naming them), ``.raw``, or, when there is neither, the raw count matrix."""
    if layers is not None and len(layers) == 0:
        if has_raw and raw_problem:
            return f"Go back to the raw count matrix: this data has no layers, and {_RAW_NOT_COUNTS.format(raw_problem)}"
        if has_raw:
            return (f"adata.raw is set: if it holds the counts, use "
                    f"{arg('adata.raw.to_adata()', '--use-raw')} (this data has no layers)")
        return "Go back to the raw count matrix" + (
            "" if is_array_input() else " (this data has no layers and no .raw to pick from)")
    return f"Use {arg('layer=', '--layer')} to pick {what}{_layers_hint(layers, has_raw, raw_problem)}"


def _another_matrix(layers: Sequence[str] | None, has_raw: bool, raw_problem: str | None = None) -> str:
    if layers is not None and len(layers) == 0 and not has_raw:
        return ""  # nothing else to pick
    return f" {_use_layer(layers, has_raw, 'another', raw_problem)}"


def check_counts(
    X,
    *,
    reconstruction: str = "zinb",
    where: str = "X",
    layers: Sequence[str] | None = None,
    has_raw: bool = False,
    raw_values=None,
    advice: str | None = None,
    layer_values: Mapping[str, object] | None = None,
    layer: str | None = None,
) -> None:
    """Check that ``X`` holds raw counts: finite, non-negative integers, not all zero.

    Parameters
    ----------
    X
        Cells x genes matrix: a :mod:`scipy.sparse` matrix or array (only its
        stored values are examined) or anything :func:`numpy.asarray` accepts.
    reconstruction
        The reconstruction loss the data is meant for. ``"zinb"`` needs
        integer counts; ``"mse"`` accepts non-integer values with a warning.
    where
        How to name the matrix in messages, e.g. ``"X"`` or ``"layers['counts']"``.
    layers
        Names of the layers the user could pick instead, listed in the
        messages when given.
    has_raw
        Whether the AnnData has ``.raw``; the messages then point to it, since
        raw counts next to a log-normalised ``X`` often live there.
    raw_values
        ``.raw``'s matrix, looked at only when the check fails: if it holds no
        counts either, the messages say so instead of pointing to it.
    advice
        The fix to name in the messages instead of the layers and ``.raw``
        (e.g. for the command's ``--use-raw``, whose matrix came from ``.raw``).
    layer_values
        The layers themselves (``adata.layers``), looked at only when the check
        fails: a layer that holds integer counts is then named as the fix.
    layer
        The layer being checked (None: ``X``), never named as its own fix.

    Raises
    ------
    InputError
        If the matrix is empty (no cells or no genes), boolean, has values of
        absurd size (above 1e15 or below 1e-30: a damaged file), NaN or
        infinite values, negative values (scaled or log-transformed data),
        only zeros, or non-integer values while ``reconstruction="zinb"``.

    Warns
    -----
    UserWarning
        Non-integer values with ``reconstruction="mse"``.

    Notes
    -----
    A value counts as an integer when it lies within a relative 1e-5 of one,
    so float round-off in otherwise integer counts is accepted.
    """
    if reconstruction not in _COUNT_LOSSES | _OTHER_LOSSES:
        known = ", ".join(repr(name) for name in sorted(_COUNT_LOSSES | _OTHER_LOSSES))
        raise InputError(f"unknown reconstruction {reconstruction!r}; choose one of {known}")
    check_in_memory(X, where)
    if not sp.issparse(X):
        X = np.asarray(X)
        if X.ndim != 2:
            raise InputError(f"{where} must be a 2-d cells x genes matrix, got {X.ndim} dimension(s)")
        if X.dtype.kind not in "biuf":
            raise InputError(f"{where} must hold numbers, got values of type {X.dtype}")
    elif np.dtype(X.dtype).kind not in "biuf":
        raise InputError(f"{where} must hold numbers, got values of type {X.dtype}")
    if np.dtype(X.dtype).kind == "b":
        raise InputError(boolean_matrix_message(where))
    n_cells, n_genes = X.shape
    if n_cells == 0 or n_genes == 0:
        raise InputError(
            f"{where} is empty ({n_cells} cells x {n_genes} genes): there is nothing to cluster"
        )

    def raw_problem() -> str | None:  # only when a message needs it: one more pass over the values
        return raw_counts_problem(raw_values) if has_raw else None

    def fix() -> str:
        if advice is not None:
            return advice
        good = count_layers(layer_values, skip=layer)
        return use_counts_layer(good) if good else _use_layer(layers, has_raw, raw_problem=raw_problem())

    stats = _ValueStats()
    for block in _value_blocks(X):
        stats.update(block)

    if stats.n_absurd:
        # before the NaN and negative checks: a damaged file is not "scaled or log-transformed"
        raise InputError(
            f"{where} holds {stats.n_absurd} value(s) of a size no count matrix (nor a normalised or scaled one) "
            f"has, e.g. {stats.example_absurd:.3g} (sizes above {_ABSURD_ABOVE:g} or below {_ABSURD_BELOW:g}): the "
            "data look corrupt, as from a file damaged in a copy or download. Check the file (compare its "
            "checksum with the original's) and copy or export it again"
        )
    if stats.n_nan or stats.n_inf:
        raise InputError(
            f"{where} contains {stats.n_nan} NaN and {stats.n_inf} infinite value(s); "
            f"scgpcl needs raw counts (finite, non-negative integers). {fix()}"
        )
    if stats.n_negative:
        raise InputError(
            f"{where} contains {stats.n_negative} negative value(s) (minimum {stats.minimum:g}): "
            f"the data looks scaled or log-transformed, but scgpcl needs raw counts. {fix()}"
        )
    if stats.n_nonzero == 0:
        raise InputError(
            f"{where} holds only zeros ({n_cells} cells x {n_genes} genes): there is nothing to cluster; "
            "is this the count matrix?" + (f" {advice}" if advice is not None else
                                            _another_matrix(layers, has_raw, raw_problem()))
        )
    if stats.n_noninteger:
        detail = (
            f"{stats.n_noninteger} of {stats.n_values} stored values are not integers "
            f"(e.g. {stats.example_noninteger:g})"
        )
        normalised = _normalised_to(X)
        if normalised:
            detail += f"; they look {normalised}"
        mse = arg("reconstruction='mse'", "--reconstruction mse")
        if reconstruction in _COUNT_LOSSES:
            other = "" if normalised else (
                ". If these are counts that a tool made non-integer (ambient-RNA correction such as SoupX's "
                "adjustCounts, or estimated counts from Salmon or RSEM), round them to integers (numpy.rint) or keep "
                f"them with {mse}")
            raise InputError(
                f"{where} is not integer counts: {detail}. The ZINB reconstruction needs "
                f"integer counts. {fix()}{other}"
            )
        if normalised:
            warn_user(
                f"{where} is not integer counts: {detail}. {mse} "
                "accepts non-integer values, but "
                f"scgpcl normalises and log-transforms its input itself, so normalised values are normalised "
                f"twice and cluster worse. {fix()}"
            )
            return
        warn_user(
            f"{where} is not integer counts: {detail}. {mse} "
            "accepts this, "
            "but scgpcl normalises its input itself, so make sure these values are not "
            "already normalised or log-transformed"
        )
        return
    total = _one_total(X)
    if total is not None:  # integers, but every cell sums to one total: normalised, then rounded
        warn_user(
            f"every cell's counts in {where} sum to about {float(f'{total:.4g}'):,.0f} (within {_SAME_TOTAL:.1%}), as after "
            "normalising to one total per cell and rounding (e.g. rounded CPM); raw counts differ from cell to "
            f"cell, and scgpcl normalises them itself. {fix()}. If the counts were downsampled to one depth on "
            "purpose, ignore this warning"
        )


#: cells' totals closer than this (relative spread of the middle 98 %) are "one total" for every cell
_SAME_TOTAL = 1e-3
#: ... among at least this many cells (a handful can share a total by chance)
_SAME_TOTAL_MIN_CELLS = 10


def _normalised_to(X) -> str | None:
    """How a non-integer matrix looks normalised, in words (None: it does not clearly).

    scanpy's ``normalize_total`` gives every cell the same total, and ``log1p`` after it gives every cell the
    same total of ``expm1``; data subset to some genes after normalising no longer show it (None then).
    Row blocks at a time, so its memory stays that of a block.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # expm1 of CPM-sized values is inf: that row is left out
        totals, e_totals = _row_totals(X)
    for t, how in ((totals, "normalised to a total of {:.4g} per cell (every cell sums to it)"),
                   (e_totals, "log-normalised (log1p of counts normalised to {:.4g} per cell: every cell's "
                              "e^x - 1 sums to it)")):
        total = _shared_total(t)
        if total is not None:
            return how.format(total)
    return None


def _one_total(X) -> float | None:
    """The total every cell's values sum to, if they all do (:func:`_shared_total`); row blocks at a time."""
    return _shared_total(_row_totals(X, expm1=False)[0])


def _shared_total(totals: np.ndarray) -> float | None:
    """The median of the finite positive ``totals`` when their middle 98 % lie within ``_SAME_TOTAL`` of it."""
    t = totals[np.isfinite(totals) & (totals > 0)]
    if t.size < _SAME_TOTAL_MIN_CELLS:
        return None
    lo, mid, hi = np.percentile(t, [1, 50, 99])
    return float(mid) if hi - lo <= _SAME_TOTAL * mid else None


def _row_totals(X, *, expm1: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Each row's sum of ``X`` and of ``expm1(X)`` (float64; zeros without ``expm1``), a block of rows at a time."""
    if sp.issparse(X):
        X = X.tocsr() if X.format != "csr" else X
    n = X.shape[0]
    rows = max(1, _CHUNK // max(1, X.shape[1])) if not sp.issparse(X) else n
    totals, e_totals = np.zeros(n), np.zeros(n)
    if sp.issparse(X):
        indptr, data = X.indptr, X.data
        start = 0
        while start < n:  # rows holding about _CHUNK values at a time
            stop = min(n, int(np.searchsorted(indptr, indptr[start] + _CHUNK, side="right")) - 1)
            stop = max(stop, start + 1)
            lo, hi = indptr[start], indptr[stop]
            block = np.asarray(data[lo:hi], dtype=np.float64)
            pairs = [(totals, block)] + ([(e_totals, np.expm1(block))] if expm1 else [])
            for out, v in pairs:
                c = np.concatenate([[0.0], np.cumsum(v)])
                out[start:stop] = c[indptr[start + 1 : stop + 1] - lo] - c[indptr[start:stop] - lo]
            start = stop
        return totals, e_totals
    for start in range(0, n, rows):
        block = X[start : start + rows]  # a backed sparse matrix (a .raw on disk) gives sparse blocks
        block = np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)
        totals[start : start + rows] = block.sum(1)
        if expm1:
            e_totals[start : start + rows] = np.expm1(block).sum(1)
    return totals, e_totals


def check_n_clusters(n_clusters, n_cells: int, *, allow_none: bool = False, warn: bool = True) -> int | None:
    """Check the requested number of clusters and return it as an ``int``.

    Accepts integers (Python or NumPy) and integer-valued floats such as
    ``8.0``. ``None`` or ``"auto"`` (estimate K from the data) is accepted,
    and returned as ``None``, only with ``allow_none=True``. More clusters
    than half the cells is allowed, with a warning unless ``warn=False``
    (most clusters would hold one or two cells; ``SCGPCL.load`` passes
    ``False``: its K is the saved model's, not the caller's).

    Raises
    ------
    InputError
        If ``n_clusters`` is not a whole number, is below 2, or exceeds
        ``n_cells``.
    """
    if allow_none and (n_clusters is None or (isinstance(n_clusters, str) and n_clusters.strip().lower() == "auto")):
        return None  # "auto", as the command line's --n-clusters auto
    name = arg("n_clusters", "--n-clusters")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Real):
        hint = f" or {arg('None', 'auto')} to estimate it" if allow_none else ""
        raise InputError(
            f"{name} must be a whole number of clusters (at least 2){hint}, got {n_clusters!r}"
        )
    if not isinstance(n_clusters, numbers.Integral):
        value = float(n_clusters)
        if not (np.isfinite(value) and value.is_integer()):
            raise InputError(
                f"{name} must be a whole number of clusters (at least 2), got {n_clusters!r}"
            )
    k = int(n_clusters)
    if k < 2:
        raise InputError(f"{name} must be at least 2, got {k}: scgpcl splits the cells into 2 or more clusters")
    if k > n_cells:
        raise InputError(
            f"{arg(f'n_clusters={k}', f'--n-clusters {k}')} is more than the number of cells ({n_cells}); "
            "ask for at most as many clusters as there are cells"
        )
    if warn and k > n_cells / 2:
        warn_user(f"{arg(f'n_clusters={k}', f'--n-clusters {k}')} on {n_cells} cells: most clusters will hold one "
                  "or two cells; was a smaller K meant?")
    return k


#: a cell with at most this many counts (over every gene of the input) looks like an empty droplet
LOW_COUNTS = 50
#: the matrix looks unfiltered when more than this share of its cells have that few counts
_LOW_COUNT_SHARE = 0.5


def warn_low_count_cells(data) -> None:
    """Warn when most cells have at most :data:`LOW_COUNTS` counts: an unfiltered matrix of empty droplets.

    ``data`` is the prepared data (:class:`~scgpcl.data._preprocess.PreparedData`): the cells dropped for
    having no counts in the selected genes count as such cells too. Cell Ranger's
    ``raw_feature_bc_matrix`` holds every barcode, most of them droplets with a few counts of ambient RNA;
    clustered, they form clusters of their own and crowd the real cells into a few. Of the 13 shared
    datasets, human_kidney_top2000 has the most cells at 50 counts or fewer (5.4 %; 2,000 genes kept),
    the others at most 0.1 %: the share, not a shallow cell, is what the warning is about.
    """
    n = int(data.cell_mask.size)
    n_low = n - int(data.cell_mask.sum()) + int(np.count_nonzero(data.total_counts <= LOW_COUNTS))
    if n and n_low > _LOW_COUNT_SHARE * n:
        warn_user(
            f"{n_low} of the {n} cells ({n_low / n:.0%}) have {LOW_COUNTS} counts or fewer: the matrix looks "
            "unfiltered, like Cell Ranger's raw_feature_bc_matrix, whose barcodes are mostly empty droplets. "
            "Clustered with the cells, the droplets form clusters of their own and crowd the real cells into a "
            "few. Keep the cells first: Cell Ranger's filtered_feature_bc_matrix, or "
            "sc.pp.filter_cells(adata, min_counts=N) with N read from the knee of the barcodes' total counts. "
            "If the cells are this shallow, ignore this warning"
        )


def check_distinct_cells(m: sp.csr_matrix, n_clusters: int, *, block_rows: int = 8192) -> None:
    """Refuse ``n_clusters`` above the number of different rows of ``m`` (the features the model reads).

    Copies of one cell get one representation, so k-means cannot make more clusters than there are
    different cells. The rows are hashed in blocks (two random projections of each row plus its number of
    entries) and the count stops as soon as it reaches ``n_clusters``: usually after the first block.

    Raises
    ------
    InputError
        If ``m`` has fewer than ``n_clusters`` different rows.
    """
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, m.shape[1]))
    seen: set[tuple[float, float, int]] = set()
    for r0 in range(0, m.shape[0], block_rows):
        r1 = min(r0 + block_rows, m.shape[0])
        a, b = m.indptr[r0], m.indptr[r1]
        lengths = np.diff(m.indptr[r0 : r1 + 1])
        v, j = m.data[a:b].astype(np.float64), m.indices[a:b]
        rows = np.repeat(np.arange(r1 - r0), lengths)
        h = [np.bincount(rows, weights=v * w[i, j] + w[i, j], minlength=r1 - r0) for i in range(2)]
        seen.update(zip(h[0].tolist(), h[1].tolist(), lengths.tolist(), strict=True))
        if len(seen) >= n_clusters:
            return
    raise InputError(
        f"the {m.shape[0]} cells have only {len(seen)} different expression profiles in the {m.shape[1]} genes "
        f"used (the others are copies of them), so there cannot be {n_clusters} clusters: "
        f"{arg(f'pass n_clusters={len(seen)}', f'pass --n-clusters {len(seen)}')} or fewer, or check whether the "
        "cells were duplicated" if len(seen) >= 2 else
        f"the {m.shape[0]} cells all have the same expression profile in the {m.shape[1]} genes used, so there is "
        "nothing to cluster: check whether one cell was copied, or whether the right matrix was read"
    )


def check_label_key(adata: AnnData, label_key: str | None) -> None:
    """Check that ``adata.obs[label_key]`` holds reference labels.

    ``label_key=None`` means no labels and passes.

    Raises
    ------
    InputError
        If ``label_key`` is not a column of ``adata.obs`` (the message lists
        the columns), if every label is missing, or if every labelled cell
        (3 or more) has a label of its own: cell ids, not labels.

    Warns
    -----
    UserWarning
        If some labels are missing (NaN, or an empty string): compare the
        clustering with the labelled cells only. If some cells carry a label
        that usually means none (``'unknown'``, ``'NA'``, ...;
        :data:`scgpcl.metrics.PLACEHOLDER_LABELS`): they are scored as a type
        of their own unless set to NaN.
    """
    if label_key is None:
        return
    if not isinstance(label_key, str):
        raise InputError(f"label key {label_key!r} is not a column name: pass one column's name to "
                         f"{arg('label_key=', '--label-key')}")
    if label_key not in adata.obs.columns:
        columns = ", ".join(repr(str(column)) for column in adata.obs.columns)
        if not columns:  # text tables, 10x files and bare matrices carry no per-cell annotations
            raise InputError(f"label key {label_key!r} is not a column of obs: this data has no per-cell "
                             f"annotations at all (obs has no columns; text tables and 10x files never have "
                             f"any); leave {arg('label_key', '--label-key')} out, or put the labels in an "
                             ".h5ad's obs first")
        raise InputError(f"label key {label_key!r} is not a column of obs (available columns: {columns}); "
                         f"pass one of them to {arg('label_key=', '--label-key')}, or leave it out")
    missing = ~has_label(adata.obs[label_key])
    n_missing = int(missing.sum())
    labelled = adata.obs[label_key][~missing]
    n_values = int(labelled.astype(str).nunique())
    if len(labelled) >= 3 and n_values == len(labelled):
        # scoring against it gives ARI 0 and an "accuracy" of K / n: refuse rather than report that
        others = [str(c) for c in adata.obs.columns if str(c) != label_key]
        raise InputError(
            f"obs[{label_key!r}] has a different value for every labelled cell ({n_values} values, e.g. "
            f"{str(labelled.iloc[0])!r}): it looks like cell ids, not reference labels. Pass the column holding "
            f"cell types or groups to {arg('label_key=', '--label-key')} (other columns: {listing(others)})"
        )
    if n_missing and n_missing == adata.n_obs:
        raise InputError(f"obs[{label_key!r}] has no labels: all {n_missing} values are missing (NaN or empty); pass "
                         f"a column that holds labels to {arg('label_key=', '--label-key')}, or leave it out")
    if n_missing:
        warnings.warn(
            f"obs[{label_key!r}] is missing (NaN or empty) for {n_missing} of {adata.n_obs} cells; "
            "compare the clustering with the labelled cells only",
            UserWarning,
            stacklevel=2,
        )
    placeholders = placeholder_labels(labelled)
    if placeholders:  # scored as a cell type of their own: a perfect clustering cannot match them
        named = ", ".join(f"{v!r} ({counted(n, 'cell')})" for v, n in placeholders.items())
        first = next(iter(placeholders))
        warnings.warn(
            f"obs[{label_key!r}] labels cells {named}: the scores count each as a cell type of its own. To score "
            f"the other cells only, set them to NaN first, e.g. adata.obs[{label_key!r}] = "
            f"adata.obs[{label_key!r}].mask(adata.obs[{label_key!r}] == {first!r})",
            UserWarning,
            stacklevel=2,
        )


def check_batch_key(adata: AnnData, batch_key: str | None, *, warn_missing: bool = False) -> None:
    """Check that ``adata.obs[batch_key]`` names the batch (sample, donor, run) of each cell.

    ``batch_key=None`` passes. Cells with a missing batch are left out of the
    clusters' batch composition (:func:`scgpcl.tl.batch_composition`); with
    ``warn_missing`` (once per run, where it starts) a warning says how many.

    Raises
    ------
    InputError
        If ``batch_key`` is not a column of ``obs``, if no cell has a batch,
        if every cell is in the same batch (nothing to compare), or if every
        cell (3 or more) has a batch of its own, or more than 10 batches hold
        fewer than 5 cells each on average: per-cell values (ids, counts,
        scores), not batches.
    """
    if batch_key is None:
        return
    given = arg("batch_key=", "--batch-key")
    if not isinstance(batch_key, str):
        raise InputError(f"batch key {batch_key!r} is not a column name: pass one column's name to {given}")
    if batch_key not in adata.obs.columns:
        columns = [str(c) for c in adata.obs.columns]
        where = (f"available columns: {listing(columns)}" if columns else
                 "this data has no per-cell annotations at all (text tables and 10x files never have any)")
        raise InputError(f"batch key {batch_key!r} is not a column of obs ({where}); pass the column naming each "
                         f"cell's sample or batch to {given}, or leave it out")
    values = adata.obs[batch_key]
    known = values[values.notna()].astype(str)
    n_batches = int(known.nunique())
    if n_batches == 0:
        raise InputError(f"obs[{batch_key!r}] has no batches: all {adata.n_obs} values are missing (NaN); pass a "
                         f"column that names each cell's batch to {given}, or leave it out")
    if n_batches == 1:
        raise InputError(f"obs[{batch_key!r}] holds one batch only ({known.iloc[0]!r}): there is nothing to compare "
                         f"the clusters across; leave {given} out, or pass the column that tells the batches apart")
    if len(known) >= 3 and n_batches == len(known):
        raise InputError(f"obs[{batch_key!r}] has a different value for every cell ({n_batches} values, e.g. "
                         f"{known.iloc[0]!r}): it looks like cell ids, not batches; pass the column naming each "
                         f"cell's sample or batch to {given}")
    if n_batches > 10 and len(known) < 5 * n_batches:
        raise InputError(f"obs[{batch_key!r}] has {n_batches} different values for {len(known)} cells (fewer than 5 "
                         f"cells each on average): it looks like a per-cell value (an id, a count or a score), not "
                         f"batches; pass the column naming each cell's sample or batch to {given}")
    if warn_missing and len(known) < adata.n_obs:  # a new user found them missing from the report's tables
        warn_user(f"{adata.n_obs - len(known)} of the {adata.n_obs} cells have no batch in obs[{batch_key!r}] "
                  "(missing values): they are clustered, but left out of the clusters' batch composition")


def check_in_memory(X: Any, where: str) -> None:
    """Refuse a matrix that a backed AnnData keeps on disk (numpy would see a 0-d object array), with the fix."""
    if not sp.issparse(X) and not isinstance(X, np.ndarray) and type(X).__module__.startswith(("anndata", "h5py")):
        raise InputError(
            f"{where} is stored on disk (a backed AnnData, {type(X).__name__}); load it into memory first "
            "with adata = adata.to_memory(), or read the file without backed="
        )


def boolean_matrix_message(where: str) -> str:
    fix = ("Pass the count matrix this was made from" if is_array_input() else  # the estimator's matrix
           f"Go back to the count matrix this was made from (if it is in a layer, pick it with {arg('layer=', '--layer')})")
    return (f"{where} holds True/False values (a boolean matrix, e.g. detected / not detected), not counts: "
            f"scgpcl needs the raw integer counts. {fix}")


def check_count_option(value, name: str) -> int:
    """``value`` as an int when it is a whole number >= 1 (``numpy`` integers included); else InputError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a whole number >= 1, got {value!r}")
    return int(value)


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a number (``float`` accepts it)."""
    try:
        float(text)
    except ValueError:
        return False
    return True
