"""BatchNorm whose training statistics cover every process's part of the global minibatch (docs/distributed.md).

``torch.nn.SyncBatchNorm`` runs on GPUs only; this one runs wherever the
process group does (gloo on the CPU, nccl on CUDA). In training mode, with a
communicator of more than one process, a :class:`SyncBatchNorm1d` normalises
with the mean and the (biased) variance of the rows of all processes, as one
process holding the whole minibatch would, and updates its running statistics
with them (unbiased variance, as ``BatchNorm1d``). The count, sum and sum of
squares (float64) go through one differentiable all-reduce per pass, so the
gradient is that of the whole-batch normalisation too, at the cost of one
small all-reduce forward and one backward per layer. In eval mode, or with one process, it is ``BatchNorm1d``.

The buffers and parameters are those of ``BatchNorm1d``: a model trained with
it saves and loads as any other.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["SyncBatchNorm1d", "convert_sync_batchnorm"]


class SyncBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` over the global minibatch of a data-parallel run (see the module docstring).

    Parameters
    ----------
    num_features, eps, momentum
        As ``BatchNorm1d`` (affine, with running statistics).
    comm
        The :class:`~scgpcl.distributed.Communicator` whose ranks share the statistics.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *, comm=None):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.comm = comm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        comm = self.comm
        if not self.training or comm is None or comm.world_size == 1 or self.momentum is None:
            return super().forward(x)
        # one all-reduce of (sum, sum of squares, count) per pass, in float64 so that E[x^2] - E[x]^2 keeps
        # the precision of a two-pass variance; its backward is one all-reduce too
        d = x.shape[1]
        x64 = x.double()
        stats = comm.sum_with_grad(torch.cat([x64.sum(0), x64.pow(2).sum(0), x64.new_tensor([x.shape[0]])]))
        n = stats[-1].detach()
        if float(n) < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got {int(n)} in all processes")
        mean64 = stats[:d] / n
        var64 = (stats[d : 2 * d] / n - mean64.pow(2)).clamp_min(0)
        mean, var = mean64.to(x.dtype), var64.to(x.dtype)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.mul_(1 - self.momentum).add_(mean.detach(), alpha=self.momentum)
            unbiased = (var64 * (n / (n - 1))).to(x.dtype)
            self.running_var.mul_(1 - self.momentum).add_(unbiased.detach(), alpha=self.momentum)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def convert_sync_batchnorm(module: nn.Module, comm) -> nn.Module:
    """Replace every ``BatchNorm1d`` in ``module`` by a :class:`SyncBatchNorm1d` with the same state (in place).

    Returns ``module``. Layers that already are :class:`SyncBatchNorm1d` get ``comm``.
    """
    for name, child in list(module.named_children()):
        if isinstance(child, SyncBatchNorm1d):
            child.comm = comm
        elif type(child) is nn.BatchNorm1d and child.affine and child.track_running_stats:
            sync = SyncBatchNorm1d(child.num_features, eps=child.eps, momentum=child.momentum, comm=comm)
            sync.load_state_dict(child.state_dict())
            sync.to(device=child.weight.device)
            sync.train(child.training)
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child, comm)
    return module
