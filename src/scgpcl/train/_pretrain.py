"""Contrastive pre-training (docs/method.md sections 5-6): rounds of steps, then k-means prototypes and the stop rules."""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from .._messages import counted
from ..module import LossContext, Prototypes
from ._global import nearest, prototype_sizes
from ._loop import StageResult, check_finite
from ._schedule import Progress

__all__ = ["PretrainStage"]

log = logging.getLogger("scgpcl")


@dataclass
class _Stability:
    """The convergence rules on the ARI between consecutive rounds' k-means labels."""

    threshold: float
    patience: int
    previous: np.ndarray | None = None
    best: float = -1.0
    best_round: int = 0

    def update(self, labels: np.ndarray, rnd: int, record: dict, res: StageResult) -> bool:
        """Record the ARI with the previous round's labels; True when a rule says stop."""
        prev, self.previous = self.previous, labels
        if prev is None:
            return False
        ari = float(adjusted_rand_score(prev, labels))
        record["ari_prev"] = ari
        if ari > self.best:
            self.best, self.best_round = ari, rnd
        if ari > self.threshold:
            res.stop_kind = "converged"
            res.stop_reason = (f"converged after round {rnd}: ARI between consecutive rounds' k-means labels "
                               f"{ari:.4f} > {self.threshold}")
            return True
        if self.patience > 0 and rnd - self.best_round >= self.patience:
            res.stop_kind = "patience"
            res.stop_reason = (f"stopped after round {rnd}: the ARI between consecutive rounds' k-means labels has "
                               f"not exceeded its best ({self.best:.4f}, round {self.best_round}) for "
                               f"{self.patience} rounds")
            return True
        return False


@dataclass
class _Clusters:
    """The latest post-warm-up k-means: granularities, centres, the sample's labels."""

    sizes: list[int] = field(default_factory=list)
    centres: list[np.ndarray] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)  # per granularity, over every cell (-1: unknown)


class _Snapshots:
    """The module's weights at the end of the last ``n`` rounds, and their mean (``TrainConfig.average_rounds``).

    Floating-point parameters and buffers (batch-norm statistics) are averaged; integer buffers (batch
    counts) keep their latest value; DEC's cluster centres are left alone (they do not exist yet).
    """

    def __init__(self, n: int):
        self.kept: collections.deque[dict[str, torch.Tensor]] = collections.deque(maxlen=max(n, 1))
        self.n = n

    def __len__(self) -> int:
        return len(self.kept)

    def add(self, module: torch.nn.Module) -> None:
        """Keep a copy of ``module``'s current weights (when averaging is on)."""
        if self.n > 1:
            self.kept.append({k: v.detach().clone() for k, v in module.state_dict().items()
                              if v.is_floating_point() and "cluster_centres" not in k})

    def load_mean(self, module: torch.nn.Module) -> bool:
        """Load the mean of the kept weights into ``module``; False (nothing done) with fewer than two."""
        if len(self.kept) < 2:
            return False
        mean = {k: torch.stack([s[k] for s in self.kept]).mean(0) for k in self.kept[0]}
        module.load_state_dict(mean, strict=False)
        return True


def round_lr(lr: float, decay: str, rnd: int, rounds: int) -> float:
    """The learning rate of pre-training round ``rnd`` (1-based) of at most ``rounds``.

    ``"none"``: ``lr`` throughout. ``"cosine"``: ``lr * (1 + cos(pi * (rnd - 1) / rounds)) / 2``, from
    ``lr`` in the first round down towards 0 at the budget's end.
    """
    if decay == "none":
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * (rnd - 1) / rounds))


class PretrainStage:
    """Runs pre-training for a :class:`~scgpcl.train.Trainer` (which owns the module, loader and results)."""

    def __init__(self, trainer):
        self.tr = trainer
        cfg = trainer.cfg
        self.stability = _Stability(cfg.convergence_ari, cfg.convergence_patience)
        self.clusters = _Clusters()
        self.recent: collections.deque[np.ndarray] = collections.deque(maxlen=cfg.dec_init_rounds)
        trainer.result.recent_round_labels = self.recent
        self.snapshots = _Snapshots(cfg.average_rounds)

    def run(self, callback: Callable[[int, dict], None] | None = None) -> StageResult:
        """Pre-train until a stop rule fires or the round budget is spent."""
        tr, cfg, sched = self.tr, self.tr.cfg, self.tr.schedule
        res = StageResult(stop_reason=f"reached the maximum of {sched.pretrain_rounds} rounds")
        params = [p for n, p in tr.module.named_parameters() if not n.startswith("cluster_centres")]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        bar = Progress(sched.max_pretrain_steps, "pre-training", tr.progress)
        for rnd in range(1, sched.pretrain_rounds + 1):
            lr = round_lr(cfg.lr, cfg.lr_decay, rnd, sched.pretrain_rounds)
            for group in opt.param_groups:
                group["lr"] = lr
            plan = tr.loader.plan(sched.steps_per_round)
            record = {"round": rnd, "lr": lr,
                      **tr.run_round(tr.module, tr.loader, plan, opt, self._context(plan), tr.weights, bar)}
            res.steps += len(plan)
            record["steps"] = res.steps
            check_finite(record, "pre-training")
            stop = False
            if sched.warmup_rounds <= rnd < sched.pretrain_rounds:
                stop = tr.agree(self._global_step(rnd, record, res))
            res.history.append(record)
            res.rounds = rnd
            self.snapshots.add(tr.module)
            bar.round_done(record)
            if callback:
                callback(rnd, record)
            if stop:
                break
        res.seconds = bar.close(res.stop_kind)
        if self.snapshots.load_mean(tr.module):
            log.info("pre-training: the network is the mean of its last %d rounds' weights", len(self.snapshots))
        if tr.k is None:  # no post-warm-up round ran (warm-up as long as the budget)
            tr.estimate_k(tr.embedder.of_sample())
        log.info("pre-training: %s (%s), %s (%.1f s)", counted(res.rounds, "round"), counted(res.steps, "step"), res.stop_reason,
                 res.seconds)
        return res

    def _context(self, plan: list[torch.Tensor]) -> LossContext:
        """The loss context of a round: the prototypes once they exist, with every planned cell assigned."""
        tr, c = self.tr, self.clusters
        ctx = LossContext("pretrain", tau=tr.model_cfg.tau, alpha=tr.model_cfg.alpha)
        if not c.sizes or tr.weights.get("proto", 0.0) <= 0:
            return ctx
        if tr.cfg.prototypes == "batch":
            ctx.prototypes = Prototypes([], [], batch_sizes=c.sizes, batch_kmeans=tr.kmeans.batch(
                tr.cfg.kmeans_n_init_round))
            return ctx
        missing = tr.embedder.missing(torch.cat(plan))
        if len(missing):  # planned cells outside the sample: nearest centre in the same representation
            z = tr.embedder.of_cells(missing)
            for lab, centres in zip(c.labels, c.centres, strict=False):
                lab[missing] = nearest(z, centres)
        ctx.prototypes = Prototypes([torch.from_numpy(x).to(tr.loader.device) for x in c.centres], c.labels)
        return ctx

    def _global_step(self, rnd: int, record: dict, res: StageResult) -> bool:
        """k-means on the sample after a post-warm-up round: prototypes for the next round and the stop rules."""
        tr, cfg, c = self.tr, self.tr.cfg, self.clusters
        z = tr.embedder.of_sample()
        if not c.sizes:  # K is first needed here: with n_clusters=None, estimate it on the warm-up representation
            c.sizes = prototype_sizes(tr.estimate_k(z), len(z))
            c.centres = [None] * len(c.sizes)
        # with per-minibatch prototypes this k-means only serves the stop rules (and dec_init): K alone
        sizes = c.sizes[:1] if cfg.prototypes == "batch" else c.sizes
        results = [tr.kmeans(z, k, cfg.kmeans_n_init_round, init=c.centres[i] if cfg.kmeans_warm_start else None)
                   for i, k in enumerate(sizes)]
        c.centres = [r.centres for r in results] + c.centres[len(results):]
        c.labels = [tr.embedder.spread(torch.from_numpy(r.labels).to(z.device), -1) for r in results]
        labels = results[0].labels
        tr.result.round_labels = labels
        self.recent.append(labels)
        return self.stability.update(labels, rnd, record, res)
