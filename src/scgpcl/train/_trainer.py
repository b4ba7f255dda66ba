"""Training loops: contrastive pre-training and DEC fine-tuning (docs/method.md section 6).

The trainer owns the tensors the loops need (features, counts, size factors,
the graph and its sampler) and the random streams; the module stays pure
torch and the user-facing class never does maths.
"""

from __future__ import annotations

import collections
import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from .._config import SamplerConfig, TrainConfig, ModelConfig
from ..data._graph import BipartiteGraph, Subgraph, SubgraphSampler
from ..data._preprocess import PreparedData
from ..module import _losses as L
from ..module._network import CellFeatures, SCGPCLModule
from ._auto_k import AutoKResult, estimate_k
from ._kmeans import consensus_labels, kmeans

__all__ = ["Trainer", "StageResult", "prototype_sizes"]

log = logging.getLogger("scgpcl")


def prototype_sizes(k: int, n_cells: int | None = None) -> list[int]:
    """Granularities K_1 = K, K_2 = max(K+1, 1.5K), K_3 = max(K_2+1, ceil(2K)).

    With ``n_cells``, the finer two are capped at the number of cells (k-means
    cannot find more clusters than points; this matters only for K > n/2).
    """
    k2 = max(k + 1, int(1.5 * k))
    k3 = max(k2 + 1, math.ceil(2 * k))
    if n_cells is not None:
        k2, k3 = min(k2, n_cells), min(k3, n_cells)
    return [k, k2, k3]


@dataclass
class StageResult:
    """What one training stage did."""

    epochs: int = 0
    #: why the stage stopped, in words (logged, printed, shown in reports)
    stop_reason: str = ""
    #: the same as a fixed keyword, for code: ``"max_epochs"``, ``"converged"``
    #: (the ARI or label-change criterion) or ``"patience"`` (``convergence_patience``)
    stop_kind: str = "max_epochs"
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "stop_reason": self.stop_reason, "stop_kind": self.stop_kind,
                "seconds": self.seconds, "history": self.history}


class Trainer:
    """Runs the two stages on one prepared dataset.

    Parameters
    ----------
    module
        The network (already on ``device``).
    data
        Output of :func:`scgpcl.data.prepare`.
    n_clusters
        K, or ``None`` to estimate it (``train_cfg.auto_k_method``) on the
        embedding after the warm-up; :attr:`k` then holds the estimate and
        :attr:`auto_k` how it was made.
    progress
        Show a progress bar per stage.
    """

    def __init__(
        self,
        module: SCGPCLModule,
        data: PreparedData,
        *,
        model_cfg: ModelConfig,
        sampler_cfg: SamplerConfig,
        train_cfg: TrainConfig,
        n_clusters: int | None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        progress: bool = True,
    ):
        self.module = module
        self.data = data
        self.model_cfg = model_cfg
        self.sampler_cfg = sampler_cfg
        self.cfg = train_cfg
        self.k: int | None = None if n_clusters is None else int(n_clusters)
        self.auto_k: AutoKResult | None = None
        self.seed = int(seed)
        self.device = torch.device(device)
        self.progress = progress

        self.graph = BipartiteGraph(data.counts, data.lognorm if sampler_cfg.edge_weight == "lognorm" else None)
        self.sampler = SubgraphSampler(self.graph, sampler_cfg.num_samples, sampler_cfg.max_neighbors)
        self._mean = torch.from_numpy(data.feature_mean)
        self._std = torch.from_numpy(data.feature_std)
        self._mlp = model_cfg.encoder == "mlp"
        self.size_factors = torch.from_numpy(data.size_factors).to(self.device)
        # sum over genes of lgamma(x + 1) per cell: the ZINB likelihood's constant
        c = data.counts
        lg = c.copy()
        lg.data = np.asarray(torch.lgamma(torch.from_numpy(c.data.astype(np.float64)) + 1.0).numpy())
        self.lgamma_cell = np.asarray(lg.sum(axis=1)).ravel()
        self._full: Subgraph | None = None
        self.reseed(self.seed)
        self._kmeans_calls = 0
        #: labels on the pre-trained embedding that initialised DEC (``dec_init``; None before fine-tuning)
        self.init_labels: np.ndarray | None = None
        #: the pre-trained embedding those labels were computed on
        self.init_embedding: np.ndarray | None = None
        #: k-means labels (K clusters) of the latest post-warm-up pre-training
        #: epoch, as used for its prototypes and convergence check
        self.epoch_labels: np.ndarray | None = None
        #: those of the last ``dec_init_epochs`` epochs (``dec_init="consensus"``)
        self.recent_epoch_labels: collections.deque[np.ndarray] = collections.deque(maxlen=train_cfg.dec_init_epochs)

    # ---------------------------------------------------------------- helpers
    def reseed(self, entropy: int | Sequence[int]) -> None:
        """Start the minibatch random streams afresh from ``entropy``.

        Independent streams (``numpy.random.SeedSequence(entropy).spawn``) for
        the batch order, each view's subgraph sampler and the feature masks.
        The constructor calls it with ``seed``; call it between the stages to
        give fine-tuning its own draws from the same pre-trained model. k-means
        seeds are not affected (they follow ``seed`` and a call counter).
        """
        s_order, s_v1, s_v2, s_mask = np.random.SeedSequence(entropy).spawn(4)
        self.rng_order = np.random.default_rng(s_order)
        self.rng_views = (np.random.default_rng(s_v1), np.random.default_rng(s_v2))
        self.gen_mask = torch.Generator().manual_seed(int(s_mask.generate_state(1)[0]))

    def random_state(self) -> dict:
        """A copy of every random stream's position (for :meth:`set_random_state`)."""
        return {
            "order": copy.deepcopy(self.rng_order.bit_generator.state),
            "views": [copy.deepcopy(r.bit_generator.state) for r in self.rng_views],
            "mask": self.gen_mask.get_state().clone(),
            "kmeans_calls": self._kmeans_calls,
        }

    def set_random_state(self, state: dict) -> None:
        """Put every random stream back where :meth:`random_state` found it."""
        self.rng_order.bit_generator.state = copy.deepcopy(state["order"])
        for r, st in zip(self.rng_views, state["views"]):
            r.bit_generator.state = copy.deepcopy(st)
        self.gen_mask.set_state(state["mask"].clone())
        self._kmeans_calls = state["kmeans_calls"]

    def _batches(self) -> list[np.ndarray]:
        n = self.data.n_cells
        # near-equal batches of at least two cells each (BatchNorm needs >= 2): with n = 5 and
        # batch_size = 2, three batches would leave one cell alone, so take two of 3 and 2
        n_batches = max(1, min(math.ceil(n / self.sampler_cfg.batch_size), n // 2))
        return np.array_split(self.rng_order.permutation(n), n_batches)

    def _column_mask(self, width: int, rate: float) -> torch.Tensor | None:
        if rate <= 0:
            return None
        n_drop = int(round(rate * width))
        mask = torch.ones(width)
        mask[torch.randperm(width, generator=self.gen_mask)[:n_drop]] = 0.0
        return mask.to(self.device)

    def _encode_view(self, targets: np.ndarray, view: int, *, mask: bool = True) -> torch.Tensor:
        sub = self.sampler.sample(targets, self.rng_views[view], device=self.device)
        rate = self.sampler_cfg.feature_drop[view] if mask else 0.0
        cell_mask = self._column_mask(self.data.n_genes, rate)
        gene_mask = self._column_mask(self.module.gene_embedding.embedding_dim, rate)
        genes = torch.from_numpy(sub.genes).to(self.device)
        rows = sub.cells[: sub.n_target] if self._mlp else sub.cells
        return self.module.encode(
            self._cell_features(rows), genes, sub.adjacency, sub.n_target, cell_mask=cell_mask, gene_mask=gene_mask
        )

    def _cell_features(self, rows: np.ndarray | None) -> CellFeatures:
        s = self.data.lognorm if rows is None else self.data.lognorm[rows]
        return CellFeatures(s, self._mean, self._std, self.device)

    def _batch_counts(self, targets: np.ndarray):
        """Flat indices and values of the batch's non-zero counts, and the lgamma constant."""
        b = self.data.counts[targets]
        rows = np.repeat(np.arange(b.shape[0]), np.diff(b.indptr))
        flat = torch.from_numpy(rows * b.shape[1] + b.indices).to(self.device)
        values = torch.from_numpy(b.data).to(self.device)
        const = torch.tensor(float(self.lgamma_cell[targets].sum()), device=self.device)
        return flat, values, const

    def _reconstruction(self, z: torch.Tensor, targets: np.ndarray, counts=None) -> torch.Tensor:
        mean, theta, pi_logits = self.module.decode(z)
        idx = torch.from_numpy(targets).to(self.device)
        if self.model_cfg.reconstruction == "mse":
            target = torch.from_numpy(self.data.dense_features(targets)).to(self.device)
            return L.mse_loss(target, mean)
        flat, values, const = counts if counts is not None else self._batch_counts(targets)
        return L.zinb_nll_sparse(flat, values, const, mean, theta, pi_logits, self.size_factors[idx])

    @torch.no_grad()
    def embed(self) -> torch.Tensor:
        """Representation of every cell: full graph, no sampling, no masking, eval mode."""
        was_training = self.module.training
        self.module.eval()
        if self._full is None:
            self._full = (self.graph.full(self.device), self._cell_features(None))
        full, feats = self._full
        genes = torch.from_numpy(full.genes).to(self.device)
        z = self.module.encode(feats, genes, full.adjacency, full.n_target)
        self.module.train(was_training)
        return z

    def _kmeans(self, z: torch.Tensor, k: int, n_init: int, init=None):
        self._kmeans_calls += 1
        seed = (self.seed * 100003 + self._kmeans_calls) % (2**31)
        return kmeans(z, k, n_init=n_init, seed=seed, init=init)

    def estimate_k(self, z: torch.Tensor | None = None) -> int:
        """Set :attr:`k` from the embedding (current one if ``z`` is None) when it is not known yet."""
        if self.k is None:
            z = self.embed() if z is None else z
            self.auto_k = estimate_k(
                z.detach().cpu().numpy(), self.cfg.auto_k_method, k_max=self.cfg.auto_k_max, seed=self.seed
            )
            self.k = self.auto_k.k
        return self.k

    def _bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=True, dynamic_ncols=True)

    # ----------------------------------------------------------- pre-training
    def pretrain(self, callback: Callable[[int, dict], None] | None = None) -> StageResult:
        cfg = self.cfg
        res = StageResult()
        t0 = time.perf_counter()
        opt = torch.optim.AdamW(
            [p for n, p in self.module.named_parameters() if not n.startswith("cluster_centres")],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
        )
        sizes: list[int] = []  # prototype granularities; known once K is
        prev_labels: np.ndarray | None = None
        best_ari, best_epoch = -1.0, 0  # best consecutive-epoch ARI so far (convergence_patience)
        prev_centres: list[torch.Tensor | None] = []
        res.stop_reason = f"reached the maximum of {cfg.pretrain_epochs} epochs"
        bar = self._bar(cfg.pretrain_epochs, "pre-training")
        use_proto = cfg.lambda_proto > 0
        batch_protos = use_proto and cfg.prototypes == "batch"
        protos = None
        for epoch in range(1, cfg.pretrain_epochs + 1):
            record: dict[str, float] = {"epoch": epoch}
            sums = {"zinb" if self.model_cfg.reconstruction == "zinb" else "mse": 0.0, "ins": 0.0, "proto": 0.0, "loss": 0.0}
            rec_key = next(iter(sums))
            batches = self._batches()
            self.module.train()
            for targets in batches:
                z1 = self._encode_view(targets, 0)
                z2 = self._encode_view(targets, 1)
                counts = self._batch_counts(targets) if self.model_cfg.reconstruction == "zinb" else None
                rec = 0.5 * (self._reconstruction(z1, targets, counts) + self._reconstruction(z2, targets, counts))
                loss = rec
                ins = L.info_nce(z1, z2, self.model_cfg.tau) if cfg.lambda_ins > 0 else rec.new_zeros(())
                loss = loss + cfg.lambda_ins * ins
                proto = None
                if batch_protos and sizes:  # the epochs after the warm-up
                    centres, assigned = self._batch_prototypes(z2.detach(), sizes)
                    proto = L.proto_nce(z1, centres, assigned, self.model_cfg.tau)
                elif protos is not None:
                    idx = torch.from_numpy(targets).to(self.device)
                    proto = L.proto_nce(z1, protos[0], [a[idx] for a in protos[1]], self.model_cfg.tau)
                if proto is not None:
                    loss = loss + cfg.lambda_proto * proto
                    sums["proto"] += proto.item()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums[rec_key] += rec.item()
                sums["ins"] += ins.item()
                sums["loss"] += loss.item()
            for key, v in sums.items():
                record[key] = v / len(batches)
            _check_finite(record, "pre-training", epoch)
            converged = False
            if epoch >= cfg.warmup_epochs and epoch < cfg.pretrain_epochs:
                # k-means on all cells after this epoch: prototypes for the next
                # epoch, and the convergence check against the previous epoch
                z_all = self.embed()
                if not sizes:
                    # K is first needed here: with n_clusters=None, estimate it
                    # on the warm-up embedding
                    sizes = prototype_sizes(self.estimate_k(z_all), z_all.shape[0])
                    prev_centres = [None] * len(sizes)
                # with per-minibatch prototypes, this k-means only serves the
                # convergence check (and the consensus DEC start): K alone
                results = [
                    self._kmeans(z_all, k, cfg.kmeans_n_init_epoch,
                                 init=prev_centres[i] if cfg.kmeans_warm_start else None)
                    for i, k in enumerate(sizes[:1] if batch_protos else sizes)
                ]
                prev_centres = [r.centres for r in results]
                labels = results[0].labels
                self.epoch_labels = labels
                self.recent_epoch_labels.append(labels)
                if prev_labels is not None:
                    ari = float(adjusted_rand_score(prev_labels, labels))
                    record["ari_prev"] = ari
                    if ari > best_ari:
                        best_ari, best_epoch = ari, epoch
                    if ari > cfg.convergence_ari:
                        converged = True
                        res.stop_kind = "converged"
                        res.stop_reason = (
                            f"converged after epoch {epoch}: ARI between consecutive epochs' k-means labels "
                            f"{ari:.4f} > {cfg.convergence_ari}"
                        )
                    elif cfg.convergence_patience > 0 and epoch - best_epoch >= cfg.convergence_patience:
                        converged = True
                        res.stop_kind = "patience"
                        res.stop_reason = (
                            f"stopped after epoch {epoch}: the ARI between consecutive epochs' k-means labels "
                            f"has not exceeded its best ({best_ari:.4f}, epoch {best_epoch}) for "
                            f"{cfg.convergence_patience} epochs"
                        )
                prev_labels = labels
                if use_proto and not batch_protos:
                    protos = (
                        [torch.from_numpy(r.centres).to(self.device) for r in results],
                        [torch.from_numpy(r.labels).to(self.device) for r in results],
                    )
            res.history.append(record)
            res.epochs = epoch
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"}, refresh=False)
            if callback:
                callback(epoch, record)
            if converged:
                break
        bar.close()
        self.estimate_k()  # no post-warm-up epoch ran (warmup_epochs >= pretrain_epochs)
        res.seconds = time.perf_counter() - t0
        log.info("pre-training: %d epochs, %s (%.1f s)", res.epochs, res.stop_reason, res.seconds)
        return res

    def _batch_prototypes(self, z: torch.Tensor, sizes: list[int]):
        """Prototypes of one minibatch (``prototypes="batch"``): k-means on its cells at each granularity.

        Returns the centres and each cell's assignment per granularity. A
        granularity above the number of cells in the minibatch (only possible
        with very small data) is capped at it.
        """
        centres, assigned = [], []
        for k in sizes:
            r = self._kmeans(z, min(k, z.shape[0]), self.cfg.kmeans_n_init_epoch)
            centres.append(torch.from_numpy(r.centres).to(self.device))
            assigned.append(torch.from_numpy(r.labels).to(self.device))
        return centres, assigned

    # ------------------------------------------------------------ fine-tuning
    def init_clusters(self) -> np.ndarray:
        """The DEC start (``dec_init``) on the full embedding; sets the DEC centres; returns labels."""
        z = self.embed()
        r = self._kmeans(z, self.k, self.cfg.kmeans_n_init)
        labels, centres = r.labels, r.centres
        recent = [lab for lab in self.recent_epoch_labels if lab.max() + 1 == self.k]
        if self.cfg.dec_init == "consensus" and recent:
            labels = consensus_labels(recent + [r.labels], self.k, seed=self.seed)
            zn = z.cpu().numpy()
            centres = np.stack([zn[labels == c].mean(0) for c in range(self.k)]).astype(np.float32)
        self.module.init_cluster_centres(torch.from_numpy(centres).to(self.device))
        self.init_labels = labels
        self.init_embedding = z.cpu().numpy()
        return labels

    def finetune(self, callback: Callable[[int, dict], None] | None = None) -> StageResult:
        cfg = self.cfg
        res = StageResult()
        t0 = time.perf_counter()
        prev = self.init_clusters()
        opt = torch.optim.Adadelta(
            self.module.parameters(), lr=cfg.finetune_lr, rho=cfg.finetune_rho, weight_decay=cfg.weight_decay
        )
        mu = self.module.cluster_centres
        alpha = self.model_cfg.alpha
        res.stop_reason = f"reached the maximum of {cfg.finetune_epochs} epochs"
        bar = self._bar(cfg.finetune_epochs, "fine-tuning")
        for epoch in range(1, cfg.finetune_epochs + 1):
            with torch.no_grad():
                q = L.soft_assign(self.embed(), mu, alpha)
                p = L.target_distribution(q)
            labels = q.argmax(1).cpu().numpy()
            delta = float(np.mean(labels != prev))
            prev = labels
            record: dict[str, float] = {"epoch": epoch, "delta_label": delta}
            # as in DEC/scDeepCluster, no stop before the first epoch: argmax Q
            # with the k-means centres reproduces the k-means labels by construction
            if epoch > 1 and delta < cfg.finetune_tol:
                res.stop_kind = "converged"
                res.stop_reason = (
                    f"converged before epoch {epoch}: {delta:.5f} of labels changed < tol {cfg.finetune_tol}"
                )
                break
            rec_key = "zinb" if self.model_cfg.reconstruction == "zinb" else "mse"
            sums = {rec_key: 0.0, "cluster": 0.0, "loss": 0.0}
            batches = self._batches()
            self.module.train()
            for targets in batches:
                z = self._encode_view(targets, 0, mask=cfg.finetune_masking)
                rec = self._reconstruction(z, targets)
                idx = torch.from_numpy(targets).to(self.device)
                kl = L.dec_kl(p[idx], L.soft_assign(z, mu, alpha))
                loss = rec + cfg.lambda_cluster * kl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sums[rec_key] += rec.item()
                sums["cluster"] += kl.item()
                sums["loss"] += loss.item()
            for key, v in sums.items():
                record[key] = v / len(batches)
            _check_finite(record, "fine-tuning", epoch)
            res.history.append(record)
            res.epochs = epoch
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"}, refresh=False)
            if callback:
                callback(epoch, record)
        bar.close()
        res.seconds = time.perf_counter() - t0
        log.info("fine-tuning: %d epochs, %s (%.1f s)", res.epochs, res.stop_reason, res.seconds)
        return res

    @torch.no_grad()
    def predict(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(embedding, labels, soft assignment or None if there are no DEC centres)."""
        z = self.embed()
        if self.module.cluster_centres is None:
            r = self._kmeans(z, self.k, self.cfg.kmeans_n_init)
            return z.cpu().numpy(), r.labels, None
        q = L.soft_assign(z, self.module.cluster_centres, self.model_cfg.alpha)
        return z.cpu().numpy(), q.argmax(1).cpu().numpy(), q.cpu().numpy()


def _check_finite(record: dict, stage: str, epoch: int) -> None:
    bad = [k for k, v in record.items() if not np.isfinite(v)]
    if bad:
        raise FloatingPointError(
            f"{stage} produced a non-finite loss ({', '.join(bad)}) at epoch {epoch}; "
            "try a smaller learning rate, or check the input counts"
        )
