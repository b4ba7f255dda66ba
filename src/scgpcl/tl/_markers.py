"""Marker genes of the scGPCL clusters: ``scgpcl.tl.markers(adata)``."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from anndata.utils import make_index_unique

from .._errors import InputError, NoTestableClusters
from .._messages import arg, listing, still_working, warn_user
from .._threads import torch_threads_kept
from ..data._checks import check_count_option, check_counts, check_in_memory, is_number

__all__ = ["markers"]


_COLUMNS = ["cluster", "rank", "gene", "score", "logfoldchange", "pval_adj", "pct_cluster", "pct_rest"]


def _check_key(adata: AnnData, key: str) -> None:
    if key not in adata.obs.columns:
        raise InputError(
            f"no clusters in obs[{key!r}] (obs columns: {listing(list(adata.obs.columns))}): pass the column that "
            f"holds the clusters to {arg('key=', '--key')}, or cluster the data first "
            f"({arg('scgpcl.tl.cluster(adata, n_clusters=...)', 'scgpcl cluster')})"
        )


def cluster_order(values: pd.Series) -> list[str]:
    """Cluster names in display order: the categorical's order, else numbers before text, ascending."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        present = set(values.dropna().astype(str))
        return [c for c in values.cat.categories.astype(str) if c in present]
    names = set(values.dropna().astype(str))  # as astype(str) names them elsewhere (str(v) of a float32 differs)
    return sorted(names, key=lambda s: (0, float(s), s) if is_number(s) else (1, 0.0, s))


def clustering_counts(adata: AnnData, key: str, layer: str | None = None) -> tuple[object, str, pd.Index]:
    """The counts a clustering's markers and report read: the matrix, its name and its genes.

    The name is ``X``, ``layers['...']`` or ``raw.X``. The counts are ``layer`` when given; else where
    :func:`store_results` recorded the clustering's counts (``uns[key]['params']``: a layer, or ``.raw`` for
    a model loaded on the input of a ``--use-raw`` run); else ``X``.
    """
    if layer is not None:
        if layer not in adata.layers:
            available = ", ".join(map(repr, adata.layers.keys())) or "none"
            raise InputError(f"layer {layer!r} not found; available layers: {available} "
                             f"({arg('or layer=None for X', 'leave out --layer for X')})")
        return adata.layers[layer], f"layers[{layer!r}]", adata.var_names
    params = adata.uns.get(key, {}).get("params", {}) if isinstance(adata.uns.get(key), dict) else {}
    if params.get("counts_in_raw") and adata.raw is not None:
        # made unique as the model made them when it read .raw (SCGPCL.load)
        return adata.raw.X, "raw.X", make_index_unique(adata.raw.var_names.astype(str))
    used = params.get("layer")
    if used not in (None, "X") and used in adata.layers:
        return adata.layers[used], f"layers[{str(used)!r}]", adata.var_names
    return adata.X, "X", adata.var_names


def lognorm_by_cluster(adata: AnnData, *, key: str = "scgpcl", layer: str | None = None) -> AnnData:
    """A new AnnData of the clustered cells: ``normalize_total(1e4)`` + ``log1p`` of the counts.

    ``obs[key]`` holds the clusters (categories without cells removed). The
    input is not modified. Used by :func:`markers` and the marker dot plot.
    """
    import scanpy as sc

    _check_key(adata, key)
    counts, where, genes = clustering_counts(adata, key, layer)
    if counts is None:
        raise InputError(f"adata.X is None: marker genes need the counts; pass {arg('layer=', '--layer')} naming them")
    check_in_memory(counts, where)  # a backed AnnData's X
    clusters = adata.obs[key]
    keep = clusters.notna().to_numpy()
    if not keep.any():
        raise InputError(f"obs[{key!r}] has no clustered cells")
    x = counts[keep] if sp.issparse(counts) else np.asarray(counts)[keep]
    x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.array(x, dtype=np.float32)
    with warnings.catch_warnings(record=True) as caught:
        # negative or NaN values raise; non-integer values only warn ("mse" input)
        warnings.simplefilter("always", UserWarning)
        check_counts(x, reconstruction="mse", where=where, layers=list(adata.layers.keys()))
    if caught:
        warn_user(
            f"{where} does not look like raw counts; marker genes normalise and log-transform it again "
            f"(pass {arg('layer=', '--layer')} naming the raw counts)")
    obs = pd.DataFrame(index=adata.obs_names[keep].astype(str))
    obs[key] = pd.Categorical(clusters[keep].astype(str).to_numpy(), categories=cluster_order(clusters))
    out = AnnData(x, obs=obs, var=pd.DataFrame(index=genes.astype(str)))
    with torch_threads_kept():  # numba would reset torch's thread count
        sc.pp.normalize_total(out, target_sum=1e4)
        sc.pp.log1p(out)
    return out


def markers(
    adata: AnnData,
    *,
    key: str = "scgpcl",
    n_genes: int = 10,
    layer: str | None = None,
) -> pd.DataFrame:
    """Top differentially expressed genes of each cluster (one cluster vs the rest).

    Runs :func:`scanpy.tl.rank_genes_groups` (Wilcoxon rank-sum, Benjamini-Hochberg
    adjusted p-values) on ``normalize_total(target_sum=1e4)`` + ``log1p`` of a
    copy of the raw counts; ``adata`` is not modified.

    Parameters
    ----------
    adata
        Clustered data: ``obs[key]`` from :func:`scgpcl.tl.cluster`, raw counts
        in ``X`` or a layer.
    key
        The ``key_added`` of the clustering.
    n_genes
        Genes per cluster.
    layer
        Layer with the raw counts. ``None``: where the clustering read them
        (``uns[key]['params']``: its layer, or ``adata.raw`` for a model loaded
        on the input file of a ``--use-raw`` run), else ``X``.

    Returns
    -------
    A DataFrame with columns ``cluster``, ``rank`` (1 = best), ``gene``,
    ``score`` (Wilcoxon z-score), ``logfoldchange`` (log2), ``pval_adj``, and
    ``pct_cluster`` / ``pct_rest`` (the fraction of the cluster's cells and of
    the other cells in which the gene has counts), ``n_genes`` rows per
    cluster sorted by cluster then rank. Clusters with
    fewer than two cells are left out (with a warning).

    Raises
    ------
    InputError
        No clustering under ``key``, an unknown ``layer``, counts that are
        missing or not in memory (a backed AnnData), ``n_genes`` below 1, or
        fewer than two clusters of two or more cells.
    """
    n_genes = check_count_option(n_genes, arg("n_genes", "--n-genes"))
    data = lognorm_by_cluster(adata, key=key, layer=layer)
    return rank_markers(data, key=key, n_genes=n_genes)


def rank_markers(data: AnnData, *, key: str, n_genes: int) -> pd.DataFrame:
    """:func:`markers` on the output of :func:`lognorm_by_cluster` (modifies ``data.uns``)."""
    import scanpy as sc

    sizes = data.obs[key].value_counts()
    small = [str(c) for c in data.obs[key].cat.categories if sizes.get(c, 0) < 2]
    groups = [str(c) for c in data.obs[key].cat.categories if str(c) not in small]
    if small:
        warn_user(f"clusters with fewer than 2 cells have no markers: {', '.join(small)}")
    if len(groups) + len(small) < 2:
        raise NoTestableClusters(f"marker genes need at least two clusters in obs[{key!r}]")
    if len(groups) < 1:
        raise NoTestableClusters(
            f"none of the {len(small)} clusters in obs[{key!r}] has 2 or more cells, so no cluster can be "
            f"tested for marker genes; cluster with fewer clusters (a smaller {arg('n_clusters=', '--n-clusters')})"
        )
    # numba would reset torch's thread count; 20 s at 100,000 cells, which a line every 30 s covers beyond
    with torch_threads_kept(), still_working(f"marker genes of {len(groups)} clusters ({data.n_obs} cells)"), \
            warnings.catch_warnings():
        # scanpy builds its result column by column: from ~40 clusters pandas says "DataFrame is highly
        # fragmented" about a hundred times per call, about scanpy's code, not the user's data
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        sc.tl.rank_genes_groups(
            data, key, groups=groups, reference="rest", method="wilcoxon",
            n_genes=min(n_genes, data.n_vars), use_raw=False, key_added="_markers", pts=True,
        )
    frames = []
    for g in groups:
        df = sc.get.rank_genes_groups_df(data, group=g, key="_markers").head(n_genes)
        frames.append(pd.DataFrame({
            "cluster": g,
            "rank": np.arange(1, len(df) + 1),
            "gene": df["names"].astype(str).to_numpy(),
            "score": df["scores"].astype(float).to_numpy(),
            "logfoldchange": df["logfoldchanges"].astype(float).to_numpy(),
            "pval_adj": df["pvals_adj"].astype(float).to_numpy(),
            "pct_cluster": df["pct_nz_group"].astype(float).to_numpy(),
            "pct_rest": df["pct_nz_reference"].astype(float).to_numpy(),
        }))
    out = pd.concat(frames, ignore_index=True)[_COLUMNS]
    out["cluster"] = pd.Categorical(out["cluster"], categories=groups)
    return out
