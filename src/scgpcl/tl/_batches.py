"""How the clusters are made of batches (samples, donors, runs): the check for clusters that follow a batch.

scgpcl clusters the counts it is given and does not remove batch effects. When the cells come from several
batches that should hold the same cell types, a cluster made mostly of one batch is a sign that the
clustering followed the batch. This module counts each cluster's cells per batch and names those clusters;
:func:`scgpcl.tl.cluster` (``batch_key=``), the CLI (``--batch-key``) and the report use it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._messages import warn_user
from ..data._checks import check_batch_key
from ._markers import _check_key, cluster_order

__all__ = ["BATCH_SHARE", "CHANCE", "batch_composition", "batch_record", "batch_specific"]

log = logging.getLogger("scgpcl")

#: a cluster is batch-specific when at least this share of its cells come from one batch ...
BATCH_SHARE = 0.8
#: ... a share at least halfway from that batch's share of all cells to 100 % (a batch holding 90 % of the cells
#: fills most clusters to 90 %) ...
#: ... and more than chance puts there: the binomial tail P(X >= cells of the batch | cluster size, the batch's
#: share of all cells), times the number of clusters and of batches (every cluster is tested, and its largest batch
#: is picked after looking), is below this. So when the batches are drawn at random, the chance that any cluster is
#: named is below 0.001; of two equal batches and 3 clusters, a cluster needs 13 cells all of one batch
CHANCE = 1e-3


def batch_composition(adata: AnnData, batch_key: str, *, key: str = "scgpcl") -> pd.DataFrame:
    """Cells of each cluster in each batch.

    Cells without a cluster (dropped for having no counts) or without a batch
    (NaN in ``obs[batch_key]``) are not counted.

    Parameters
    ----------
    adata
        Data clustered by :func:`scgpcl.tl.cluster`.
    batch_key
        Column of ``obs`` naming each cell's batch (sample, donor, run).
    key
        The clustering's ``key_added``.

    Returns
    -------
    pandas.DataFrame
        One row per cluster (in the clustering's order, empty clusters
        included), one column per batch (a categorical's order, else numbers
        before text, ascending), cell counts.

    Raises
    ------
    InputError
        If ``adata`` holds no clustering under ``key``, or ``batch_key`` is
        not a column of batches (:func:`~scgpcl.data._checks.check_batch_key`).

    Examples
    --------
    >>> scgpcl.tl.batch_composition(adata, "sample")  # doctest: +SKIP
    """
    _check_key(adata, key)
    check_batch_key(adata, batch_key)
    return _composition(adata.obs[key], adata.obs[batch_key])


def _composition(clusters: pd.Series, batches: pd.Series) -> pd.DataFrame:
    if isinstance(clusters.dtype, pd.CategoricalDtype):  # keep clusters that ended up empty, with 0 cells
        order = [str(c) for c in clusters.cat.categories]
    else:
        order = cluster_order(clusters)
    keep = (clusters.notna() & batches.notna()).to_numpy()
    c = pd.Categorical(clusters[keep].astype(str).to_numpy(), categories=order)
    b = batches[keep].astype(str).to_numpy()
    table = pd.crosstab(c, b, dropna=False)
    table = table.reindex(index=order, columns=cluster_order(batches[keep]), fill_value=0).astype(np.int64)
    table.index.name, table.columns.name = "cluster", "batch"
    return table


def batch_specific(table: pd.DataFrame) -> list[tuple[str, str, float]]:
    """The clusters made mostly of one batch: ``(cluster, batch, share)``, largest share first.

    A cluster counts when, for one batch b holding a share f of all the cells in ``table``, at least
    :data:`BATCH_SHARE` of the cluster's cells come from b, that share is at least halfway from f to 1, and
    a binomial draw of the cluster's size at rate f would reach that many cells of b with a probability
    below :data:`CHANCE` divided by the number of clusters times the number of batches (Bonferroni: with
    random batches, any cluster at all is named with a probability below :data:`CHANCE`).
    """
    from scipy.stats import binom

    total = table.to_numpy().sum()
    if total == 0:
        return []
    fraction = table.sum(axis=0) / total  # each batch's share of all cells
    tests = table.shape[0] * table.shape[1]
    found = []
    for cluster, row in table.iterrows():
        n = int(row.sum())
        if n == 0:
            continue
        batch = row.idxmax()
        k, f = int(row[batch]), float(fraction[batch])
        share = k / n
        if share >= max(BATCH_SHARE, (1 + f) / 2) and binom.sf(k - 1, n, f) * tests < CHANCE:
            found.append((str(cluster), str(batch), float(share)))
    return sorted(found, key=lambda t: -t[2])


def batch_record(clusters: pd.Series, batches: pd.Series, batch_key: str, *, key: str = "scgpcl",
                 warn: bool = True) -> dict[str, Any]:
    """``uns[key]['batches']``: the composition table as arrays and the batch-specific clusters; warns about them."""
    table = _composition(clusters, batches)
    found = batch_specific(table)
    record = {
        "batch_key": batch_key,
        "clusters": np.asarray(table.index, dtype=str),
        "batches": np.asarray(table.columns, dtype=str),
        "counts": table.to_numpy(),
        "specific": np.asarray([f[0] for f in found], dtype=str),
        "specific_batch": np.asarray([f[1] for f in found], dtype=str),
        "specific_share": np.asarray([f[2] for f in found], dtype=float),
    }
    if warn:
        _tell(table, found, batch_key, key)
    return record


def _tell(table: pd.DataFrame, found: list[tuple[str, str, float]], batch_key: str, key: str) -> None:
    where = f"obs[{batch_key!r}]"
    if not found:
        log.info("no cluster is made mostly of one batch of %s (%d batches)", where, table.shape[1])
        return
    sizes = table.sum(axis=1)
    cells = int(sum(sizes[c] for c, _, _ in found))
    shown = ", ".join(f"{c} ({s:.0%} {b!r})" for c, b, s in found[:8]) + (", ..." if len(found) > 8 else "")
    warn_user(
        f"{len(found)} of {table.shape[0]} clusters ({cells / max(int(sizes.sum()), 1):.0%} of the cells) are made "
        f"mostly of one batch of {where}, far beyond that batch's share of all cells: cluster {shown}. If these "
        f"batches should hold the same cell types, these clusters may follow the batch, not the cell type: scgpcl "
        f"does not remove batch effects (docs/usage.md, 'Several samples or batches'). uns[{key!r}]['batches'] "
        f"holds each cluster's cells per batch")
