"""The objective: named loss terms of a minibatch (docs/method.md section 5).

A loss term is a function of a :class:`Forward` (the encoded and decoded
views of one minibatch, computed once and shared by the terms) and of the
:class:`LossContext` the training loop hands in (the stage, the prototypes,
the DEC target). :func:`batch_loss` evaluates every registered term of the
stage whose weight is not zero and returns them by name in a
:class:`LossOutput`; the training loop sums, logs and plots whatever comes
back. Adding a term is one function and one weight::

    from scgpcl.module import register_loss_term

    def spread(fwd, ctx):
        return fwd.z(0).var(dim=0).mean().neg()

    register_loss_term("spread", spread, stages=("pretrain",))
    scgpcl.tl.cluster(adata, n_clusters=8, loss_weights={"spread": 0.1})

Built-in terms: the reconstruction (``"zinb"`` or ``"mse"``, whichever the
model uses, weight 1; the mean over the views), ``"ins"`` (instance-wise InfoNCE, ``lambda_ins``),
``"proto"`` (prototypical, ``lambda_proto``; only once prototypes exist,
after the warm-up) and ``"cluster"`` (DEC's KL divergence, ``lambda_cluster``,
in fine-tuning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import _losses as L

__all__ = [
    "LOSS_TERMS", "RECONSTRUCTIONS", "Forward", "LossContext", "LossOutput", "LossTerm", "Prototypes",
    "Reconstruction", "batch_loss", "register_loss_term",
]


@dataclass
class Reconstruction:
    """A reconstruction loss: the decoder heads it needs and its value on a batch."""

    heads: int
    #: ``(decoded, batch) -> scalar``, ``decoded`` the decoder's ``(mean, theta, pi_logits)``
    loss: Callable


def _zinb(decoded, batch) -> torch.Tensor:
    mean, theta, pi_logits = decoded
    c = batch.counts
    return L.zinb_nll_sparse(c.index, c.values, c.lgamma, mean, theta, pi_logits, c.size_factors)


def _mse(decoded, batch) -> torch.Tensor:
    return L.mse_loss(batch.dense_features, decoded[0])


#: ``reconstruction`` option -> :class:`Reconstruction`.
RECONSTRUCTIONS: dict[str, Reconstruction] = {"zinb": Reconstruction(3, _zinb), "mse": Reconstruction(1, _mse)}


@dataclass
class Prototypes:
    """Cluster centres at each granularity and the assignment of every cell the loop may need."""

    centres: list[torch.Tensor]
    #: per granularity, the prototype of each cell (indexed by global cell id; -1: not assigned)
    labels: list[torch.Tensor]
    #: k-means on each minibatch's second view instead (``prototypes="batch"``): the granularities
    batch_sizes: list[int] | None = None
    #: ``(z, k) -> (centres, labels)`` for ``batch_sizes``
    batch_kmeans: Callable | None = None


@dataclass
class LossContext:
    """What the training loop knows beyond the batch."""

    stage: str  # "pretrain" or "finetune"
    tau: float = 0.25
    alpha: float = 1.0
    prototypes: Prototypes | None = None
    #: DEC target distribution P, rows indexed by global cell id (fine-tuning)
    target: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)
    #: data-parallel training: ``rows -> (every process's rows, offset of this one's)``, differentiable
    #: (:meth:`scgpcl.distributed.Communicator.gather_with_grad`), for terms that compare a cell with the
    #: whole global minibatch; None with one process
    gather: Callable | None = None


class Forward:
    """The views of one minibatch encoded (and decoded) on first use, shared by the loss terms."""

    def __init__(self, module, batch, context: LossContext):
        self.module, self.batch, self.context = module, batch, context
        self._z: dict[int, torch.Tensor] = {}
        self._decoded: dict[int, tuple] = {}

    @property
    def n_views(self) -> int:
        """Number of views of the batch."""
        return len(self.batch.views)

    def z(self, view: int) -> torch.Tensor:
        """Representations of the batch's cells in view ``view``."""
        if view not in self._z:
            self._z[view] = self.module.encode(self.batch.views[view])
        return self._z[view]

    def decoded(self, view: int) -> tuple:
        """The decoder's outputs for view ``view``."""
        if view not in self._decoded:
            self._decoded[view] = self.module.decode(self.z(view))
        return self._decoded[view]


@dataclass
class LossTerm:
    """A registered loss term."""

    name: str
    fn: Callable[[Forward, LossContext], torch.Tensor | None]
    stages: tuple[str, ...]
    #: the :class:`~scgpcl.TrainConfig` field holding its weight, or None (``loss_weights`` / ``default_weight``)
    weight_option: str | None = None
    default_weight: float = 1.0


#: name -> :class:`LossTerm`, in evaluation order.
LOSS_TERMS: dict[str, LossTerm] = {}


def register_loss_term(name: str, fn: Callable[[Forward, LossContext], torch.Tensor | None], *,
                       stages: tuple[str, ...] = ("pretrain",), weight_option: str | None = None,
                       default_weight: float = 1.0) -> LossTerm:
    """Add a loss term to the objective.

    Parameters
    ----------
    name
        Its name in the training history (``uns['scgpcl']['history']``) and in ``loss_weights``.
    fn
        ``fn(forward, context) -> scalar tensor`` (or None to skip it for this batch).
    stages
        ``"pretrain"`` and/or ``"finetune"``.
    weight_option
        A :class:`~scgpcl.TrainConfig` field holding its weight; otherwise the
        weight is ``loss_weights[name]`` or ``default_weight``.
    default_weight
        Weight when neither gives one.

    Returns
    -------
    LossTerm
        The registered term (registering a name again replaces it).
    """
    bad = set(stages) - {"pretrain", "finetune"}
    if bad:
        raise ValueError(f"unknown stage(s) {sorted(bad)}; use 'pretrain' and/or 'finetune'")
    term = LossTerm(name, fn, tuple(stages), weight_option, float(default_weight))
    LOSS_TERMS[name] = term
    return term


@dataclass
class LossOutput:
    """Named (unweighted) loss terms of one batch and the weights they are summed with."""

    terms: dict[str, torch.Tensor]
    weights: dict[str, float]

    @property
    def total(self) -> torch.Tensor:
        """The weighted sum: what the optimiser minimises."""
        if not self.terms:  # every term weighted 0 or returning None: there is nothing to step on
            raise RuntimeError("no loss term applies to this minibatch (each is weighted 0 or returned None); "
                               "give a term that applies to this stage a weight above 0")
        return sum(self.weights[k] * v for k, v in self.terms.items())


def batch_loss(module, batch, context: LossContext, weights: dict[str, float]) -> LossOutput:
    """Every registered term of ``context.stage`` with a non-zero weight in ``weights``.

    Parameters
    ----------
    module
        The :class:`~scgpcl.module.SCGPCLModule` that encodes and decodes the views.
    batch
        A training minibatch with its augmented views (:class:`~scgpcl.data.Batch`).
    context
        The stage and what it adds (prototypes, DEC target).
    weights
        Weight of each term by name; terms missing or weighted 0 are not evaluated.

    Returns
    -------
    LossOutput
        The unweighted value of each evaluated term (a term may return None and
        is then left out) and its weight.
    """
    fwd = Forward(module, batch, context)
    terms: dict[str, torch.Tensor] = {}
    for name, term in LOSS_TERMS.items():
        if context.stage not in term.stages or not weights.get(name, 0.0):
            continue
        value = term.fn(fwd, context)
        if value is not None:
            terms[name] = value
    return LossOutput(terms, {k: weights[k] for k in terms})


# ------------------------------------------------------------------ built-in terms
def _reconstruction(name: str) -> Callable[[Forward, LossContext], torch.Tensor | None]:
    def term(fwd: Forward, ctx: LossContext) -> torch.Tensor | None:
        if fwd.module.reconstruction != name:
            return None
        rec = RECONSTRUCTIONS[name]
        return sum(rec.loss(fwd.decoded(v), fwd.batch) for v in range(fwd.n_views)) / fwd.n_views

    term.__doc__ = f"The {name} reconstruction loss, averaged over the views (applies when reconstruction={name!r})."
    return term


def _instance(fwd: Forward, ctx: LossContext) -> torch.Tensor | None:
    if fwd.n_views < 2:
        return None
    return L.info_nce(fwd.z(0), fwd.z(1), ctx.tau, gather=ctx.gather)


def _prototypical(fwd: Forward, ctx: LossContext) -> torch.Tensor | None:
    p = ctx.prototypes
    if p is None:
        return None
    if p.batch_sizes is not None:  # the reference code's per-minibatch k-means on the second view
        centres, labels = [], []
        for k in p.batch_sizes:
            c, lab = p.batch_kmeans(fwd.z(1).detach(), min(k, len(fwd.batch.targets)))
            centres.append(c)
            labels.append(lab)
        return L.proto_nce(fwd.z(0), centres, labels, ctx.tau)
    return L.proto_nce(fwd.z(0), p.centres, [lab[fwd.batch.targets] for lab in p.labels], ctx.tau)


def _cluster(fwd: Forward, ctx: LossContext) -> torch.Tensor:
    q = L.soft_assign(fwd.z(0), fwd.module.cluster_centres, ctx.alpha)
    return L.dec_kl(ctx.target[fwd.batch.targets], q)


for _name in RECONSTRUCTIONS:
    register_loss_term(_name, _reconstruction(_name), stages=("pretrain", "finetune"))
register_loss_term("ins", _instance, stages=("pretrain",), weight_option="lambda_ins")
register_loss_term("proto", _prototypical, stages=("pretrain",), weight_option="lambda_proto")
register_loss_term("cluster", _cluster, stages=("finetune",), weight_option="lambda_cluster")
