"""Clustering metrics against reference labels (docs/method.md section 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score

__all__ = [
    "PLACEHOLDER_LABELS", "cell_agreement", "cluster_accuracy", "clustering_metrics", "has_label", "match_clusters",
    "matched_labels", "medoid_run", "placeholder_labels",
]


def _codes(values) -> tuple[np.ndarray, np.ndarray]:
    cat = pd.Categorical(np.asarray(values, dtype=object).astype(str))
    return cat.codes.astype(np.int64), np.asarray(cat.categories)


def match_clusters(labels_true, labels_pred) -> np.ndarray:
    """Map every predicted cluster to a true label by the Hungarian algorithm.

    Correct when the numbers of clusters and labels differ: the contingency
    table is padded to square.

    Parameters
    ----------
    labels_true
        Reference label per cell (compared as strings).
    labels_pred
        Cluster per cell (compared as strings), same length.

    Returns
    -------
    numpy.ndarray
        ``mapped`` (object array): for each cell, the true label its predicted
        cluster was matched to, or ``None`` when the cluster was left unmatched
        (more predicted clusters than true labels).
    """
    t_codes, t_names = _codes(labels_true)
    p_codes, _ = _codes(labels_pred)
    n_t, n_p = t_codes.max() + 1, p_codes.max() + 1
    n = max(n_t, n_p)
    table = np.zeros((n, n), dtype=np.int64)
    np.add.at(table, (p_codes, t_codes), 1)
    rows, cols = linear_sum_assignment(-table)
    lookup = np.full(n, -1, dtype=np.int64)
    lookup[rows] = cols
    matched = lookup[p_codes]
    out = np.empty(len(p_codes), dtype=object)
    valid = (matched >= 0) & (matched < n_t)
    out[valid] = t_names[matched[valid]]
    out[~valid] = None
    return out


def matched_labels(labels_true, labels_pred, *, overlapping: bool = False) -> dict[str, str | None]:
    """The true label each predicted cluster is matched to (:func:`match_clusters`), or None if unmatched.

    Keys and values are strings; the same one-to-one matching as the CA metric.

    Parameters
    ----------
    labels_true
        Reference label per cell (compared as strings).
    labels_pred
        Cluster per cell (compared as strings), same length.
    overlapping
        Keep only the pairs that share cells. The matching pairs every cluster
        it can with a label, also when the two have no cell in common (such a
        pair adds nothing to CA); a figure or table that shows the pair as what
        the cluster stands for would mislead, so they ask for this.

    Returns
    -------
    dict
        Predicted cluster -> matched true label (``None``: unmatched).
    """
    pred = np.asarray(labels_pred, dtype=object).astype(str)
    truth = np.asarray(labels_true, dtype=object).astype(str)
    mapped = match_clusters(truth, pred)
    out: dict[str, str | None] = {}
    for cluster, label in zip(pred, mapped, strict=True):
        out.setdefault(cluster, None if label is None else str(label))
    if overlapping:
        shared = set(zip(pred.tolist(), truth.tolist(), strict=True))
        out = {c: (lab if (c, lab) in shared else None) for c, lab in out.items()}
    return out


def cluster_accuracy(labels_true, labels_pred) -> float:
    """Fraction of cells whose cluster is matched to their true label (best one-to-one matching).

    Parameters
    ----------
    labels_true
        Reference label per cell (compared as strings).
    labels_pred
        Cluster per cell (compared as strings), same length.
    """
    truth = np.asarray(labels_true, dtype=object).astype(str)
    mapped = match_clusters(truth, labels_pred)
    return float(np.mean(mapped == truth))


#: reference labels that usually stand for "no label" (compared stripped and in lower case): they are scored as
#: a type of their own unless set to NaN first, and a label key that holds them gets a warning
PLACEHOLDER_LABELS = frozenset({"unknown", "unassigned", "unlabeled", "unlabelled", "unclassified", "na", "n/a",
                                "nan", "none", "null", "undefined", "?", "-"})


def has_label(values) -> np.ndarray:
    """Which entries hold a reference label: not NaN/None, and not an empty or blank string.

    An empty string is no label: scored as a class of its own it can never be matched, and it lowered
    CA and macro F1 of a perfect clustering.
    """
    s = pd.Series(np.asarray(values, dtype=object))
    blank = s.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
    return s.notna().to_numpy() & ~blank


def placeholder_labels(values) -> dict[str, int]:
    """Labels among ``values`` that read as "no label" (:data:`PLACEHOLDER_LABELS`), with their cell counts."""
    s = pd.Series(np.asarray(values, dtype=object))
    counts = s[has_label(values)].astype(str).value_counts()
    return {str(v): int(n) for v, n in counts.items() if str(v).strip().lower() in PLACEHOLDER_LABELS}

def clustering_metrics(labels_true, labels_pred) -> dict[str, float]:
    """ARI, NMI (arithmetic mean normalisation), CA and macro/micro F1 after matching.

    Missing values (NaN/None, or an empty string; :func:`has_label`) in either
    array are refused rather than counted as a class of their own: select the
    labelled, clustered cells first.

    Parameters
    ----------
    labels_true
        Reference label per cell (compared as strings).
    labels_pred
        Cluster per cell (compared as strings), same length.

    Returns
    -------
    dict
        ``ARI``, ``NMI``, ``CA``, ``F1_macro``, ``F1_micro`` (floats). F1 compares
        each cell's true label with the label its cluster is matched to. With
        more clusters than labels, the cells of a cluster matched to no label
        count as predicting none: they lower their labels' recall but no
        label's precision, so ``F1_micro`` is then above ``CA`` (with K equal
        to the number of labels, every cluster is matched and the two agree).

    Raises
    ------
    ValueError
        The arrays differ in length, or either has missing values.
    """
    truth_raw = np.asarray(labels_true, dtype=object)
    pred_raw = np.asarray(labels_pred, dtype=object)
    if truth_raw.shape != pred_raw.shape:
        raise ValueError(f"label arrays differ in length: {truth_raw.shape[0]} vs {pred_raw.shape[0]}")
    for name, arr in (("reference labels", truth_raw), ("cluster labels", pred_raw)):
        n_missing = int((~has_label(arr)).sum())
        if n_missing:
            raise ValueError(
                f"{n_missing} of {arr.shape[0]} {name} are missing (NaN/None or an empty string); "
                "compute the metrics on the cells that have both, e.g. with a mask of notna()"
            )
    truth = truth_raw.astype(str)
    pred = pred_raw.astype(str)
    mapped = match_clusters(truth, pred)
    mapped_str = np.where(mapped == None, "<unmatched>", mapped).astype(str)  # noqa: E711
    return {
        "ARI": float(adjusted_rand_score(truth, pred)),
        "NMI": float(normalized_mutual_info_score(truth, pred, average_method="arithmetic")),
        "CA": float(np.mean(mapped_str == truth)),
        "F1_macro": float(f1_score(truth, mapped_str, labels=np.unique(truth), average="macro", zero_division=0)),
        "F1_micro": float(f1_score(truth, mapped_str, labels=np.unique(truth), average="micro", zero_division=0)),
    }


def medoid_run(runs: list[np.ndarray]) -> tuple[int, np.ndarray]:
    """The run whose clustering agrees best with the others': the medoid by ARI. No labels needed.

    Parameters
    ----------
    runs
        Cluster per cell of each run, same cells in the same order (at least two runs).

    Returns
    -------
    index, ari
        The medoid's index (ties: the first) and the runs' pairwise ARI matrix (1 on the diagonal).
    """
    n = len(runs)
    if n < 2:
        raise ValueError(f"the medoid needs at least two runs, got {n}")
    ari = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            ari[i, j] = ari[j, i] = adjusted_rand_score(runs[i], runs[j])
    return int(np.argmax(ari.sum(axis=1))), ari


def cell_agreement(reference: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """Per cell, the share of ``others`` that put it in the cluster matched to its ``reference`` cluster.

    Each other run's clusters are matched one to one to the reference's (Hungarian algorithm, as for
    :func:`cluster_accuracy`); a cell agrees with a run when its cluster there is matched to its
    reference cluster.

    Parameters
    ----------
    reference
        Cluster per cell of the run kept.
    others
        Cluster per cell of each other run, same cells in the same order.

    Returns
    -------
    numpy.ndarray
        A value in [0, 1] per cell.
    """
    ref = np.asarray(reference).astype(str)
    if not others:
        return np.ones(len(ref))
    return np.mean([match_clusters(ref, other).astype(str) == ref for other in others], axis=0)
