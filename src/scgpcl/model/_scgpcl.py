"""The user-facing model: AnnData in, clusters and embeddings out. No maths here."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from anndata import AnnData

from .._config import OtherVersionError, SCGPCLConfig, recommended
from .._device import resolve_device
from .._early_checks import resolve_seed as _resolve_seed
from .._errors import InputError
from .._fs import is_probe, space_problem
from .._machine import sha256_of, software_versions
from .._messages import (
    arg,
    clip,
    counted,
    empty_clusters_message,
    in_cli,
    is_array_input,
    still_working,
    warn_user,
)
from .._signals import deferred
from .._threads import thread_count_problem
from ..data import PreparedData, choose_target_sum, prepare, sample_components, with_target_sum
from ..data._checks import check_counts, check_distinct_cells, check_n_clusters, holds_counts, warn_low_count_cells
from ..data._orientation import anndata_looks_transposed
from ..data._sharded import make_loader
from ..distributed import check_process_devices, rank_device
from ..module import LOSS_TERMS, SCGPCLModule
from ..train import Trainer, TrainingResult, check_stage_terms, estimate_k
from ..train._distributed import make_trainer

__all__ = ["SCGPCL"]

log = logging.getLogger("scgpcl")

#: :meth:`SCGPCL.load`'s default ``layer``: the one the model was trained on
_SAVED_LAYER = object()

_WEIGHTS = "model.pt"
_CONFIG = "config.json"


def _scaling_name(target_sum: float) -> str:
    """How ``target_sum`` scales the cells, in words."""
    return "the median total" if not target_sum else f"{target_sum:g} counts per cell"


def _warn_if_transposed(adata: AnnData, counts) -> None:
    """Say so, before training, when the AnnData's names say it is stored genes x cells: its genes would be clustered."""
    if is_array_input():  # a plain matrix: its names are the scikit-learn wrapper's own, and the counts alone
        return            # are not enough to doubt scikit-learn's samples x features convention
    guess = anndata_looks_transposed(adata.obs_names, adata.var_names, counts)
    if guess is None:
        return
    warn_user(f"adata looks stored genes x cells ({adata.n_obs} rows x {adata.n_vars} columns), since "
              f"{' and '.join(guess.reasons)}: its rows, clustered here as cells, look like genes. If so, pass "
              "adata.T (or read the file with scgpcl.read_counts(path, genes_as_rows=True))")


def check_inputs(adata: Any, config: Any = None, *, copy: bool = False) -> None:
    """Refuse, with the fix, what is not an AnnData or not a configuration, and a backed AnnData to ``copy``.

    Without this, ``config=scgpcl.faithful`` (the function) or an array for ``adata`` failed with an
    ``AttributeError`` from inside, and a backed AnnData with ``copy=True`` with anndata's own error. (A backed
    AnnData whose counts are in a layer, which anndata holds in memory, can be clustered in place.)
    """
    if not isinstance(adata, AnnData):
        wrap = (" wrap a cells x genes count matrix with anndata.AnnData(X), or use "
                "scgpcl.sklearn.SCGPCLClustering, which takes matrices") if getattr(adata, "ndim", None) == 2 else ""
        raise InputError(f"adata must be an AnnData, got {type(adata).__name__}" + (f":{wrap}" if wrap else ""))
    if copy and adata.isbacked:
        raise InputError("this AnnData is backed (its X stays on disk), and copy=True cannot copy it: load it "
                         "into memory first with adata = adata.to_memory(), or read the file without backed=")
    if adata.isbacked and adata.is_view:  # anndata refuses to turn it into an AnnData of its own: after training
        raise InputError("this AnnData is a view of a backed AnnData (adata[mask] of a file read with backed=), "
                         "which cannot take the results: load the subset into memory first with "
                         "adata = adata[mask].to_memory()")
    if config is None or isinstance(config, SCGPCLConfig):
        return
    from .._config import PRESETS

    got = clip(repr(config), 60)
    if any(config is make for make in PRESETS.values()):
        got, fix = f"the function scgpcl.{config.__name__}", f"call it: config=scgpcl.{config.__name__}()"
    elif isinstance(config, str):
        fix = f"use config=scgpcl.{PRESETS[config].__name__}()" if config in PRESETS else \
            "use config=scgpcl.recommended() or scgpcl.faithful()"
    elif isinstance(config, dict):
        # not SCGPCLConfig.from_dict: it fills the options a dict leaves out with earlier versions' values
        fix = ("pass its options as keywords (lr=1e-3), or use config=scgpcl.recommended().override(lr=1e-3) "
               "(the options of each section are flat keywords there)")
    else:
        fix = "use config=scgpcl.recommended() or scgpcl.faithful(), or pass single options as keywords (lr=1e-3)"
    raise InputError(f"config must be an SCGPCLConfig, got {got}: {fix}")


def _check_unique_genes(adata: AnnData) -> None:
    # genes are matched by name (SCGPCL.load, marker genes): duplicates would mix them up
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()
        shown = ", ".join(map(repr, dup[:5])) + (", ..." if len(dup) > 5 else "")
        raise InputError(
            f"{len(dup)} gene name(s) occur more than once in var_names ({shown}); "
            "make them unique first with adata.var_names_make_unique()"
        )


def _get_counts(adata: AnnData, layer: str | None):
    if layer is None:
        if adata.X is None:
            available = ", ".join(map(repr, adata.layers.keys())) or "none"
            raw = "; or adata.raw.to_adata() for the counts in .raw" if adata.raw is not None else ""
            raise InputError(
                f"adata.X is None: pass layer= naming the layer with the raw counts (available layers: {available})"
                f"{raw}"
            )
        return adata.X
    if layer not in adata.layers:
        available = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise InputError(f"layer {layer!r} not found in the AnnData; available layers: {available} (or layer=None for X)")
    return adata.layers[layer]


def _records_to_arrays(records: list[dict[str, float]]) -> dict[str, np.ndarray]:
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys]
    return {k: np.array([r.get(k, np.nan) for r in records], dtype=float) for k in keys}


def _check_auto_k_options(config: SCGPCLConfig) -> None:
    t = config.train
    if t.auto_k_method.startswith("leiden") or t.auto_k_method == "consensus":
        import importlib.util

        if importlib.util.find_spec("igraph") is None:
            raise InputError(
                f"auto_k_method={t.auto_k_method!r} needs igraph, which is not installed: "
                "pip install igraph (an scgpcl dependency), "
                "or choose auto_k_method='eigengap' or 'silhouette'"
            )


class SCGPCL:
    """scGPCL clustering of one AnnData object.

    Parameters
    ----------
    adata
        Cells x genes; raw counts in ``X`` or in ``layers[layer]``.
    n_clusters
        Number of clusters K (2 <= K <= number of cells), or ``None`` to
        estimate K on the representation after the warm-up (criterion
        ``auto_k_method``, at most ``auto_k_max``). After :meth:`train`,
        :attr:`n_clusters` holds the estimate and :attr:`auto_k` the
        criterion and its curve.
    layer
        Layer holding the raw counts (``None``: ``X``).
    config
        A :class:`~scgpcl.SCGPCLConfig`; defaults to the recommended settings
        (:func:`scgpcl.recommended`; :func:`scgpcl.faithful` for the reference's).
    random_state
        Seed for weights, sampling, masking and k-means. The same seed gives
        the same labels on the same CPU. ``None`` draws a seed, logs it and
        keeps it in :attr:`random_state` (``tl.cluster`` records it in ``uns``).
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    **overrides
        Any config field by name, e.g. ``lr=1e-3, pretrain_rounds=50``.

    Examples
    --------
    >>> model = SCGPCL(adata, n_clusters=8)
    >>> model.train()
    >>> labels = model.predict()  # -1 for cells with no counts in the genes used (not clustered)
    >>> scgpcl.tl.store_results(adata, model)  # obs['scgpcl'] (NaN for those), obsm['X_scgpcl'], uns['scgpcl']
    """

    def __init__(
        self,
        adata: AnnData,
        n_clusters: int | str | None,
        *,
        layer: str | None = None,
        config: SCGPCLConfig | None = None,
        random_state: int | None = 0,
        device: str | torch.device = "auto",
        **overrides: Any,
    ):
        check_inputs(adata, config)
        config = config or recommended()
        try:
            if overrides:
                config = config.override(**overrides)
            config.validate()
            check_stage_terms(config.train, config.model.reconstruction)
        except ValueError as e:
            raise InputError(str(e)) from None
        seed = _resolve_seed(random_state)
        # checks, gene selection, cell scaling, graph: 20 s at 100,000 cells before the line below
        with still_working(f"preparing {adata.n_obs} cells"):
            self._build(adata, config, layer=layer, random_state=seed, device=device, n_clusters=n_clusters)
        log.info(
            "scGPCL: %d cells x %d genes (of %d), K=%s, device %s",
            self.data.n_cells, self.data.n_genes, adata.n_vars,
            self.n_clusters if self.n_clusters is not None else f"auto ({config.train.auto_k_method})",
            self.device,
        )

    def _build(self, adata: AnnData, config: SCGPCLConfig, *, layer: str | None, random_state: int,
               device: str | torch.device, n_clusters: int | None, genes: np.ndarray | None = None,
               kmeans_calls: int = 0) -> None:
        """The one construction path of :meth:`__init__` and :meth:`load`: checks, data, network, loader."""
        self.config, self.adata, self.layer, self.random_state = config, adata, layer, random_state
        self._other_cells = False  # load() given cells the model was not trained on
        #: the counts were the input's ``.raw`` (the command's ``--use-raw`` builds the model on
        #: ``adata.raw.to_adata()``); saved, so that :meth:`load` reads ``.raw`` again
        self.counts_from_raw = False
        #: this model's counts are ``adata.raw`` of the AnnData :meth:`load` was given (it swapped them in), so
        #: :func:`scgpcl.tl.store_results` records that the counts are in ``.raw``, where markers and the report
        #: read them
        self.counts_in_raw = False
        requested = resolve_device(device)
        if not in_cli():  # processes nccl could not give a GPU each; the command checked with its --dist-backend
            check_process_devices(requested)
        self.device = rank_device(requested)  # cuda:LOCAL_RANK under torchrun
        _check_unique_genes(adata)
        counts = _get_counts(adata, layer)
        check_counts(counts, reconstruction=config.model.reconstruction,
                     where="X" if layer is None else f"layers[{layer!r}]", layers=list(adata.layers.keys()),
                     has_raw=adata.raw is not None, raw_values=None if adata.raw is None else adata.raw.X,
                     layer_values=adata.layers, layer=layer)
        if genes is None and not in_cli():  # the command refused such a file when reading it, or was told
            _warn_if_transposed(adata, counts)
        self.n_clusters: int | None = check_n_clusters(n_clusters, adata.n_obs, allow_none=genes is None,
                                                         warn=genes is None)  # load: K is the model's
        if self.n_clusters is None:
            _check_auto_k_options(config)
        self.data: PreparedData = prepare(counts, adata.var_names.to_numpy(), config.preprocess, genes=genes)
        if genes is None:
            warn_low_count_cells(self.data)
        if self.n_clusters is not None and self.n_clusters > self.data.n_cells:
            raise InputError(
                f"{arg('n_clusters=', '--n-clusters ')}{self.n_clusters} exceeds the {self.data.n_cells} cells left "
                "after dropping empty cells"
            )
        sample = config.train.sample_cells
        if sample and sample < self.data.n_cells and sample < (self.n_clusters or 3):
            need = f"the {self.n_clusters} clusters" if self.n_clusters else "the 3 cells that estimating K needs"
            raise InputError(
                f"{arg('sample_cells=', '--sample-cells ')}{sample} is fewer than {need}: the global steps "
                f"(k-means, prototypes) run on that many cells. Give at least {self.n_clusters or 3}, or 0 for "
                "every cell"
            )
        if self.n_clusters is None and self.data.n_cells < 3:
            raise InputError(
                f"estimating K needs at least 3 cells, but only {self.data.n_cells} are left after dropping "
                "empty cells; pass n_clusters"
            )
        #: ``choose_target_sum``: each candidate target_sum's silhouette (None if no choice was made)
        self.target_sum_scores: dict[float, float] | None = None
        #: ``provisional_k`` with an estimated K: the K the cell scaling was chosen at (None otherwise)
        self.provisional_k: int | None = None
        if config.preprocess.choose_target_sum and genes is None:
            self._choose_target_sum(random_state)
            config = self.config
        if genes is None and self.n_clusters is not None:
            check_distinct_cells(self.data.lognorm, self.n_clusters)  # the features at the scaling used
        m = config.model
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
            # the weights are drawn on the CPU: seed only its generator (torch.manual_seed would also reseed the
            # caller's CUDA generators, which fork_rng(devices=[]) does not restore)
            torch.default_generator.manual_seed(random_state)
            self.module = SCGPCLModule(
                self.data.n_genes, encoder_dims=tuple(m.encoder_dims), gene_embedding_dim=m.gene_embedding_dim,
                decoder_dim=m.decoder_dim, encoder=m.encoder, reconstruction=m.reconstruction,
                encoder_activation=m.encoder_activation,
            )
        self.module.to(self.device)
        s = config.sampler
        self.loader = make_loader(  # this process's part of each minibatch when it is one of several
            self.data, batch_size=s.batch_for(self.data.n_cells), num_samples=s.num_samples,
            max_neighbors=s.max_neighbors,
            feature_drop=s.feature_drop, thin_counts=s.thin_counts, edge_weight=s.edge_weight,
            uses_graph=self.module.uses_graph,
            gene_dim=m.gene_embedding_dim, dense_features=m.reconstruction == "mse", seed=random_state,
            device=self.device,
        )
        #: With ``n_clusters=None``: :meth:`AutoKResult.to_dict` after training (``k``, ``method``, ``curve``,
        #: ``seconds``, ``estimates``, ``candidates``, ``sample_size``; models saved before 2026-12-06 lack the last three).
        self.auto_k: dict[str, Any] | None = None
        self._trainer: Trainer | None = None
        self._stopped_part_way = False  # a train() that raised (Ctrl-C, an error) after changing the network
        # k-means calls made by training: predict()'s final k-means (finetune=False) is seeded by
        # the count, so a reloaded model must start from it to give the same labels
        self._kmeans_calls = kmeans_calls
        self._kmeans_calls_unknown = False  # load() of a model saved before the count was recorded sets it
        self.is_trained = False
        self.stages: dict[str, dict] = {}
        self._result: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def _choose_target_sum(self, random_state: int) -> None:
        """``choose_target_sum``: pick the cell scaling by silhouette; re-make the features and record it."""
        pre, tr = self.config.preprocess, self.config.train
        kept = _scaling_name(pre.target_sum)
        k, which = self.n_clusters, "K"
        if k is None and not pre.provisional_k:
            log.info("cell scaling: %s (choosing it needs K, which is estimated here; %s estimates a provisional "
                     "one for it)", kept, arg("provisional_k=True", "--provisional-k"))
            return
        if k is None:  # a provisional K on the sample the choice uses, at the scaling configured
            pcs = sample_components(self.data, target_sum=pre.target_sum, seed=random_state)
            k = estimate_k(pcs, tr.auto_k_method, k_max=tr.auto_k_max, seed=random_state,
                           what="a provisional ").k
            which = "a provisional K"
            self.provisional_k = k
        if self.data.n_cells <= k:
            log.info("cell scaling: %s (choosing it needs more cells than K=%d)", kept, k)
            return
        with still_working("choosing the cell scaling"):  # 13 s at 100,000 cells: two PCAs and k-means
            target, scores = choose_target_sum(self.data, k, seed=random_state)
        log.info("cell scaling: %s, chosen by the k-means silhouette at %s=%d on a sample of the cells (%s); %s "
                 "fixes it", _scaling_name(target), which, k,
                 ", ".join(f"{v:.3f} for {_scaling_name(t)}" for t, v in scores.items()),
                 arg("target_sum=0 or 10000", "--target-sum 0 or 10000"))
        if target != self.config.preprocess.target_sum:
            self.data = with_target_sum(self.data, target)
        self.config = self.config.override(target_sum=target, choose_target_sum=False)
        self.target_sum_scores = scores

    # ------------------------------------------------------------------ train
    @property
    def trainer(self) -> Trainer:
        """The :class:`~scgpcl.train.Trainer` of this model (made on first use)."""
        if self._trainer is None:
            c = self.config
            self._trainer = make_trainer(self.module, self.loader, model_cfg=c.model, sampler_cfg=c.sampler,
                                    train_cfg=c.train, n_clusters=self.n_clusters, seed=self.random_state,
                                    kmeans_calls=self._kmeans_calls)
        return self._trainer

    @property
    def training_result(self) -> TrainingResult | None:
        """What training produced besides the weights (None before :meth:`train` in this session)."""
        return None if self._trainer is None else self._trainer.result

    def train(self, *, progress: bool = True) -> SCGPCL:
        """Pre-train, then fine-tune (unless ``finetune=False``).

        With ``n_clusters=None``, K is estimated after the warm-up and stored in
        :attr:`n_clusters`, with the criterion and its curve in :attr:`auto_k`.
        Run by every process of a ``torchrun`` job (or of a process group the
        caller initialised), it trains data-parallel: every process must call
        it, and every process ends with the same model (docs/distributed.md).
        Called again on a trained model (or one from :meth:`load`), or after an
        earlier call stopped part-way (Ctrl-C, an error), training goes on from
        the network as it is and says so in a warning: the clusters can change,
        and are no longer what the seed gives.

        Parameters
        ----------
        progress
            Show progress bars.

        Returns
        -------
        SCGPCL
            ``self``, trained.
        """
        self.check_cells()  # before the training, not after it
        if self.is_trained:
            warn_user("this model is already trained: train() again goes on from the trained network, so its "
                      "clusters can change. predict() gives the clusters it has; a new SCGPCL(...) trains from "
                      "the start")
        elif self._stopped_part_way:  # (models pickled before 2026-12-06 get it from __setstate__)
            warn_user("an earlier train() of this model stopped part-way: training again goes on from that "
                      "partly trained network, so the result is not what this seed gives. A new SCGPCL(...) "
                      "trains from the start")
        threads = thread_count_problem()
        if threads:
            warn_user(threads)
        tr = self.trainer
        tr.progress = progress
        # until it ends: the network changes from here, so an earlier training's clusters are gone (an
        # interrupted second train() left predict() giving the first one's, and save() writing the new network)
        self._stopped_part_way, self.is_trained, self._result = True, False, None
        pre = tr.pretrain()
        self.stages = {"pretrain": pre.to_dict()}
        if tr.result.auto_k is not None:
            self.auto_k = tr.result.auto_k.to_dict()
        self.n_clusters = tr.k
        if self.config.train.finetune:
            fine = tr.finetune()
            self.stages["finetune"] = fine.to_dict()
        self._kmeans_calls, self._kmeans_calls_unknown = tr.kmeans.calls, False
        self.is_trained = True
        self._stopped_part_way = False
        self._result = None
        return self

    def check_cells(self, adata: AnnData | None = None) -> None:
        """Raise :class:`InputError` unless ``adata`` (default: the model's own) holds the model's cells in order.

        The results are per cell of the AnnData the model was built on: written into an AnnData filtered,
        reordered or replaced since, they would land on the wrong cells or fail deep inside pandas.
        """
        n_built = len(self.data.cell_mask)
        if self.adata.n_obs != n_built:
            raise InputError(f"the AnnData this model was built on has changed: {self.adata.n_obs} cells now, "
                             f"{n_built} when the model was built (filtered in place?). Build the model again on "
                             "the data as it is now, or filter a copy (adata = adata[mask].copy()) after clustering")
        if adata is None or adata is self.adata:
            return
        if adata.n_obs != n_built or not adata.obs_names.equals(self.adata.obs_names):
            how = (f"{adata.n_obs} cells, the model's {n_built}" if adata.n_obs != n_built
                   else "the same number of cells, but other names or another order")
            raise InputError(f"this AnnData does not hold the cells the model was built on ({how}): results go to "
                             "the AnnData given to the model, or one with the same cells in the same order")

    def _outputs(self, *, warn: bool = True):
        """(representation, labels, soft assignments) of the clustered cells, computed once.

        ``warn``: name empty and tiny clusters when they are computed; ``train_runs`` computes every run's
        quietly and warns about the run it keeps (:meth:`_warn_cluster_sizes`), not about runs thrown away.
        """
        if not self.is_trained:
            raise RuntimeError(_not_trained(self, "the model is not trained yet: call .train() (or SCGPCL.load) first"))
        self.check_cells()
        if self._result is None:
            self._result = self.trainer.predict()
            if warn:
                self._warn_cluster_sizes()
        return self._result

    def _warn_cluster_sizes(self) -> None:
        labels = self._outputs(warn=False)[1]
        _warn_empty_clusters(labels, self.n_clusters, finetuned=self.module.cluster_centres is not None,
                             other_cells=self._other_cells)
        _warn_tiny_clusters(labels, self.n_clusters, other_cells=self._other_cells)

    # ---------------------------------------------------------------- results
    def get_latent_representation(self) -> np.ndarray:
        """Cell representation (n_obs x d); rows of cells dropped as empty are NaN."""
        z, _, _ = self._outputs()
        out = np.full((self.adata.n_obs, z.shape[1]), np.nan, dtype=np.float32)
        out[self.data.cell_mask] = z
        return out

    def predict(self) -> np.ndarray:
        """Cluster index per cell (0..K-1); -1 for cells dropped as empty."""
        return self._predicted()

    def _predicted(self, *, warn: bool = True) -> np.ndarray:
        _, labels, _ = self._outputs(warn=warn)
        out = np.full(self.adata.n_obs, -1, dtype=np.int64)
        out[self.data.cell_mask] = labels
        return out

    def predict_pretrained(self) -> np.ndarray:
        """Labels of the partition that initialised fine-tuning (the clustering before DEC).

        With ``dec_init="kmeans"`` these are the labels ``finetune=False`` would
        give with the same seed; with ``"consensus"``, the consensus partition.
        Useful to see what fine-tuning changed. -1 for cells dropped as empty.
        """
        result = self.training_result
        if result is None or result.init_labels is None:
            raise RuntimeError("no fine-tuning stage ran in this session (finetune=False, or a loaded model)")
        out = np.full(self.adata.n_obs, -1, dtype=np.int64)
        out[self.data.cell_mask] = result.init_labels
        return out

    def predict_proba(self) -> np.ndarray:
        """DEC soft assignment Q (n_obs x K); NaN rows for dropped cells."""
        _, _, q = self._outputs()
        if q is None:
            raise RuntimeError("soft assignments need the fine-tuning stage (finetune=True)")
        out = np.full((self.adata.n_obs, q.shape[1]), np.nan, dtype=np.float32)
        out[self.data.cell_mask] = q
        return out

    @property
    def history(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-round loss terms and checks of each stage, as arrays keyed by name."""
        return {stage: _records_to_arrays(info["history"]) for stage, info in self.stages.items()}

    def summary(self) -> dict[str, Any]:
        """Rounds and steps run, stop reason and seconds per stage."""
        return {s: {k: v for k, v in d.items() if k != "history"} for s, d in self.stages.items()}

    # -------------------------------------------------------------- save/load
    def save(self, dir_path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the weights (``model.pt``, a ``state_dict``) and a JSON config (``config.json``) into a folder.

        The config holds the options, K, the seed, the layer, the genes used and
        the training record, so :meth:`load` rebuilds the same model. The files are
        written under temporary names and renamed at the end: a failed save leaves
        no half-written file.

        Parameters
        ----------
        dir_path
            Folder to write into; created if missing. It must not be a file.
        overwrite
            Replace the files of a folder that is not empty; without it such a
            folder is refused.

        Raises
        ------
        RuntimeError
            The model is not trained.
        InputError
            ``dir_path`` is a file, or a non-empty folder without ``overwrite``.
        OSError
            The disk has no room for the model (checked before writing), or the write failed; a model
            already in the folder is left as it was.
        """
        if not self.is_trained:
            raise RuntimeError(_not_trained(self, "nothing to save: the model is not trained"))
        d = Path(dir_path)
        if d.exists() and not d.is_dir():
            raise InputError(f"'{d}' is a file; save() needs a folder (a new or empty one)")
        held = sorted(c.name for c in d.iterdir() if not is_probe(c)) if d.exists() else []
        if held and not overwrite:
            if all(name.endswith(".tmp") for name in held):  # what a killed save leaves
                raise InputError(f"'{d}' holds only the temporary files of an interrupted save ({', '.join(held)}); "
                                 "remove them, or pass overwrite=True (CLI: --overwrite)")
            raise InputError(f"'{d}' exists and is not empty; pass overwrite=True (CLI: --overwrite) to replace it")
        problem = self.save_space_problem(d)
        if problem:
            raise OSError(errno.ENOSPC, f"not enough space: the model {problem}")
        state = self.module.state_dict()
        created = [p for p in (d, *d.parents) if not p.exists()]  # the folders mkdir makes, innermost first
        d.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": 2,
            "n_clusters": self.n_clusters,
            "random_state": self.random_state,
            "layer": self.layer,
            "counts_from_raw": self.counts_from_raw,
            "config": self.config.to_dict(),
            "genes": [str(g) for g in self.data.gene_names],
            "has_cluster_centres": self.module.cluster_centres is not None,
            "kmeans_calls": None if self._kmeans_calls_unknown else self._kmeans_calls,
            "stages": self.stages,
            "auto_k": self.auto_k,
            "cells": _cells_fingerprint(self.adata),  # load() tells the user when it is given other cells
            "versions": software_versions(),  # what trained it (read by no code; for the user)
        }
        # names of this save's own (two saves into one folder must not write into each other's files)
        tag = uuid.uuid4().hex[:12]
        tmp_w, tmp_c = d / f"{_WEIGHTS}.{tag}.tmp", d / f"{_CONFIG}.{tag}.tmp"
        try:
            try:
                torch.save(state, tmp_w)
            except RuntimeError as err:  # torch's writer reports a full disk as "[enforce fail at ...]"
                if self.save_space_problem(d) is not None:
                    raise OSError(errno.ENOSPC, "no space left on the device") from err
                first = (str(err).strip().splitlines() or [repr(err)])[0]
                raise OSError(errno.EIO, f"torch.save failed: {clip(first)}") from err
            # the config names the weights it belongs with, and goes in first: if the weights' rename never
            # follows (a crash, another save into the folder), the pair is one load() refuses, even over a model
            # saved before configs named their weights
            meta["weights_sha256"] = sha256_of(tmp_w)
            tmp_c.write_text(json.dumps(meta, indent=1, default=float))
            with deferred():  # and a Ctrl-C does not come between the two renames
                os.replace(tmp_c, d / _CONFIG)
                os.replace(tmp_w, d / _WEIGHTS)
        except BaseException:  # a failed save (disk full, interrupted) leaves no half-written files,
            with deferred():  # (a second Ctrl-C must not cut the clean-up short)
                tmp_w.unlink(missing_ok=True)
                tmp_c.unlink(missing_ok=True)
                if created:  # nor the folders it made (which held nothing else)
                    with suppress(OSError):
                        (d / _CONFIG).unlink(missing_ok=True)
                        (d / _WEIGHTS).unlink(missing_ok=True)
                        for folder in created:
                            folder.rmdir()
            raise

    def save_space_problem(self, dir_path: str | os.PathLike) -> str | None:
        """Why :meth:`save` into ``dir_path`` would not fit on its disk (or under ``ulimit -f``), or None.

        Parameters
        ----------
        dir_path
            The folder :meth:`save` would write; it, or its nearest existing parent, decides the disk.

        Returns
        -------
        str or None
            The problem and its fix (the weights' size plus 1 MB for the config against the free
            space), or None when the model fits.
        """
        d = Path(dir_path)
        folder = d if d.exists() else next(p for p in d.parents if p.exists())
        need = sum(t.numel() * t.element_size() for t in self.module.state_dict().values()) + 1_000_000
        return space_problem(folder, need)

    @classmethod
    def load(cls, dir_path: str | os.PathLike, adata: AnnData, *, layer: Any = _SAVED_LAYER,
             device: str | torch.device = "auto") -> SCGPCL:
        """Rebuild a trained model for ``adata``; its genes must include the saved ones.

        Meant for the data the model was trained on (to predict or embed again
        without retraining). The cell features are normalised with statistics
        of ``adata`` itself (median library size, each gene's mean and standard
        deviation), as in training; on other data they are therefore not the
        training statistics, and the embedding is only comparable if the two
        datasets are alike. A model records the cells it was trained on (their
        number and a digest of their names) and warns when given others. Models
        saved by earlier versions load too.

        Parameters
        ----------
        dir_path
            Folder written by :meth:`save`.
        adata
            Cells x genes with the raw counts; genes are matched by name.
        layer
            Where ``adata`` holds the raw counts: a key of ``adata.layers``, or None for ``X``. By
            default where the model read them in training (the saved ``layer``; for a model trained with
            the command's ``--use-raw``, ``adata.raw`` when ``adata`` has one, else ``X``, as in the
            command's output file).
        device
            ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

        Returns
        -------
        SCGPCL
            A trained model: :meth:`predict` and :meth:`get_latent_representation` work at once.

        Raises
        ------
        InputError
            The folder holds no readable model, or ``adata`` lacks some of the model's genes.
        """
        d = Path(dir_path)
        meta, config = _read_meta(d)
        expected = meta.get("weights_sha256")  # models saved before it was recorded load unchecked
        if expected is not None and (d / _WEIGHTS).is_file() and sha256_of(d / _WEIGHTS) != expected:
            raise InputError(f"'{d / _WEIGHTS}' is not the weights '{d / _CONFIG}' was saved with (damaged, or "
                             "left by an interrupted save or another save into the folder); save the model again")
        # trained with --use-raw on a file like this one (its output file has the counts in X, and no .raw). For
        # the count losses, a .raw that holds no counts (scanpy's log-normalised one) is left alone: the checks
        # below name the layers. With mse the command took .raw's values as they were (estimated counts)
        read_raw = False
        if (layer is _SAVED_LAYER and meta.get("counts_from_raw") and adata.raw is not None
                and (config.model.reconstruction == "mse" or holds_counts(adata.raw.X))):
            log.info("reading the counts from .raw, as the model was trained (--use-raw)")
            read_raw = True
            adata = adata.raw.to_adata()
            adata.var_names_make_unique()  # as the command made them when it read the file
        genes = [str(g) for g in meta["genes"]]
        _check_unique_genes(adata)
        # save() stores the names as strings; compare them as strings so that non-string
        # var_names (e.g. integers) match the model trained on them
        pos = {str(g): i for i, g in enumerate(adata.var_names)}
        missing = [g for g in genes if g not in pos]
        if missing:
            raise InputError(
                f"the AnnData lacks {len(missing)} of the model's {len(genes)} genes (e.g. {missing[:3]}); "
                "load the model with the data it was trained on"
            )
        k = meta["n_clusters"]
        if isinstance(k, int) and adata.n_obs < k:  # n_clusters would be blamed, which the caller did not pass
            raise InputError(
                f"the model has {k} clusters and the AnnData only {adata.n_obs} cells; load the model with the data "
                "it was trained on (its cell features are standardised with the AnnData's own statistics, so a "
                "handful of cells is not embedded as in training)"
            )
        self = cls.__new__(cls)
        layer = meta["layer"] if layer is _SAVED_LAYER else layer
        calls = meta.get("kmeans_calls")  # the k-means random stream's position; saved from 2026-12-02 on
        if calls is None and not meta["has_cluster_centres"]:
            warn_user("this model was saved without fine-tuning by an scgpcl older than 2026-12-02, which did not "
                      "record where its k-means random stream stood: predict() clusters the embedding with k-means "
                      "again, and its labels can differ from the run's (the embedding is the same)")
        self._build(adata, config, layer=layer, random_state=int(meta["random_state"]), device=device,
                    n_clusters=meta["n_clusters"], genes=np.array([pos[g] for g in genes]),
                    kmeans_calls=int(calls or 0))
        self._kmeans_calls_unknown = calls is None  # a new save must not write 0 as if it were known
        _load_weights(self.module, d, bool(meta["has_cluster_centres"]))
        self.counts_from_raw = bool(meta.get("counts_from_raw"))  # how it was trained, kept by a new save
        self.counts_in_raw = read_raw
        trained_on = meta.get("cells")  # models saved before 2026-12-07 do not record their cells
        given = _cells_fingerprint(adata)
        self._other_cells = trained_on is not None and any(
            trained_on.get(k) != given[k] for k in ("n_obs", "obs_names_sha256"))
        if self._other_cells and trained_on.get("sorted_obs_names_sha256") == given["sorted_obs_names_sha256"]:
            # the same cells in another order: the same features, so the same embedding and (with DEC's
            # centres) the same labels, in this order (a model saved without the sorted digest warns as before)
            self._other_cells = False
            log.info("the model's %d cells, in another order: the results follow this AnnData's order%s",
                     adata.n_obs, "" if meta["has_cluster_centres"] else
                     " (without fine-tuning the clusters come from k-means again, which may number them otherwise)")
        if self._other_cells:
            warn_user(f"the AnnData ({adata.n_obs} cells) is not the one this model was trained on "
                      f"({trained_on['n_obs']} cells{', other cell names' if trained_on['n_obs'] == adata.n_obs else ''}"
                      "): its cell features are standardised with this AnnData's own statistics, so the embedding "
                      "and the clusters can differ from training's, as for a subset of the same cells. To cluster "
                      f"these cells, train on them ({arg('scgpcl.tl.cluster', 'scgpcl cluster')})")
        self.module.to(self.device)
        self.stages = meta.get("stages", {})
        self.auto_k = meta.get("auto_k")
        self.is_trained = True
        return self

    #: attributes added since the first version, as a model pickled before them had them in effect
    _PICKLE_DEFAULTS: ClassVar[dict[str, Any]] = {
        "counts_from_raw": False, "counts_in_raw": False, "_other_cells": False, "_stopped_part_way": False,
        "_kmeans_calls_unknown": False, "target_sum_scores": None, "provisional_k": None, "auto_k": None}

    def __setstate__(self, state: dict) -> None:
        # a model pickled by an earlier version (inside a pickled estimator) lacked counts_from_raw, and save()
        # then failed with AttributeError
        state = {**self._PICKLE_DEFAULTS, **state}
        if "_kmeans_calls" not in state:  # pickled before 2026-12-02: where its k-means stream stood is unknown
            state["_kmeans_calls"], state["_kmeans_calls_unknown"] = 0, True
        self.__dict__.update(state)

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        k = "auto" if self.n_clusters is None else self.n_clusters
        return f"SCGPCL({self.data.n_cells} cells x {self.data.n_genes} genes, K={k}, {state}, {self.device})"


def _not_trained(model: SCGPCL, usual: str) -> str:
    if model._stopped_part_way:
        return ("train() of this model stopped part-way (Ctrl-C, an error), so its network is partly trained and "
                "has no clusters: call .train() again (it goes on from that network) or build a new SCGPCL(...)")
    return usual


def _read_meta(d: Path) -> tuple[dict, SCGPCLConfig]:
    """A saved model's metadata and configuration, or a clear error."""
    if d.is_file():  # load("model/model.pt"): NotADirectoryError from deep inside pathlib
        hint = f"pass the folder '{d.parent}'" if d.name in (_CONFIG, _WEIGHTS) else "pass the folder save() wrote"
        raise InputError(f"'{d}' is a file; SCGPCL.load needs the folder a model was saved in ({hint})")
    try:
        meta = json.loads((d / _CONFIG).read_text())
        config = SCGPCLConfig.from_dict(meta["config"])
        for key in ("genes", "layer", "random_state", "n_clusters", "has_cluster_centres"):
            meta[key]  # a missing key is a broken file
    except FileNotFoundError:
        raise InputError(f"'{d}' holds no saved scgpcl model ({_CONFIG} missing)") from None
    except OtherVersionError as err:  # the file is fine: "save the model again" would send the user astray
        raise InputError(f"'{d}' holds a model saved by another scgpcl version that this one cannot load: {err}. "
                         "Load it with the version that saved it, or train again") from None
    except (ValueError, TypeError, KeyError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InputError(
            f"'{d / _CONFIG}' is not a readable scgpcl model file ({type(err).__name__}: {err}); save the model again"
        ) from None
    for stage in (meta.get("stages") or {}).values():  # format 1 counted epochs (rounds of one epoch)
        if "epochs" in stage and "rounds" not in stage:
            stage["rounds"] = stage.pop("epochs")
    # loss_weights for a term with an option of its own (lambda_ins...) were ignored before 2026-12-07 and
    # are refused now: a model saved with one trained without it, so it is dropped
    ignored = sorted(n for n in config.train.loss_weights if n in LOSS_TERMS and LOSS_TERMS[n].weight_option)
    for name in ignored:
        del config.train.loss_weights[name]
    return meta, config


def _load_weights(module: SCGPCLModule, d: Path, has_centres: bool) -> None:
    try:
        state = torch.load(d / _WEIGHTS, map_location="cpu", weights_only=True)
        if has_centres:
            module.init_cluster_centres(state["cluster_centres"])
        module.load_state_dict(state)
    except FileNotFoundError:
        raise InputError(f"'{d}' has {_CONFIG} but not the weights {_WEIGHTS}: the save is incomplete") from None
    except Exception as err:  # torch raises pickle, EOF, zip and size-mismatch errors of many types
        raise InputError(
            f"'{d / _WEIGHTS}' cannot be loaded as this model's weights ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); save the model again"
        ) from None


def _warn_empty_clusters(labels: np.ndarray, k: int, *, finetuned: bool | None = None,
                         other_cells: bool = False) -> None:
    """Say so when some of the K clusters got no cell (DEC in particular can leave clusters empty).

    With ``other_cells`` (a loaded model given cells it was not trained on) the clusters are empty in
    these cells, which says nothing about how training went.
    """
    n_used = len(np.unique(labels[labels >= 0]))
    if n_used < k and other_cells:
        warn_user(f"{k - n_used} of the model's {k} clusters got no cell of this AnnData, which is not the one the "
                  "model was trained on: these cells fall into the other clusters")
    elif n_used < k:
        warn_user(empty_clusters_message(n_used, k, finetuned=finetuned))


#: clusters of at most this many cells are named after training (benchmarks/results/cluster_sizes.md)
TINY_CLUSTER = 2
#: ... when at least this many cells were clustered (a cluster of two cells in a toy dataset says little)
_TINY_CHECKED_FROM = 200


def _warn_tiny_clusters(labels: np.ndarray, k: int, *, other_cells: bool = False) -> None:
    """Name the clusters of one or two cells: a rare type, or outliers that took a cluster from a larger group.

    On the 13 benchmark datasets (3 seeds, true K) 7 of 39 runs made such clusters; 3 of the 8 were a
    2-cell labelled type found exactly, 5 were one or two cells of a type of 25 to 717 cells.
    """
    kept = labels[labels >= 0]
    if other_cells or kept.size < _TINY_CHECKED_FROM:
        return
    sizes = np.bincount(kept, minlength=k)
    tiny = [(c, int(n)) for c, n in enumerate(sizes) if 0 < n <= TINY_CLUSTER]
    if not tiny:
        return
    named = ", ".join(f"{c} ({counted(n, 'cell')})" for c, n in tiny)
    one = len(tiny) == 1
    warn_user(f"cluster{'' if one else 's'} {named} hold{'s' if one else ''} at most {TINY_CLUSTER} cells: a rare "
              f"cell type, or outlying cells that took one of the {k} clusters from a larger group (on the "
              "benchmark datasets, 5 of 8 such clusters were outliers: benchmarks/results/cluster_sizes.md). "
              f"Look at {'its' if one else 'their'} cells"
              + (f", or compare with {arg(f'n_clusters={k - len(tiny)}', f'-k {k - len(tiny)}')}"
                 if k - len(tiny) >= 2 else ""))


def _cells_fingerprint(adata: AnnData) -> dict:
    """The number of cells and a digest of their names: what :meth:`SCGPCL.load` compares."""
    names = [str(n) for n in adata.obs_names]
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()
    unordered = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()  # the same cells in another order
    return {"n_obs": int(adata.n_obs), "obs_names_sha256": digest, "sorted_obs_names_sha256": unordered}
