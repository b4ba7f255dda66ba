"""The loader of one process in data-parallel training (docs/distributed.md).

Every process holds the whole dataset and a :class:`ShardedLoader`. The
global minibatches are those one process would train on: the cell order
comes from the same stream on every rank (seeded by the run's seed alone), so
every rank plans the same global minibatches, and each rank trains on its
own contiguous part of each (near-equal parts, as ``numpy.array_split``).
An epoch therefore still visits every cell exactly once, across the ranks.

What a rank draws for its part -- the sampled subgraphs of the two views and
the feature masks -- comes from its own streams, derived from
``SeedSequence([seed, rank])``. The subgraph budgets of the cell hops are
divided among the ranks like the targets, so that the ranks' views together
hold as many context cells per target cell as one process's view; the gene
hop keeps its budget (each view needs its genes whatever its number of
cells).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .._errors import InputError
from ._loader import SubgraphLoader
from ._preprocess import PreparedData

__all__ = ["ShardedLoader", "make_loader"]


class ShardedLoader(SubgraphLoader):
    """A :class:`SubgraphLoader` for process ``rank`` of ``world_size``; with one process, the same loader.

    Parameters
    ----------
    data
        The prepared dataset (the same on every rank).
    rank, world_size
        This process and the number of processes.
    **kwargs
        As :class:`SubgraphLoader`; ``batch_size`` is the global minibatch.

    Raises
    ------
    InputError
        When the smallest global minibatch cannot give every rank two cells
        (BatchNorm needs two); the same on every rank, before any of them
        waits for the others.
    """

    def __init__(self, data: PreparedData, *, rank: int, world_size: int, **kwargs):
        self.rank, self.world_size = int(rank), int(world_size)
        super().__init__(data, **kwargs)
        smallest = self.n_cells // self.steps_per_epoch
        if self.world_size > 1 and smallest < 2 * self.world_size:
            raise InputError(
                f"a minibatch of {smallest} cells cannot be split over {self.world_size} processes with at least 2 "
                f"cells each: use a batch_size of at least {2 * self.world_size} (--batch-size), or fewer processes"
            )
        if self.world_size > 1:
            self.sampler.num_samples = tuple(
                b if hop % 2 == 0 else math.ceil(b / self.world_size) for hop, b in enumerate(self.sampler.num_samples)
            )

    def reseed(self, entropy: int | Sequence[int]) -> None:
        """Reseed: the cell order from ``entropy`` (the same on every rank).

        The views' and masks' streams come from ``[*entropy, rank]`` (this rank's own).
        """
        super().reseed(entropy)
        if getattr(self, "world_size", 1) > 1:
            order = self._rs.order
            super().reseed([*np.atleast_1d(np.asarray(entropy, dtype=np.uint64)).tolist(), self.rank])
            self._rs.order = order

    def plan(self, n_steps: int) -> list[torch.Tensor]:
        """The part of this rank in each of the next ``n_steps`` global minibatches."""
        plan = super().plan(n_steps)
        if self.world_size == 1:
            return plan
        out = []
        for targets in plan:
            size, extra = divmod(len(targets), self.world_size)
            start = self.rank * size + min(self.rank, extra)
            out.append(targets[start : start + size + (self.rank < extra)])
        return out


def make_loader(data: PreparedData, **kwargs) -> SubgraphLoader:
    """A :class:`SubgraphLoader`, or this process's :class:`ShardedLoader` when it is one of several.

    Whether it is one of several is read from the launcher's environment, before any process group exists.
    """
    from .. import distributed

    if not distributed.is_distributed():
        return SubgraphLoader(data, **kwargs)
    return ShardedLoader(data, rank=distributed.rank(), world_size=distributed.world_size(), **kwargs)
