"""Several runs at consecutive seeds, and the one kept: the medoid of their clusterings."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from .._early_checks import check_n_runs
from .._messages import kept_run, warn_user
from ..metrics import cell_agreement, medoid_run
from ._scgpcl import SCGPCL

__all__ = ["train_runs"]

log = logging.getLogger("scgpcl")


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
        (pairwise, runs x runs), ``mean_ari`` (over pairs), ``n_clusters`` (each run's K, which differ when
        K is estimated) and ``agreement`` (per cell of the AnnData, NaN for cells not clustered).
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
    labels = [m._predicted(warn=False) for m in models]  # empty or tiny clusters: of the kept run only, below
    kept = labels[0] >= 0  # the same cells in every run (the same preprocessing)
    chosen, ari = medoid_run([lab[kept] for lab in labels])
    models[chosen]._warn_cluster_sizes()
    agreement = np.full(len(kept), np.nan)
    agreement[kept] = cell_agreement(labels[chosen][kept], [lab[kept] for j, lab in enumerate(labels) if j != chosen])
    mean_ari = float(ari[np.triu_indices(n_runs, 1)].mean())
    log.info("%d runs: mean ARI between them %.3f; kept seed %d, %s", n_runs, mean_ari, seeds[chosen],
             kept_run(n_runs))
    if mean_ari < 0.8:
        warn_user(f"the {n_runs} runs disagree (mean ARI between them {mean_ari:.2f}): the clusters depend on "
                  "the seed; the per-cell agreement shows which cells move")
    ks = [int(m.n_clusters) for m in models]
    if len(set(ks)) > 1:  # K estimated per run
        warn_user(f"the {n_runs} runs estimated different numbers of clusters (K = {', '.join(map(str, ks))} at "
                  f"seeds {', '.join(map(str, seeds))}); the run kept has K={ks[chosen]}. The number of clusters "
                  "is uncertain: compare runs at those K, or give K if you know it")
    return models[chosen], {"seeds": seeds, "chosen_seed": seeds[chosen], "ari": ari, "mean_ari": mean_ari,
                            "agreement": agreement, "n_clusters": ks}
