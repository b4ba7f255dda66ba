"""Are the rows of a table cells or genes? A guess from the names, the shape and the counts.

Text tables come both ways: Python/scanpy exports put cells in rows, R/Seurat
exports (``write.csv(as.matrix(counts))``) put genes in rows. Read the wrong
way, scgpcl would cluster the genes. :func:`guess_orientation` looks at

* the names: Ensembl ids (``ENSG...``, ``ENSMUSG...``), ``gene_12`` or
  well-known gene symbols (mitochondrial ``MT-``, ribosomal ``RPL``/``RPS``,
  ``...Rik``, ``ACTB``, ``MALAT1`` ...) mark the gene axis; cell barcodes
  (``ACGT...-1``), ``cell_12`` or names containing ``cell``, and run ids
  (``SRR...``, ``GSM...``) the cell axis;
* the counts, when both axes are long enough (the shape) to tell: genes'
  totals spread over orders of magnitude (p10-p90 of ``log10(total + 1)`` ~2
  or more on the benchmark data), cells' library sizes much less (~0.3-1).

It answers only when the evidence agrees; otherwise it says it cannot tell, and
the caller asks the user for the orientation.

AnnData keeps cells in rows, but an AnnData written from a genes x cells
matrix (``AnnData(counts)`` on an R export) does not say so;
:func:`anndata_looks_transposed` applies the same guess to it, so that such a
file is not clustered gene by gene without a word.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

__all__ = ["Orientation", "anndata_guess", "anndata_looks_transposed", "guess_orientation"]

_GENE_ID = re.compile(r"^(?:ENS[A-Z]*G\d{6,}(?:\.\d+)?|FBgn\d{7}|WBGene\d{8}|gene[_.\-]?\d+)$", re.I)
_GENE_FAMILY = re.compile(
    r"^(?:MT-[A-Z0-9]+|RP[LS]\d+[A-Z]?\d*|\d{7}[A-Z]\d{2}RIK|GM\d{4,}|LINC\d{4,}|LOC\d{5,}|[A-Z0-9]+-AS\d)$"
)
#: frequently detected genes (human symbols; mouse ones match in upper case)
_KNOWN_GENES = frozenset(
    "ACTB ACTG1 GAPDH B2M MALAT1 NEAT1 XIST TMSB4X TMSB10 EEF1A1 EEF2 FTL FTL1 FTH1 TPT1 UBC UBB MYL6 PPIA "
    "HSP90AB1 HSPA8 VIM CD74 LYZ PTPRC CD3E CD14 MKI67 TOP2A SOX2 PAX6 ALB INS GCG APOE CST3 SPARC COL1A1 "
    "KRT18 KRT8 EPCAM PECAM1 HBB HBA1 HBA2 NKG7 GNLY MS4A1 CD79A S100A8 S100A9 FOS JUN EGR1".split()
)
_BARCODE = re.compile(r"^(?:[A-Za-z0-9]+[_:.\-])?[ACGTN]{8,}(?:[\-_.][A-Za-z0-9]+)?$")
_CELL = re.compile(r"cell|^c[_.\-]?\d+$|^(?:SRR|ERR|DRR|GSM|SAM[ND]A?)\d{5,}", re.I)

#: p10-p90 spread of log10(total + 1) that marks the gene axis against the cell axis
_SPREAD_RATIO = 2.0
_SPREAD_DIFF = 0.9
#: both axes need this many entries before their totals say anything
_MIN_FOR_COUNTS = 20


@dataclass
class Orientation:
    """The guess: ``genes_as_rows`` True/False, or None when the evidence does not decide."""

    genes_as_rows: bool | None
    #: why, in a few words each, e.g. "the row names look like gene ids (e.g. 'ENSG00000141510')"
    reasons: list[str] = field(default_factory=list)
    #: what spoke against the guess, or why there is none
    doubts: list[str] = field(default_factory=list)
    #: the names of the rows or columns took part in the guess (not the counts alone)
    from_names: bool = False


def _sample(names: Sequence, n: int = 400) -> list[str]:
    """Up to ``n`` names spread over the axis (gene lists are often sorted: A1BG, A1CF, ...)."""
    names = list(names)
    if len(names) <= n:
        return [str(x) for x in names]
    idx = np.linspace(0, len(names) - 1, n).round().astype(int)
    return [str(names[i]) for i in idx]


def _name_evidence(names: Sequence) -> tuple[str | None, str | None]:
    """('genes' | 'cells' | None, example name) from the names of one axis."""
    sample = _sample(names)
    if not sample:
        return None, None
    ids = [s for s in sample if _GENE_ID.match(s)]
    if len(ids) >= 0.5 * len(sample):
        return "genes", ids[0]
    cells = [s for s in sample if _BARCODE.match(s) or _CELL.search(s)]
    if len(cells) >= 0.5 * len(sample):
        return "cells", cells[0]
    # symbols: a few well-known genes among all the names (an unfiltered gene axis has dozens)
    known = [str(s) for s in names if str(s).upper() in _KNOWN_GENES or _GENE_FAMILY.match(str(s).upper())]
    if len(known) >= 3 and len(known) >= 0.002 * len(names) and len(cells) < 0.05 * len(sample):
        return "genes", known[0]
    return None, None


def _spread(totals: np.ndarray) -> float:
    """p10-p90 spread of log10(total + 1) over the non-empty rows (or columns).

    Empty barcodes or genes never detected would pull p10 to 0 and fake a spread.
    """
    totals = np.asarray(totals, dtype=float)
    lg = np.log10(totals[totals > 0] + 1.0)
    lo, hi = np.percentile(lg, [10, 90])
    return float(hi - lo)


def _count_evidence(X) -> tuple[str | None, str]:
    """'rows_genes' | 'rows_cells' | None from the spread of the row and column totals."""
    n_rows, n_cols = X.shape
    if min(n_rows, n_cols) < _MIN_FOR_COUNTS:
        return None, f"too few rows or columns ({n_rows} x {n_cols}) for the counts to tell"
    # in float64: a float16 matrix's totals overflow (numpy's "overflow encountered in reduce")
    rows = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    cols = np.asarray(X.sum(axis=0, dtype=np.float64)).ravel()
    if min(np.count_nonzero(rows > 0), np.count_nonzero(cols > 0)) < _MIN_FOR_COUNTS:
        return None, "too few non-empty rows or columns for the counts to tell"
    sr, sc = _spread(rows), _spread(cols)
    detail = f"row totals spread {sr:.1f} and column totals {sc:.1f} orders of magnitude (p10-p90)"
    if sr >= _SPREAD_RATIO * sc and sr - sc >= _SPREAD_DIFF:
        return "rows_genes", detail
    if sc >= _SPREAD_RATIO * sr and sc - sr >= _SPREAD_DIFF:
        return "rows_cells", detail
    return None, detail


def guess_orientation(row_names: Sequence, col_names: Sequence, X) -> Orientation:
    """Guess whether the rows of a table (``X``: rows x columns as in the file) are genes."""
    if not sp.issparse(X):
        X = np.asarray(X)
    votes: dict[str, list[str]] = {"rows_genes": [], "rows_cells": []}
    for axis, names in (("row", row_names), ("column", col_names)):
        kind, example = _name_evidence(names)
        if kind is None:
            continue
        what = "gene names" if kind == "genes" else "cell names"
        rows_are = ("genes" if kind == "genes" else "cells") if axis == "row" else (
            "cells" if kind == "genes" else "genes")
        votes[f"rows_{rows_are}"].append(f"the {axis} names look like {what} (e.g. {example!r})")
    counts, detail = _count_evidence(X)
    by_names = [k for k, v in votes.items() if v]
    if len(by_names) == 2:
        return Orientation(None, doubts=[f"the names disagree: {'; '.join(votes['rows_genes'] + votes['rows_cells'])}"])
    if len(by_names) == 1:
        guess = by_names[0]
        if counts is not None and counts != guess:
            return Orientation(None, doubts=[votes[guess][0], f"but the counts suggest the opposite ({detail})"])
        reasons = votes[guess] + ([f"the counts agree ({detail})"] if counts == guess else [])
        return Orientation(guess == "rows_genes", reasons=reasons, from_names=True)
    if counts is not None:
        return Orientation(counts == "rows_genes", reasons=[f"the counts: {detail}; genes vary far more than cells"])
    return Orientation(None, doubts=["the names are neither gene ids or known gene symbols nor cell barcodes", detail])


def anndata_guess(obs_names: Sequence, var_names: Sequence, X) -> Orientation | None:
    """:func:`guess_orientation` for an AnnData's counts ``X`` (obs x var); None where it cannot apply.

    None also when the names took no part in the guess: AnnData's cells x genes convention is not
    overruled by the counts alone.

    Only an in-memory matrix (NumPy or scipy sparse) of finite, non-negative numbers is looked at: backed,
    non-numeric, scaled or damaged data are left to the count checks, which name those problems (scaled
    data's gene totals are about 0 after centring, which the totals would take for cells).
    """
    if X is None or not (sp.issparse(X) or isinstance(X, np.ndarray)) or min(X.shape) == 0:
        return None
    if X.dtype.kind not in "iuf":
        return None
    values = X.data if sp.issparse(X) else X
    if values.size:  # min and max carry any NaN or infinity: no matrix-sized temporary
        lo, hi = values.min(), values.max()
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0:
            return None
    guess = guess_orientation(obs_names, var_names, X)
    # AnnData is cells x genes by convention: the counts alone (a targeted panel of a few genes over cells of
    # very different depths looks genes x cells to them) do not overrule it, the names must speak
    return guess if guess.from_names else None


def anndata_looks_transposed(obs_names: Sequence, var_names: Sequence, X) -> Orientation | None:
    """The guess for an AnnData's counts when its names clearly say the rows are genes; None otherwise.

    The names must speak and the counts must not disagree (:func:`anndata_guess`). On the 13 benchmark
    datasets, the Splatter simulations and the two registry datasets every file reads as cells x genes and
    its transpose as genes x cells.
    """
    guess = anndata_guess(obs_names, var_names, X)
    return guess if guess is not None and guess.genes_as_rows else None
