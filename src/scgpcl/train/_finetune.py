"""DEC fine-tuning (docs/method.md sections 5-6): start from k-means, then rounds with a fixed target distribution."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch

from .._messages import counted
from ..module import LossContext, soft_assign
from ._global import dec_target, nearest
from ._joined import cluster_means, start_kmeans
from ._kmeans import consensus_labels
from ._loop import StageResult, check_finite
from ._schedule import Progress

__all__ = ["FinetuneStage", "init_clusters", "missing_target"]

log = logging.getLogger("scgpcl")


def init_clusters(tr) -> np.ndarray:
    """The DEC start (``dec_init``) on every cell's pre-trained representation; sets the DEC centres.

    k-means (``kmeans_n_init`` restarts) on the sample's rows; every cell then
    gets its nearest centre (with every cell in the sample these are the
    k-means labels). With ``kmeans_pca_weight`` the k-means runs on the representation joined with the
    features' principal components (``_joined.start_kmeans``). Records ``init_labels`` and
    ``init_embedding`` in the trainer's result and returns the labels.
    """
    z = tr.embedder.of_all(progress=tr.progress)
    ids = tr.embedder.sample_ids()
    z_s = z if tr.embedder.sample is None else z[tr.embedder.sample]
    labels_s, centres = start_kmeans(tr, z_s)
    recent = [lab for lab in tr.result.recent_round_labels if lab.max() + 1 == tr.k]
    if tr.cfg.dec_init == "consensus" and recent:
        labels_s = consensus_labels([*recent, labels_s], tr.k, seed=tr.seed)
        centres = cluster_means(z_s, labels_s, tr.k)
    tr.module.init_cluster_centres(torch.from_numpy(centres).to(tr.loader.device))
    if tr.embedder.sample is None:
        labels = labels_s
    else:
        labels = nearest(z, centres).cpu().numpy()
        labels[ids] = labels_s
    tr.result.init_labels = labels
    tr.result.init_embedding = z.cpu().numpy()
    return labels


class FinetuneStage:
    """Runs DEC fine-tuning for a :class:`~scgpcl.train.Trainer`."""

    def __init__(self, trainer):
        self.tr = trainer

    def run(self, callback: Callable[[int, dict], None] | None = None) -> StageResult:
        """Fine-tune until fewer than ``finetune_tol`` of the labels change between rounds.

        With ``finetune_keep_clusters``, fine-tuning also stops when a round left a cluster without
        cells, and the network goes back to its state before that round.
        """
        tr, cfg, sched = self.tr, self.tr.cfg, self.tr.schedule
        res = StageResult(stop_reason=f"reached the maximum of {sched.finetune_rounds} rounds")
        init = init_clusters(tr)
        prev = init if tr.embedder.sample is None else init[tr.embedder.sample_ids()]
        opt = torch.optim.Adadelta(tr.module.parameters(), lr=cfg.finetune_lr, rho=cfg.finetune_rho,
                                   weight_decay=cfg.weight_decay)
        bar = Progress(sched.max_finetune_steps, "fine-tuning", tr.progress)
        for rnd in range(1, sched.finetune_rounds + 1):
            plan = tr.loader.plan(sched.steps_per_round)
            ctx, labels = self._context(plan)
            record = {"round": rnd, "delta_label": float(np.mean(labels != prev))}
            if self._stop_before(rnd, labels, record["delta_label"], res):
                break
            prev = labels
            self.snapshot = copy.deepcopy(tr.module.state_dict()) if cfg.finetune_keep_clusters else None
            record.update(tr.run_round(tr.module, tr.loader, plan, opt, ctx, tr.weights, bar, n_views=1,
                                    mask=cfg.finetune_masking))
            res.steps += len(plan)
            record["steps"] = res.steps
            check_finite(record, "fine-tuning")
            res.history.append(record)
            res.rounds = rnd
            bar.round_done(record)
            if callback:
                callback(rnd, record)
        res.seconds = bar.close(res.stop_kind)
        log.info("fine-tuning: %s (%s), %s (%.1f s)", counted(res.rounds, "round"), counted(res.steps, "step"), res.stop_reason,
                 res.seconds)
        return res

    def _stop_before(self, rnd: int, labels: np.ndarray, delta: float, res: StageResult) -> bool:
        """The stop rules, checked before round ``rnd`` on the sample's labels."""
        tr, cfg = self.tr, self.tr.cfg
        # as in DEC/scDeepCluster, no stop before the first round: argmax Q with
        # the k-means centres reproduces the k-means labels by construction
        if tr.agree(rnd > 1 and delta < cfg.finetune_tol):
            res.stop_kind = "converged"
            res.stop_reason = f"converged before round {rnd}: {delta:.5f} of labels changed < tol {cfg.finetune_tol}"
            return True
        n_used = len(np.unique(labels))
        if tr.agree(rnd > 1 and cfg.finetune_keep_clusters and n_used < min(tr.k, self.n_used_at_start)):
            tr.module.load_state_dict(self.snapshot)
            res.stop_kind = "emptied"
            res.stop_reason = (f"stopped after round {rnd - 1}, which left {self.n_used_at_start - n_used} of the "
                               f"{tr.k} clusters without cells; kept the network as it was before that round")
            return True
        if rnd == 1:
            self.n_used_at_start = n_used
        return False

    def _context(self, plan: list[torch.Tensor]) -> tuple[LossContext, np.ndarray]:
        """The round's DEC target for its cells (frequencies from the sample) and the sample's labels."""
        tr = self.tr
        mu, alpha = tr.module.cluster_centres, tr.model_cfg.alpha
        joined = tr.joined_target  # dec_pca_target: the target from the joined space, labels from z
        with torch.no_grad():
            z_s = tr.embedder.of_sample()
            q_z = soft_assign(z_s, mu, alpha)
            q_s = q_z if joined is None else joined.soft_assign(z_s, joined.sample, mu, alpha)
            freq = q_s.sum(dim=0, keepdim=True)
            target = tr.embedder.spread(dec_target(q_s, freq), 0.0)
            missing = tr.embedder.missing(torch.cat(plan))
            if len(missing):
                target[missing] = missing_target(tr, missing, freq)
        ctx = LossContext("finetune", tau=tr.model_cfg.tau, alpha=alpha, target=target)
        return ctx, q_z.argmax(1).cpu().numpy()


def missing_target(tr, missing: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
    """DEC's target for a round's cells outside the sample.

    From their own representation (joined with their feature PCs with ``dec_pca_target``) and the sample's
    cluster frequencies ``freq``.
    """
    mu, alpha, joined = tr.module.cluster_centres, tr.model_cfg.alpha, tr.joined_target
    z_m = tr.embedder.of_cells(missing)
    q_m = soft_assign(z_m, mu, alpha) if joined is None else joined.soft_assign(z_m, joined.rows(missing), mu, alpha)
    return dec_target(q_m, freq)
