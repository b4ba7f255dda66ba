"""The inner loop: one round of optimizer steps on whatever loss terms the module returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .._config import TrainConfig
from ..data import SubgraphLoader
from ..module import LOSS_TERMS, RECONSTRUCTIONS, LossContext, SCGPCLModule
from ._schedule import Progress

__all__ = ["StageResult", "check_finite", "check_stage_terms", "loss_weights", "run_round"]


@dataclass
class StageResult:
    """What one training stage did."""

    #: rounds run (a round is ``round_steps`` optimizer steps, at most one epoch, at least ``min_round_steps``)
    rounds: int = 0
    #: optimizer steps run
    steps: int = 0
    #: why the stage stopped, in words (logged, printed, shown in reports)
    stop_reason: str = ""
    #: the same as a fixed keyword, for code: ``"max_rounds"``, ``"converged"``
    #: (the ARI or label-change criterion), ``"patience"`` (``convergence_patience``) or ``"emptied"``
    #: (fine-tuning stopped before a round that emptied a cluster, ``finetune_keep_clusters``)
    stop_kind: str = "max_rounds"
    seconds: float = 0.0
    #: one record per round: ``round``, ``steps`` (cumulative), each loss term's mean, ``loss``, checks
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain types, for ``uns`` and saved models."""
        return {"rounds": self.rounds, "steps": self.steps, "stop_reason": self.stop_reason,
                "stop_kind": self.stop_kind, "seconds": self.seconds, "history": self.history}


def loss_weights(cfg: TrainConfig, n_cells: int | None = None) -> dict[str, float]:
    """The weight of every registered loss term under ``cfg``.

    Parameters
    ----------
    cfg
        The training configuration (its ``lambda_*`` options and ``loss_weights``).
    n_cells
        The cells being trained on: under ``cfg.lambda_ins_cells`` the instance-wise loss weighs
        ``lambda_ins * (n_cells / lambda_ins_cells) ** lambda_ins_power``. ``None``: never scaled.

    Returns
    -------
    dict
        Loss term name -> weight.
    """
    unknown = sorted(set(cfg.loss_weights) - set(LOSS_TERMS))
    if unknown:
        raise ValueError(f"loss_weights names unknown loss term(s) {unknown}; registered: {sorted(LOSS_TERMS)}")
    own = {name: LOSS_TERMS[name].weight_option for name in sorted(cfg.loss_weights)
           if LOSS_TERMS[name].weight_option is not None}
    if own:  # it would be ignored: the term's weight is its own option
        raise ValueError("loss_weights cannot weigh " + ", ".join(f"{n!r} (set {o}= instead)" for n, o in own.items())
                         + ": their weights are options of their own")
    out = {}
    for name, term in LOSS_TERMS.items():
        if term.weight_option is not None:
            out[name] = float(getattr(cfg, term.weight_option))
        else:
            out[name] = float(cfg.loss_weights.get(name, term.default_weight))
    if "ins" in out and n_cells is not None and n_cells < cfg.lambda_ins_cells:
        out["ins"] *= (n_cells / cfg.lambda_ins_cells) ** cfg.lambda_ins_power
    return out


def check_stage_terms(cfg: TrainConfig, reconstruction: str) -> None:
    """Raise ``ValueError`` when a training stage that runs would have no loss term to minimise.

    The prototypical loss does not count for pre-training: it starts after the warm-up rounds, so the
    first rounds would have nothing to train on. A term registered by the user counts whenever its
    weight is not zero.

    Parameters
    ----------
    cfg
        The training configuration (its ``lambda_*`` options, ``loss_weights`` and ``finetune_rounds``).
    reconstruction
        The model's reconstruction loss (``ModelConfig.reconstruction``): the other one's weight does not count.
    """
    weights = loss_weights(cfg)

    def zero(name: str) -> str:
        term = LOSS_TERMS[name]
        return f"{term.weight_option}=0" if term.weight_option else f"loss_weights[{name!r}]=0"

    for stage, runs, skip, off in (
        ("pre-training", "pretrain", {"proto"}, ""),
        ("fine-tuning", "finetune", set(), ", or finetune=False to skip fine-tuning"),
    ):
        if runs == "finetune" and (not cfg.finetune or cfg.finetune_rounds == 0):
            continue
        names = [n for n, t in LOSS_TERMS.items()
                 if runs in t.stages and n not in skip and (n not in RECONSTRUCTIONS or n == reconstruction)]
        if not any(weights[n] for n in names):
            first_round = " in its first rounds (the prototypical loss starts after the warm-up)" if skip else ""
            raise ValueError(
                f"{stage} would have no loss to minimise{first_round}: " + ", ".join(zero(n) for n in names)
                + f"; give one of them a weight above 0{off}")


def run_round(module: SCGPCLModule, loader: SubgraphLoader, plan: list[torch.Tensor], optimizer,
              context: LossContext, weights: dict[str, float], progress: Progress, *, n_views: int = 2,
              mask: bool = True) -> dict[str, float]:
    """One optimizer step per minibatch of ``plan``; returns each term's mean and the total's (``loss``)."""
    sums: dict[str, torch.Tensor] = {}
    module.train()
    for batch in loader.batches(plan, n_views=n_views, mask=mask):
        out = module.loss(batch, context, weights)
        total = out.total
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        for key, value in [*out.terms.items(), ("loss", total)]:
            v = value.detach()
            sums[key] = sums[key] + v if key in sums else v
        progress.step()
    return {k: float(v) / len(plan) for k, v in sums.items()}


def check_finite(record: dict, stage: str) -> None:
    """Stop with a clear error when a loss became NaN or infinite."""
    bad = [k for k, v in record.items() if not np.isfinite(v)]
    if bad:
        raise FloatingPointError(
            f"{stage} produced a non-finite loss ({', '.join(bad)}) in round {record.get('round')}; "
            "try a smaller learning rate, or check the input counts"
        )
