"""Checks of the arguments that need neither the data nor torch, and the seed drawn for ``random_state=None``.

The command runs them before it imports anything heavy, so that with ``--processes P`` the launching
process refuses a bad argument at once, before it starts any process (and without importing torch,
which only the processes it starts need). ``scgpcl.tl.cluster`` and the model run the same checks.
"""

from __future__ import annotations

import logging
import numbers
import sys
from typing import Any

import numpy as np

from ._errors import InputError
from ._launch import env_world_size
from ._messages import arg

__all__ = ["check_keys", "check_n_runs", "resolve_seed"]

log = logging.getLogger("scgpcl")


def check_keys(key_added: str, label_key: str | None, batch_key: str | None = None) -> None:
    """Refuse a ``key_added`` that would overwrite the reference labels it is scored against, or the batches."""
    given = arg(f"key_added={key_added!r}", f"--key-added {key_added!r}")
    if not isinstance(key_added, str) or not key_added:
        raise InputError(f"{given} is not a key: give a non-empty string")
    if "/" in key_added:
        # h5ad/zarr keys are paths: obs['a/b'] and uns['a/b'] are written as nested groups that
        # anndata cannot read back
        raise InputError(
            f"{given} contains '/', which .h5ad files cannot store as a key "
            "(the file would not read back); choose a key without '/'"
        )
    if label_key is not None and key_added == label_key:
        raise InputError(
            f"{given} is also the label key: the clusters would overwrite the reference labels "
            f"they are scored against; choose another {arg('key_added', '--key-added')}"
        )
    if batch_key is not None and key_added == batch_key:
        raise InputError(
            f"{given} is also the batch key: the clusters would overwrite the batches they are compared "
            f"with; choose another {arg('key_added', '--key-added')}"
        )
    agreement = f"{key_added}_agreement"  # written with several runs, removed by every clustering under key_added
    for name, key, kind in (("label", label_key, "labels"), ("batch", batch_key, "batches")):
        if key == agreement:
            raise InputError(
                f"the {name} key {key!r} is the column where a clustering under {given} keeps its runs' "
                f"agreement, so the clustering would remove the {kind}: rename the column, or choose another "
                f"{arg('key_added', '--key-added')}"
            )


def _in_process_group() -> bool:
    """An initialised torch.distributed group of more than one process (none can exist before torch is imported)."""
    dist = sys.modules.get("torch.distributed")
    return bool(dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def check_n_runs(n_runs: Any, *, processes: int = 1) -> None:
    """Refuse a number of runs that is not a whole number >= 1, and several runs across processes.

    ``processes``: the command line's ``--processes``, checked before it launches them; under torchrun or
    an initialised process group the processes are found without it.
    """
    given = arg(f"n_runs={n_runs!r}", f"--runs {n_runs!r}")
    if isinstance(n_runs, bool) or not isinstance(n_runs, (int, np.integer)) or n_runs < 1:
        raise InputError(f"{given} is not a number of runs: give a whole number, 1 or more")
    if n_runs > 1 and (processes > 1 or env_world_size() > 1 or _in_process_group()):
        raise InputError(
            f"{given} with several processes is not supported: run one seed per command "
            f"({arg('random_state', '--random-state')}) and compare the runs, or train on one process"
        )


def resolve_seed(random_state: Any) -> int:
    """A whole number in [0, 2**32) (what every RNG here accepts); ``None`` draws one and logs it."""
    if random_state is None:
        seed = int(np.random.SeedSequence().entropy % 2**32)
        log.info("%s: drew the seed %d; pass %s%d to repeat this run", arg("random_state=None", "--random-state none"),
                 seed, arg("random_state=", "--random-state "), seed)
        return seed
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral) or not (
        0 <= random_state < 2**32
    ):
        raise InputError(
            f"{arg('random_state=', '--random-state ')}{random_state!r} is not a seed: give a whole number from 0 to "
            f"2**32 - 1, or {arg('None', 'none')} to draw one"
        )
    return int(random_state)
