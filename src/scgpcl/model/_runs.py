"""Several runs at consecutive seeds, and the one kept: the medoid of their clusterings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from .._errors import InputError
from .._messages import arg
from ..metrics import cell_agreement, medoid_run
from ._scgpcl import SCGPCL

__all__ = ["check_n_runs", "train_runs"]

log = logging.getLogger("scgpcl")


def check_n_runs(n_runs: Any, *, processes: int = 1) -> None:
    """Refuse a number of runs that is not a whole number >= 1, and several runs across processes.

    ``processes``: the command line's ``--processes``, checked before it launches them; under torchrun or
    an initialised process group the processes are found without it.
    """
    from .. import distributed
    from .._launch import env_world_size

    given = arg(f"n_runs={n_runs!r}", f"--runs {n_runs!r}")
    if isinstance(n_runs, bool) or not isinstance(n_runs, (int, np.integer)) or n_runs < 1:
        raise InputError(f"{given} is not a number of runs: give a whole number, 1 or more")
    if n_runs > 1 and (processes > 1 or distributed.is_distributed() or env_world_size() > 1):
        raise InputError(
            f"{given} with several processes is not supported: run one seed per command "
            f"({arg('random_state', '--random-state')}) and compare the runs, or train on one process"
        )


def train_runs(make: Callable[[int | None], SCGPCL], random_state: int | None, n_runs: int, *,
               progress: bool = True) -> tuple[SCGPCL, dict | None]:
    """Train ``n_runs`` models at consecutive seeds and return the medoid's, with the runs' record.

    Parameters
    ----------
    make
        Builds an untrained model for a seed (checks the input; raises :class:`InputError`).
    random_state
        The first run's seed (``None``: drawn, then the next seeds follow it).
    n_runs
        How many runs (:func:`check_n_runs`, before anything is built); 1 trains one model and returns
        ``None`` as the record.
    progress
        Show progress bars.

    Returns
    -------
    model, runs
        The medoid run's trained model and, with several runs, ``seeds``, ``chosen_seed``, ``ari``
        (pairwise, runs x runs), ``mean_ari`` (over pairs) and ``agreement`` (per cell of the AnnData,
        NaN for cells not clustered).
    """
    check_n_runs(n_runs)
    first = make(random_state)
    if n_runs == 1:
        first.train(progress=progress)
        return first, None
    seeds = [(first.random_state + i) % 2**32 for i in range(n_runs)]
    models = []
    for i, seed in enumerate(seeds):
        log.info("run %d of %d (seed %d)", i + 1, n_runs, seed)
        model = first if i == 0 else make(seed)
        model.train(progress=progress)
        models.append(model)
    labels = [m.predict() for m in models]
    kept = labels[0] >= 0  # the same cells in every run (the same preprocessing)
    chosen, ari = medoid_run([lab[kept] for lab in labels])
    agreement = np.full(len(kept), np.nan)
    agreement[kept] = cell_agreement(labels[chosen][kept], [lab[kept] for j, lab in enumerate(labels) if j != chosen])
    mean_ari = float(ari[np.triu_indices(n_runs, 1)].mean())
    log.info("%d runs: mean ARI between them %.3f; kept seed %d, the run that agrees best with the others",
             n_runs, mean_ari, seeds[chosen])
    if mean_ari < 0.8:
        log.warning("the %d runs disagree (mean ARI between them %.2f): the clusters depend on the seed; "
                    "the per-cell agreement shows which cells move", n_runs, mean_ari)
    return models[chosen], {"seeds": seeds, "chosen_seed": seeds[chosen], "ari": ari, "mean_ari": mean_ari,
                            "agreement": agreement}
