"""Data-parallel training: the trainer of one process among several (docs/distributed.md).

:func:`make_trainer` gives a :class:`~scgpcl.train.Trainer` with one process
and a :class:`DistributedTrainer` in a process group of several. The stages
(:mod:`._pretrain`, :mod:`._finetune`) are the same code either way; what
differs is behind the trainer's parts:

- optimizer steps (:class:`DataParallelStep`): each rank computes the loss of
  its part of the global minibatch through ``DistributedDataParallel``, which
  averages the gradients. Each rank's loss is scaled by its share of the
  global minibatch, so the averaged gradient is that of the global
  minibatch's mean loss; the instance-wise loss contrasts a rank's cells with
  the cells of every rank (:meth:`~scgpcl.distributed.Communicator.gather_with_grad`),
  and BatchNorm's statistics cover the global minibatch
  (:class:`~scgpcl.module._sync_batchnorm.SyncBatchNorm1d`) unless
  ``sync_batchnorm=False``. With the same views, a step is the step of one
  process on the whole minibatch (tests/test_distributed.py).
- representations (:class:`ShardedEmbedder`): each rank embeds its share of
  the cells; the genes' states, averages over all cells, come from an
  all-reduce of the per-gene sums and degrees; the cells' rows are gathered
  where the stage needs all of them.
- k-means (:class:`DistributedKMeans`): Lloyd's iterations over the ranks'
  rows (:func:`~scgpcl.train._distributed_kmeans.lloyd_kmeans`).
- the joined DEC start (``kmeans_pca_weight``,
  :meth:`DistributedTrainer.sample_feature_pcs`): the features' covariance
  summed over each rank's share of the sample and all-reduced, rank 0's
  principal axes broadcast, the scores gathered.
- fine-tuning's global step (:class:`DistributedFinetuneStage`): Q of each
  rank's share (in the joined space with ``dec_pca_target``), the cluster
  frequencies all-reduced, the target P gathered.
- one-off work on rank 0 (the estimate of K), its result broadcast; stopping
  decisions taken on rank 0 and broadcast (:meth:`DistributedTrainer.agree`),
  so every rank stops at the same step.
"""

from __future__ import annotations

import functools
import inspect
import logging

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from .. import distributed
from .._config import multi_process_problem
from .._errors import InputError
from ..data import SubgraphLoader
from ..module import LossContext, SCGPCLModule, soft_assign
from ..module._sync_batchnorm import convert_sync_batchnorm
from ._distributed_kmeans import lloyd_kmeans
from ._finetune import FinetuneStage, missing_target
from ._global import Embedder, SeededKMeans, dec_target
from ._joined import FeaturePCA
from ._kmeans import KMeansResult
from ._schedule import Progress
from ._trainer import Trainer

__all__ = ["DataParallelStep", "DistributedFinetuneStage", "DistributedKMeans", "DistributedTrainer",
           "ShardedEmbedder", "make_trainer"]

log = logging.getLogger("scgpcl")


def make_trainer(module: SCGPCLModule, loader: SubgraphLoader, **kwargs) -> Trainer:
    """A :class:`~scgpcl.train.Trainer`, or a :class:`DistributedTrainer` when this process is one of several.

    The latter joins the process group: every process must get here.
    """
    if not distributed.is_distributed():
        return Trainer(module, loader, **kwargs)
    return DistributedTrainer(module, loader, comm=distributed.init(device=loader.device), **kwargs)


#: BatchNorm buffers are not broadcast from rank 0 before every forward pass: synchronised BatchNorm keeps
#: them equal, and per-rank BatchNorm averages them after every round (:meth:`DataParallelStep.average_buffers`)
_NO_BUFFER_BROADCAST = ({"forward_sync_buffers": False}
                        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                        else {"broadcast_buffers": False})


class _Objective(nn.Module):
    """What ``DistributedDataParallel`` wraps: the module's loss as a forward pass."""

    def __init__(self, module: SCGPCLModule):
        super().__init__()
        self.module = module

    def forward(self, batch, context: LossContext, weights: dict[str, float], scale: float):
        out = self.module.loss(batch, context, weights)
        # every parameter takes part in the loss, with weight 0 where the stage does not use it (the DEC
        # centres before fine-tuning, the gene embedding of the MLP encoder, terms weighted 0): DDP then
        # expects a gradient for each of them at every step, without searching the graph for unused ones
        touch = sum(p.reshape(-1)[:1].sum() for p in self.module.parameters())
        return out.total * scale + 0.0 * touch, out.terms


class DataParallelStep:
    """Optimizer steps of one rank: its part of each global minibatch, gradients averaged by DDP.

    Parameters
    ----------
    module
        The network (the same parameters on every rank; DDP broadcasts rank 0's when it wraps them).
    comm
        The :class:`~scgpcl.distributed.Communicator`.
    """

    def __init__(self, module: SCGPCLModule, comm):
        self.module, self.comm = module, comm
        self._ddp: DistributedDataParallel | None = None
        self._params: list[int] = []

    def wrapped(self) -> DistributedDataParallel:
        """The module under DDP, wrapped again when its parameters changed (fine-tuning adds the DEC centres)."""
        params = [id(p) for p in self.module.parameters()]
        if self._ddp is None or params != self._params:
            dev = next(self.module.parameters()).device
            with self.comm.guard("setting up DistributedDataParallel"):
                self._ddp = DistributedDataParallel(
                    _Objective(self.module), device_ids=[dev] if dev.type == "cuda" else None,
                    process_group=self.comm.group, **_NO_BUFFER_BROADCAST)
            self._params = params
        return self._ddp

    def run_round(self, module: SCGPCLModule, loader: SubgraphLoader, plan: list[torch.Tensor], optimizer,
                  context: LossContext, weights: dict[str, float], progress: Progress, *, n_views: int = 2,
                  mask: bool = True) -> dict[str, float]:
        """:func:`~scgpcl.train._loop.run_round` of one rank; returns the global minibatches' mean terms."""
        comm = self.comm
        ddp = self.wrapped()
        sums: dict[str, torch.Tensor] = {}
        module.train()
        with comm.guard("a data-parallel training step"):
            for batch in loader.batches(plan, n_views=n_views, mask=mask):
                sizes = comm.gather_counts(len(batch.targets), "the minibatch sizes")
                share = len(batch.targets) / sum(sizes)
                context.gather = functools.partial(comm.gather_with_grad, cells=sizes)
                # each rank's mean loss weighted by its share of the global minibatch: DDP's average of the
                # gradients is then the gradient of the global minibatch's mean loss
                total, terms = ddp(batch, context, weights, share * comm.world_size)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                for key, value in [*terms.items(), ("loss", total / (share * comm.world_size))]:
                    v = value.detach() * share
                    sums[key] = sums[key] + v if key in sums else v
                progress.step()
        keys = list(sums)
        means = comm.all_reduce(torch.stack([sums[k].float() for k in keys]), "the round's losses") / len(plan)
        if not comm.sync_batchnorm:
            self.average_buffers()
        return {k: float(v) for k, v in zip(keys, means, strict=True)}

    def average_buffers(self) -> None:
        """Per-rank BatchNorm: the running statistics averaged over the ranks, so that every rank embeds alike."""
        bufs = [b for b in self.module.buffers() if b.dtype.is_floating_point]
        if not bufs:
            return
        flat = self.comm.all_reduce(torch.cat([b.reshape(-1) for b in bufs]), "the BatchNorm statistics")
        flat = flat / self.comm.world_size
        start = 0
        for b in bufs:
            b.copy_(flat[start : start + b.numel()].reshape(b.shape))
            start += b.numel()


class ShardedEmbedder(Embedder):
    """:class:`~scgpcl.train._global.Embedder` with each rank embedding its share of the cells.

    Adopts an existing embedder (its sample, chunk size and module), so the
    sample is the one one process would draw.
    """

    def __init__(self, base: Embedder, comm):
        self.__dict__.update(base.__dict__)
        self.comm = comm

    def _reduce(self, sums: torch.Tensor, degrees: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = self.comm.all_reduce(torch.cat([sums, degrees], dim=1), "the genes' states (their cells' messages)")
        return both[:, :-1], both[:, -1:]

    def _embed_share(self, cells: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        ids = torch.arange(self.loader.n_cells, device=self.loader.device) if cells is None else cells
        mine = ids[self.comm.shard(len(ids))]
        chunks = lambda: self.loader.chunks(mine, self.chunk)
        context = self.module.gene_context(chunks, reduce=self._reduce)
        return self.module.embed_cells(chunks(), context), context

    def of_sample_share(self) -> torch.Tensor:
        """The rows of the sample's representation that are this rank's (``Communicator.shard`` of the sample)."""
        z, self._context = self._embed_share(self.sample)
        return z

    def of_sample(self) -> torch.Tensor:
        """The sample's representation, every row on every rank."""
        return self.comm.all_gather_rows(self.of_sample_share(), "the gather of the sample's representation")

    def of_all(self, progress: bool = False) -> torch.Tensor:
        """Every cell's full-graph representation, every row on every rank, in the cells' order.

        ``progress`` is not used: each rank embeds only its share, so there is no bar.
        """
        z, _ = self._embed_share(None)
        return self.comm.all_gather_rows(z, "the gather of every cell's representation")


class DistributedKMeans(SeededKMeans):
    """:class:`~scgpcl.train._global.SeededKMeans` over the ranks: each clusters its share of the rows.

    Called with the rows every rank holds (the gathered representation), it
    runs :func:`~scgpcl.train._distributed_kmeans.lloyd_kmeans` on this rank's
    share and gathers the labels. Per-minibatch prototypes (``prototypes="batch"``)
    stay local: each rank clusters its own minibatch.
    """

    def __init__(self, base: SeededKMeans, comm):
        super().__init__(base.seed, base.calls)
        self.comm = comm

    def __call__(self, z, k: int, n_init: int, init=None, select: str = "inertia") -> KMeansResult:
        """Best of ``n_init`` k-means++ starts (plus a warm start from ``init``), labels of every row.

        Only ``select="inertia"`` (:class:`DistributedTrainer` refuses the other choice before training).
        """
        if select != "inertia":
            raise ValueError(f"k-means over several processes selects by inertia only, not {select!r}")
        self.calls += 1
        z = torch.as_tensor(z)
        r = lloyd_kmeans(z[self.comm.shard(len(z))], k, n_init=n_init, seed=(self.seed * 100003 + self.calls) % 2**31,
                         init=init, comm=self.comm)
        labels = self.comm.all_gather_rows(torch.from_numpy(r.labels), "the gather of the k-means labels").numpy()
        return KMeansResult(labels=labels, centres=r.centres, inertia=r.inertia)

    def batch(self, n_init: int):
        """``(z, k) -> (centres, labels)`` on this rank's minibatch alone."""
        def run(z: torch.Tensor, k: int):
            r = SeededKMeans.__call__(self, z, k, n_init)
            return torch.from_numpy(r.centres).to(z.device), torch.from_numpy(r.labels).to(z.device)

        return run


class DistributedFinetuneStage(FinetuneStage):
    """Fine-tuning whose global step is sharded.

    Q of each rank's share of the sample (in the joined space with ``dec_pca_target``), the cluster
    frequencies all-reduced, the DEC target and the labels gathered.
    """

    def _context(self, plan: list[torch.Tensor]) -> tuple[LossContext, np.ndarray]:
        tr = self.tr
        comm = tr.comm
        mu, alpha = tr.module.cluster_centres, tr.model_cfg.alpha
        joined = tr.joined_target  # dec_pca_target: the target from the joined space, labels from z
        with torch.no_grad():
            z = tr.embedder.of_sample_share()
            q_z = soft_assign(z, mu, alpha)
            q = q_z if joined is None else joined.soft_assign(z, joined.sample[comm.shard(len(joined.sample))], mu,
                                                              alpha)
            freq = comm.all_reduce(q.sum(dim=0, keepdim=True), "the DEC cluster frequencies")
            target = tr.embedder.spread(comm.all_gather_rows(dec_target(q, freq), "the gather of the DEC target"), 0.0)
            labels = comm.all_gather_rows(q_z.argmax(1), "the gather of the labels")
            missing = tr.embedder.missing(torch.cat(plan))
            if len(missing):
                target[missing] = missing_target(tr, missing, freq)
        ctx = LossContext("finetune", tau=tr.model_cfg.tau, alpha=alpha, target=target)
        return ctx, labels.cpu().numpy()


class DistributedTrainer(Trainer):
    """The :class:`~scgpcl.train.Trainer` of one process in data-parallel training (module docstring).

    Parameters
    ----------
    module, loader
        As :class:`~scgpcl.train.Trainer`; the loader a :class:`~scgpcl.data._sharded.ShardedLoader`.
    comm
        The :class:`~scgpcl.distributed.Communicator` of the process group.
    **kwargs
        As :class:`~scgpcl.train.Trainer`. The progress bar shows on rank 0 only.
    """

    finetune_stage = DistributedFinetuneStage

    def __init__(self, module: SCGPCLModule, loader: SubgraphLoader, *, comm, **kwargs):
        self.comm = comm
        if comm.sync_batchnorm:
            convert_sync_batchnorm(module, comm)
        super().__init__(module, loader, **kwargs)
        problem = multi_process_problem(self.cfg)  # the command refuses it earlier; this is the Python API's check
        if problem:
            raise InputError(problem)
        self._check_same_data()
        self.embedder = ShardedEmbedder(self.embedder, comm)
        self.kmeans = DistributedKMeans(self.kmeans, comm)
        self.step = DataParallelStep(module, comm)
        self._broadcast_state()

    @property
    def progress(self) -> bool:
        """Show progress bars (rank 0 only)."""
        return self._progress

    @progress.setter
    def progress(self, value: bool) -> None:
        self._progress = bool(value) and self.comm.is_main

    def _check_same_data(self) -> None:
        """Every rank prepared the same data (cells, genes, cell scaling), or every rank raises InputError.

        The ranks prepare their data each on its own: different input files, or a ``choose_target_sum``
        that picked differently, would otherwise train one model on different features (or hang in the
        broadcast of weights whose shapes differ).
        """
        ld = self.loader
        mine = torch.tensor([[float(ld.n_cells), float(ld.mean.numel()), float(ld.mean.double().sum()),
                              float(ld.std.double().sum()), float(ld.size_factors.double().sum())]],
                            dtype=torch.float64)
        every = self.comm.all_gather_rows(mine, "the check that every process has the same data").cpu()
        same = torch.isclose(every, every[:1], rtol=1e-6, atol=0.0).all(dim=1)
        if not bool(same.all()):
            rows = "; ".join(f"process {r}: {int(v[0])} cells x {int(v[1])} genes, feature mean sum {v[2]:.6g}"
                             for r, v in enumerate(every.tolist()))
            raise InputError(
                "the processes prepared different data, so they cannot train one model: give every process the "
                "same input and options (with choose_target_sum, pass the chosen --target-sum instead) [" + rows + "]"
            )

    def _broadcast_state(self) -> None:
        """Rank 0's weights and buffers on every rank (they start equal anyway: the same seed)."""
        state = [t for t in [*self.module.parameters(), *self.module.buffers()]]
        if not state:
            return
        with torch.no_grad():
            for t in state:
                t.copy_(self.comm.broadcast(t.detach(), "the broadcast of the initial weights"))

    def sample_feature_pcs(self) -> tuple[FeaturePCA, np.ndarray]:
        """The sample's feature PCs (``kmeans_pca_weight``), each rank summing and scoring its share of the sample.

        The covariance's sums are all-reduced; rank 0's principal axes are broadcast (so every rank projects
        on the same axes, signs included) and the scores gathered: every rank holds every row.
        """
        comm = self.comm
        sample = self.embedder.sample
        ids = torch.arange(self.loader.n_cells, device=self.loader.device) if sample is None else sample
        mine = ids[comm.shard(len(ids))]

        def reduce(total, gram, n):
            flat = torch.cat([gram.reshape(-1), total, torch.tensor([float(n)], dtype=torch.float64)])
            flat = comm.all_reduce(flat, "the all-reduce of the features' covariance")
            g = len(total)
            return flat[g * g : g * g + g], flat[: g * g].reshape(g, g), int(round(float(flat[-1])))  # a count

        pca = FeaturePCA(self.loader, mine, chunk=self.sampler_cfg.chunk_cells, reduce=reduce)
        pca.basis = comm.broadcast(pca.basis, "the broadcast of the features' principal axes")
        scores = comm.all_gather_rows(torch.from_numpy(pca.transform(mine)), "the gather of the features' PCs")
        return pca, scores.numpy()

    def estimate_k(self, z: torch.Tensor) -> int:
        """K estimated once, on rank 0, and broadcast."""
        if self.k is None:
            self.result.auto_k = self.comm.run_on_main(lambda: _estimate(self, z), "the estimate of K")
            self.k = self.result.auto_k.k
        return self.k

    def run_round(self, *args, **kwargs) -> dict[str, float]:
        """One round of data-parallel optimizer steps (:class:`DataParallelStep`)."""
        return self.step.run_round(*args, **kwargs)

    def agree(self, decision: bool) -> bool:
        """Rank 0's decision, on every rank."""
        return self.comm.agree(decision)


def _estimate(trainer: DistributedTrainer, z: torch.Tensor):
    Trainer.estimate_k(trainer, z)
    return trainer.result.auto_k
