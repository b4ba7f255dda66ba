"""The trainer: runs pre-training and fine-tuning (docs/method.md section 6) on a module and a loader.

The trainer holds no data preparation: the loader (``scgpcl.data``) owns the
graph, sampling, batching and the counts; the module (``scgpcl.module``) owns
the objective. The trainer decides when the global steps run, keeps the
seeded k-means, and collects what happened in one public
:class:`TrainingResult`.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .._config import ModelConfig, SamplerConfig, TrainConfig
from .._messages import warn_user
from ..data import SubgraphLoader
from ..module import SCGPCLModule, soft_assign
from ._auto_k import AutoKResult, estimate_k
from ._finetune import FinetuneStage
from ._global import Embedder, SeededKMeans, prototype_sizes
from ._joined import FeaturePCA, start_kmeans
from ._kmeans import assign
from ._loop import StageResult, loss_weights, run_round
from ._pretrain import PretrainStage
from ._schedule import Schedule

__all__ = ["StageResult", "Trainer", "TrainingResult", "prototype_sizes"]

log = logging.getLogger("scgpcl")


@dataclass
class TrainingResult:
    """Everything a training run produced besides the weights."""

    #: ``"pretrain"`` / ``"finetune"`` -> what the stage did
    stages: dict[str, StageResult] = field(default_factory=dict)
    #: with ``n_clusters=None``: how K was estimated
    auto_k: AutoKResult | None = None
    #: labels of every cell at the start of fine-tuning (the clustering before DEC)
    init_labels: np.ndarray | None = None
    #: every cell's pre-trained representation, on which those labels were computed
    init_embedding: np.ndarray | None = None
    #: the sample's k-means labels (K clusters) after the latest post-warm-up round
    round_labels: np.ndarray | None = None
    #: those of the last ``dec_init_rounds`` rounds (``dec_init="consensus"``)
    recent_round_labels: collections.deque = field(default_factory=collections.deque)
    #: global ids of the cells the global steps used (every cell when there were few enough)
    sample: np.ndarray | None = None


class Trainer:
    """Runs the two stages on one dataset.

    Parameters
    ----------
    module
        The network, on the loader's device.
    loader
        The dataset's :class:`~scgpcl.data.SubgraphLoader`.
    model_cfg, sampler_cfg, train_cfg
        The configuration sections.
    n_clusters
        K, or ``None`` to estimate it (``train_cfg.auto_k_method``) on the
        representation after the warm-up; :attr:`k` then holds the estimate.
    seed
        Seeds the k-means and the sample of the global steps (the loader has its own streams).
    progress
        Show a progress bar per stage.
    kmeans_calls
        k-means calls already made (a reloaded model continues the count).
    """

    def __init__(self, module: SCGPCLModule, loader: SubgraphLoader, *, model_cfg: ModelConfig,
                 sampler_cfg: SamplerConfig, train_cfg: TrainConfig, n_clusters: int | None, seed: int = 0,
                 progress: bool = True, kmeans_calls: int = 0):
        self.module, self.loader = module, loader
        self.model_cfg, self.sampler_cfg, self.cfg = model_cfg, sampler_cfg, train_cfg
        self.k: int | None = None if n_clusters is None else int(n_clusters)
        self.seed = int(seed)
        self.progress = progress
        self.kmeans = SeededKMeans(self.seed, kmeans_calls)
        self.weights = loss_weights(train_cfg, loader.n_cells)
        self.schedule = Schedule.build(loader.steps_per_epoch, train_cfg)
        self.embedder = Embedder(module, loader, sample_cells=train_cfg.sample_cells,
                                 chunk_cells=sampler_cfg.chunk_cells, seed=self.seed)
        self.joined_target = None  # set by the DEC start with dec_pca_target (train/_joined.py)
        self.result = TrainingResult(sample=self.embedder.sample_ids() if self.embedder.sample is not None else None)

    @property
    def device(self) -> torch.device:
        """Where training runs."""
        return self.loader.device

    def estimate_k(self, z: torch.Tensor) -> int:
        """Set :attr:`k` from the representation ``z`` when it is not known yet; returns it."""
        if self.k is None:
            self.result.auto_k = estimate_k(z.detach().cpu().numpy(), self.cfg.auto_k_method,
                                            k_max=self.cfg.auto_k_max, seed=self.seed)
            self.k = self.result.auto_k.k
            for caveat in self.result.auto_k.caveats(self.cfg.auto_k_max):
                warn_user(caveat)
        return self.k

    def sample_feature_pcs(self) -> tuple[FeaturePCA, np.ndarray]:
        """The input features' principal components, fitted on the global steps' sample, and its scores."""
        pca = FeaturePCA(self.loader, self.embedder.sample, chunk=self.sampler_cfg.chunk_cells)
        return pca, pca.transform(self.embedder.sample)

    def pretrain(self, callback: Callable[[int, dict], None] | None = None) -> StageResult:
        """Contrastive pre-training; ``callback(round, record)`` after every round."""
        log.info("schedule: minibatches of about %d cells, %s; global steps on %d of %d cells",
                 -(-self.loader.n_cells // self.loader.steps_per_epoch), self.schedule.describe(),
                 self.embedder.n_sample, self.loader.n_cells)
        res = PretrainStage(self).run(callback)
        self.result.stages["pretrain"] = res
        return res

    def finetune(self, callback: Callable[[int, dict], None] | None = None) -> StageResult:
        """DEC fine-tuning from k-means on the pre-trained representation."""
        res = self.finetune_stage(self).run(callback)
        self.result.stages["finetune"] = res
        return res

    #: the fine-tuning stage's class (data-parallel training shards its global step)
    finetune_stage = FinetuneStage

    def run_round(self, *args, **kwargs) -> dict[str, float]:
        """One round of optimizer steps (:func:`~scgpcl.train._loop.run_round`).

        Data-parallel training runs it through ``DistributedDataParallel``.
        """
        return run_round(*args, **kwargs)

    def agree(self, decision: bool) -> bool:
        """A decision all processes follow (one process: the decision itself; several: rank 0's)."""
        return bool(decision)

    def embed(self) -> torch.Tensor:
        """Every cell's full-graph representation (chunked; eval mode, no sampling or masking)."""
        return self.embedder.of_all(progress=self.progress)

    def predict(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(representation, labels, soft assignment or None if there are no DEC centres) of every cell."""
        if self.loader.n_cells > self.embedder.n_sample:
            log.info("embedding all %d cells", self.loader.n_cells)
        z = self.embed()
        mu = self.module.cluster_centres
        if mu is None:
            z_s = z if self.embedder.sample is None else z[self.embedder.sample]
            labels_s, centres = start_kmeans(self, z_s)
            if self.embedder.sample is None:
                return z.cpu().numpy(), labels_s, None
            # as fine-tuning starts (``init_clusters``): the sample keeps its k-means labels, which come from
            # the joined space with kmeans_pca_weight > 0; the other cells get the nearest cluster mean
            labels = assign(z, centres)
            labels[self.embedder.sample_ids()] = labels_s
            return z.cpu().numpy(), labels, None
        with torch.no_grad():
            chunk = self.sampler_cfg.chunk_cells
            q = torch.cat([soft_assign(z[i : i + chunk], mu, self.model_cfg.alpha) for i in range(0, len(z), chunk)])
        return z.cpu().numpy(), q.argmax(1).cpu().numpy(), q.cpu().numpy()
