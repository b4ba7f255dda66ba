"""scanpy-style entry point: ``scgpcl.tl.cluster(adata, n_clusters=...)``."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData, ImplicitModificationWarning

from .._config import SCGPCLConfig, flat_config
from .._early_checks import check_keys
from .._machine import cpu_model, gpu_model, software_versions
from .._messages import arg, warn_user
from .._signals import deferred
from ..data._checks import check_batch_key, check_label_key
from ..metrics import clustering_metrics, has_label
from ..model._runs import train_runs
from ..model._scgpcl import SCGPCL, check_inputs
from ._batches import batch_record

__all__ = ["cluster", "store_results"]


def cluster(
    adata: AnnData,
    *,
    n_clusters: int | str | None,
    layer: str | None = None,
    label_key: str | None = None,
    batch_key: str | None = None,
    key_added: str = "scgpcl",
    random_state: int | None = 0,
    config: SCGPCLConfig | None = None,
    device: str = "auto",
    progress: bool = True,
    copy: bool = False,
    n_runs: int = 1,
    **overrides: Any,
) -> AnnData | None:
    """Cluster cells with scGPCL and store the results in ``adata``.

    Trains an :class:`~scgpcl.SCGPCL` model on the raw counts and writes:

    - ``obs[key_added]``: the cluster of each cell, a categorical of strings
      ``"0"`` ... ``"K-1"``; cells dropped for having no counts in the genes
      used are NaN, with a warning.
    - ``obsm['X_' + key_added]``: the learned representation, ready for
      ``sc.pp.neighbors(adata, use_rep='X_scgpcl')`` (NaN rows for dropped cells).
    - ``uns[key_added]``: ``params`` (K, seed, layer, device, cells and genes
      used, the flattened configuration, the CPU), per-round ``history``,
      ``stages`` (rounds and steps run, stop reason, seconds), ``genes_used``
      and, when ``label_key`` names reference labels, ``metrics`` (ARI, NMI,
      CA, F1) on the clustered cells that have a label; with ``batch_key``,
      ``batches``: each cluster's cells per batch and the clusters made mostly
      of one batch (:func:`scgpcl.tl.batch_composition`), with a warning
      when there are any.

    With ``n_runs`` > 1, also ``obs[key_added + '_agreement']`` and
    ``uns[key_added]['runs']`` (see ``n_runs``).

    A UMAP stored by an earlier clustering under the same key
    (``obsm['X_' + key_added + '_umap']``) is removed, since it no longer
    matches the new representation.

    Parameters
    ----------
    adata
        Cells x genes with raw counts in ``X`` or in ``layers[layer]``.
    n_clusters
        Number of clusters K (2 <= K <= number of cells), or ``None`` (or
        ``"auto"``) to estimate K on the representation after the warm-up
        (criterion ``auto_k_method``, e.g. ``auto_k_method="silhouette"``); the
        estimate is recorded in ``uns[key_added]['auto_k']``: ``k``,
        ``method``, ``seconds``, ``curve`` (the criterion over its candidates,
        arrays keyed by name), ``estimates`` (each criterion's own K),
        ``candidates`` (the smallest and largest K considered) and
        ``sample_size`` (the cells it was made on). With ``n_runs`` > 1,
        ``uns[key_added]['runs']`` also holds each run's ``n_clusters``.
    layer
        Layer holding the raw counts (``None``: ``X``).
    label_key
        Column of ``obs`` with reference labels to score the clusters against
        (cells without a label are left out of the metrics). Not used for
        training.
    batch_key
        Column of ``obs`` naming each cell's batch (sample, donor, run). Not used
        for training: scgpcl does not remove batch effects. After clustering,
        warns about clusters made mostly of one batch, far beyond its share of
        all cells (the rule: docs/usage.md, "Several samples or batches"): if
        the batches should share their cell types, such clusters may follow
        the batch.
    key_added
        Where the results go: ``obs[key_added]``, ``obsm['X_' + key_added]``,
        ``uns[key_added]``. Must not contain ``/`` nor equal ``label_key`` or
        ``batch_key``.
    random_state
        Seed for weights, sampling, masking and k-means: the same seed gives
        the same labels on the same CPU. ``None`` draws a seed;
        ``uns[key_added]['params']['random_state']`` records the one used.
    config
        A :class:`~scgpcl.SCGPCLConfig`; defaults to the recommended settings
        (:func:`scgpcl.recommended`; :func:`scgpcl.faithful` for the reference's).
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    progress
        Show progress bars.
    copy
        Work on a copy of ``adata`` and return it, leaving ``adata`` unchanged.
    n_runs
        Train this many models, at seeds ``random_state``, ``random_state + 1``, ...,
        and keep the *medoid*: the run whose clusters agree best (summed ARI) with
        the others'. Costs ``n_runs`` times the time and holds the runs' models in
        memory until the choice. Adds ``obs[key_added + '_agreement']``, the share
        of the other runs that put each cell in its cluster (matched one to one),
        and ``uns[key_added]['runs']``: ``seeds``, ``chosen_seed``, ``ari`` (the
        runs' pairwise ARI) and ``mean_ari``. On the 13 benchmark datasets the
        medoid of three gained +0.011 +- 0.005 ARI over one run, with a lower
        seed-to-seed variance (docs/benchmarks/results/medoid.md). Use 3 or
        more: two runs tie, and the first is kept. Not with several processes.
    **overrides
        Any config field by name, e.g. ``lr=1e-3, pretrain_rounds=50``
        (:class:`~scgpcl.TrainConfig` and the other sections list them).

    Returns
    -------
    AnnData or None
        The clustered copy when ``copy=True``, else ``None`` (``adata`` is
        updated in place).

    Raises
    ------
    InputError
        The input cannot be clustered as given (not raw counts, an unknown
        layer, label key or batch key, a bad option value, ...); nothing is
        written.

    Examples
    --------
    >>> scgpcl.tl.cluster(adata, n_clusters=8, label_key="cell_type")
    >>> adata.uns["scgpcl"]["metrics"]["ARI"]
    >>> sc.pp.neighbors(adata, use_rep="X_scgpcl")
    """
    check_keys(key_added, label_key, batch_key)
    check_inputs(adata, config, copy=copy)  # before the copy: anndata cannot copy a backed AnnData
    if copy:
        adata = adata.copy()
    check_label_key(adata, label_key)
    check_batch_key(adata, batch_key, warn_missing=True)
    warn_replaced_column(adata, key_added)

    def make(seed: int | None) -> SCGPCL:
        return SCGPCL(adata, n_clusters, layer=layer, config=config, random_state=seed, device=device, **overrides)

    model, runs = train_runs(make, random_state, n_runs, progress=progress)
    store_results(adata, model, key_added=key_added, label_key=label_key, batch_key=batch_key, runs=runs)
    return adata if copy else None


def warn_replaced_column(adata: AnnData, key_added: str) -> None:
    """Warn, before training, when ``key_added`` names entries that no earlier scgpcl run wrote.

    The results replace ``obs[key_added]``, ``obsm['X_' + key_added]`` and ``uns[key_added]`` (as scanpy's
    ``key_added`` does): ``key_added='umap'`` would replace scanpy's UMAP, ``'leiden'`` its clustering record.
    An earlier scgpcl result under the key (``uns[key_added]['params']['config']``, which scanpy's functions
    do not write) is replaced without a word.
    """
    earlier = adata.uns.get(key_added)
    params = earlier.get("params") if isinstance(earlier, Mapping) else None
    if isinstance(params, Mapping) and "config" in params:
        return
    taken = ([f"obs[{key_added!r}]"] if key_added in adata.obs else []) + \
        ([f"obsm['X_{key_added}']"] if f"X_{key_added}" in adata.obsm else []) + \
        ([f"uns[{key_added!r}]"] if key_added in adata.uns else [])
    if taken:
        named = taken[0] if len(taken) == 1 else f"{', '.join(taken[:-1])} and {taken[-1]}"
        warn_user(f"{named} already {'holds' if len(taken) == 1 else 'hold'} data that scgpcl did not "
                  f"write; the results will replace {'it' if len(taken) == 1 else 'them'}. To keep "
                  f"{'it' if len(taken) == 1 else 'them'}, choose another {arg('key_added', '--key-added')}")


def store_results(adata: AnnData, model: SCGPCL, *, key_added: str = "scgpcl", label_key: str | None = None,
                  batch_key: str | None = None, runs: dict | None = None) -> None:
    """Write a trained model's labels, embedding and record into ``adata``.

    What :func:`cluster` does after training: ``obs[key_added]``,
    ``obsm['X_' + key_added]`` and ``uns[key_added]`` as described there.

    Parameters
    ----------
    adata
        The AnnData the model was built on (its cells, in the same order).
    model
        A trained :class:`~scgpcl.SCGPCL`.
    key_added
        Where the results go. Must not contain ``/`` nor equal ``label_key`` or
        ``batch_key``.
    label_key
        Column of ``obs`` with reference labels: adds ``metrics`` to
        ``uns[key_added]`` when some clustered cell has a label.
    batch_key
        Column of ``obs`` naming each cell's batch: adds ``batches`` to
        ``uns[key_added]`` and warns about clusters made mostly of one batch.
    runs
        The runs' record when ``model`` is the medoid of several runs (``n_runs`` of :func:`cluster`): adds
        ``obs[key_added + '_agreement']`` and ``uns[key_added]['runs']``.
    """
    check_keys(key_added, label_key, batch_key)
    check_batch_key(adata, batch_key)
    model.check_cells(adata)
    # everything is computed first and written into adata together at the end: an error or a Ctrl-C on the way
    # leaves adata as it was, not new clusters beside an earlier run's record
    labels = model.predict()
    cats = [str(i) for i in range(model.n_clusters)]
    clusters = pd.Categorical(np.where(labels >= 0, labels.astype(str), None), categories=cats)
    representation = model.get_latent_representation()
    n_dropped = int((labels < 0).sum())
    if n_dropped:
        rep = "X_" + key_added
        warn_user(
            f"{n_dropped} of {adata.n_obs} cells have no counts in the {model.data.n_genes} genes used and were not "
            f"clustered: obs[{key_added!r}] is NaN and obsm[{rep!r}] has NaN rows for them; subset with "
            f"adata[adata.obs[{key_added!r}].notna()] before sc.pp.neighbors(use_rep={rep!r})")
    info: dict[str, Any] = {
        "params": {
            "n_clusters": model.n_clusters,
            "random_state": model.random_state,
            "layer": model.layer if model.layer is not None else "X",
            # a model loaded on the input of a --use-raw run read adata.raw: markers and the report read it too
            "counts_in_raw": bool(getattr(model, "counts_in_raw", False) and adata.raw is not None),  # (older pickles)
            "device": str(model.device),
            "n_cells_used": model.data.n_cells,
            "n_cells_dropped": n_dropped,
            "n_genes_used": model.data.n_genes,
            "config": flat_config(model.config),
            # the same seed gives other labels on another CPU model: say which one this ran on
            "cpu": cpu_model(),
            # and how many threads torch used there: another count sums in another order (docs/usage.md)
            "torch_threads": torch.get_num_threads(),
            # and under which versions: other versions of torch or scikit-learn give other numbers too
            "versions": software_versions(),
        },
        "stages": model.summary(),
        "history": model.history,
        "genes_used": np.asarray(model.data.gene_names, dtype=str),
    }
    gpu = gpu_model(model.device)
    if gpu is not None:
        info["params"]["gpu"] = gpu
    info["params"].update(_data_parallel_params())
    if model.target_sum_scores:  # choose_target_sum: the silhouette of each scaling it chose between
        info["params"]["target_sum_silhouettes"] = {f"{t:g}": float(v) for t, v in model.target_sum_scores.items()}
    if model.provisional_k is not None:  # provisional_k: the estimated K the scaling was chosen at
        info["params"]["provisional_k"] = int(model.provisional_k)
    if model.auto_k is not None:
        a = model.auto_k
        info["params"]["n_clusters_requested"] = "auto"
        info["auto_k"] = {
            "k": int(a["k"]),
            "method": str(a["method"]),
            "seconds": float(a.get("seconds", 0.0)),
            "curve": {name: np.asarray(v) for name, v in a["curve"].items()},
            "estimates": {str(m): int(v) for m, v in (a.get("estimates") or {}).items()},
        }
        if a.get("candidates"):
            info["auto_k"]["candidates"] = np.asarray(a["candidates"], dtype=int)
        if a.get("sample_size") is not None:
            info["auto_k"]["sample_size"] = int(a["sample_size"])
    if label_key is not None:
        keep = labels >= 0
        truth = adata.obs[label_key].to_numpy()[keep]
        ok = has_label(truth)
        if ok.any():
            info["metrics"] = clustering_metrics(truth[ok], labels[keep][ok])
            info["metrics"]["label_key"] = label_key
            info["metrics"]["n_cells"] = int(ok.sum())  # clustered cells with a reference label
        else:
            warn_user(f"no clustered cell has a reference label in obs[{label_key!r}]: no metrics")
    if batch_key is not None:
        info["batches"] = batch_record(pd.Series(clusters, index=adata.obs_names), adata.obs[batch_key], batch_key,
                                       key=key_added)
    if runs is not None:
        info["runs"] = {k: (np.asarray(v) if k == "ari" else v) for k, v in runs.items() if k != "agreement"}
    if adata.is_view:  # anndata would say so from inside this module, with a message about its internals
        warn_user("adata is a view (a subset such as adata[:100]); the results make it an AnnData of its own, and "
                  "the AnnData it was taken from does not get them")
    with deferred(), warnings.catch_warnings():  # a Ctrl-C waits until every part is in place
        warnings.simplefilter("ignore", ImplicitModificationWarning)
        adata.obs[key_added] = clusters
        adata.obsm["X_" + key_added] = representation
        # a UMAP of an earlier clustering under this key (pl.umap, the report) no longer matches the embedding
        adata.obsm.pop(f"X_{key_added}_umap", None)
        if f"{key_added}_agreement" in adata.obs:  # an earlier clustering's, with several runs
            del adata.obs[f"{key_added}_agreement"]
        if runs is not None:
            adata.obs[f"{key_added}_agreement"] = runs["agreement"]
        adata.uns[key_added] = info


def _data_parallel_params() -> dict:
    """The number of processes of a data-parallel run (results depend on it), nothing with one process."""
    from .. import distributed

    if not distributed.is_distributed():
        return {}
    comm = distributed.current()
    return {"processes": comm.world_size, "dist_backend": comm.backend, "sync_batchnorm": comm.sync_batchnorm}
