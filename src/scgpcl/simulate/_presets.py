"""Named parameter sets: the scGPCL paper's simulated datasets and a small demo.

Every paper dataset is ``splatSimulate(group.prob = P, nGenes = 5000,
batchCells = N, dropout.type = "experiment", dropout.shape = -1,
dropout.mid = MID, de.facScale = SIGMA, method = "groups")`` with Splatter's
defaults otherwise (``SPLATTER_MODEL.md`` section 5):

* ``SimT3_1..5`` / ``SimT6_1..5`` (dropout sweep): 3000 cells, 3 / 6 equal
  groups, sigma 0.3, ``dropout.mid`` 0, 0.5, 1, 1.5, 2.
* ``Sig1..Sig4`` (signal sweep): 3000 cells, 3 equal groups, mid 0, sigma 0.1
  (what the authors' notebook ran), 1.5, 2.0, 2.5; ``Sig1b`` sigma 1.0 (the
  value the notebook's heading states).
* ``Imb1..Imb5`` (imbalance sweep): 1500 cells, 6 groups, mid 0, sigma 0.4,
  retention r = 0.1, 0.3, 0.5, 0.7, 0.9: ``w_i = r + i (1 - r) / 5``
  (i = 0..5), ``P = w / sum(w)``.
* ``demo``: 1200 cells x 1500 genes, 5 unequal groups; see :data:`DEMO_NOTE`.
"""

from __future__ import annotations

from typing import Any

import anndata

from scgpcl._errors import InputError

from ._names import PRESET_NAMES
from ._splat import SplatParams, simulate_splat

__all__ = ["PRESETS", "PRESET_DESCRIPTIONS", "imbalance_group_prob", "simulate"]


def imbalance_group_prob(retention: float, n_groups: int = 6) -> tuple[float, ...]:
    """Group probabilities of the paper's imbalance sweep.

    ``b = (1 - r) / (K - 1)``, ``w_i = r + i b`` for ``i = 0..K-1``,
    ``P = w / sum(w)``: the largest group is 1 / r times the smallest.

    Parameters
    ----------
    retention
        ``r`` in (0, 1]: the smallest group's weight relative to the largest's.
    n_groups
        ``K``, at least 2.

    Returns
    -------
    tuple of float
        The group probabilities, smallest first, summing to 1.
    """
    if not 0.0 < retention <= 1.0:
        raise InputError(f"retention must be in (0, 1], got {retention}")
    if n_groups < 2:
        raise InputError(f"n_groups must be >= 2, got {n_groups}")
    b = (1.0 - retention) / (n_groups - 1)
    w = [retention + i * b for i in range(n_groups)]
    total = sum(w)
    return tuple(x / total for x in w)


def _paper(n_cells: int, group_prob: tuple[float, ...], mid: float, sigma: float) -> SplatParams:
    return SplatParams(
        n_genes=5000, n_cells=n_cells, group_prob=group_prob, dropout_type="experiment",
        dropout_shape=-1.0, dropout_mid=mid, de_fac_scale=sigma,
    )


def _equal(k: int) -> tuple[float, ...]:
    return tuple([1.0 / k] * k)


#: Why the demo preset looks the way it does.
DEMO_NOTE = (
    "1200 cells x 1500 genes, 5 groups of unequal size (30/25/20/15/10 %), "
    "de.prob 0.1, sigma (de.facScale) 0.5, dropout.mid 1.5 (about 32 % of the "
    "non-zero true counts dropped, ~43 % zeros). The groups are clear, as a demo "
    "should be: scanpy's normalize_total, log1p, 20 PCs and k-means (k = 5) give "
    "ARI 1.00 / 1.00 / 1.00 / 1.00 / 1.00 (0.997 at worst) for seeds 0-4. "
    "Generates in ~0.3 s."
)

PRESETS: dict[str, SplatParams] = {}
PRESET_DESCRIPTIONS: dict[str, str] = {}

for _k in (3, 6):
    for _i, _mid in enumerate((0.0, 0.5, 1.0, 1.5, 2.0), start=1):
        _name = f"SimT{_k}_{_i}"
        PRESETS[_name] = _paper(3000, _equal(_k), _mid, 0.3)
        PRESET_DESCRIPTIONS[_name] = (
            f"dropout sweep: 3000 cells, {_k} equal groups, sigma 0.3, dropout.mid {_mid}")
for _name, _sigma in (("Sig1", 0.1), ("Sig1b", 1.0), ("Sig2", 1.5), ("Sig3", 2.0),
                      ("Sig4", 2.5)):
    PRESETS[_name] = _paper(3000, _equal(3), 0.0, _sigma)
    PRESET_DESCRIPTIONS[_name] = (
        f"signal sweep: 3000 cells, 3 equal groups, dropout.mid 0, sigma {_sigma}")
for _i, _r in enumerate((0.1, 0.3, 0.5, 0.7, 0.9), start=1):
    _name = f"Imb{_i}"
    PRESETS[_name] = _paper(1500, imbalance_group_prob(_r), 0.0, 0.4)
    PRESET_DESCRIPTIONS[_name] = (
        f"imbalance sweep: 1500 cells, 6 groups, retention {_r}, sigma 0.4, dropout.mid 0")
PRESETS["demo"] = SplatParams(
    n_genes=1500, n_cells=1200, group_prob=(0.30, 0.25, 0.20, 0.15, 0.10),
    de_prob=0.1, de_fac_scale=0.5, dropout_type="experiment", dropout_mid=1.5,
    dropout_shape=-1.0,
)
PRESET_DESCRIPTIONS["demo"] = "small demo: " + DEMO_NOTE
del _i, _mid, _k, _name, _sigma, _r
if tuple(PRESETS) != PRESET_NAMES:  # pragma: no cover - the CLI's help lists PRESET_NAMES
    raise ImportError(f"simulate._names.PRESET_NAMES is out of date: the presets are {tuple(PRESETS)}")


def simulate(
    preset: str | None = None,
    *,
    seed: int = 0,
    chunk_size: int | str | None = "auto",
    drop_zeros: bool = True,
    true_counts: bool = True,
    **overrides: Any,
) -> anndata.AnnData:
    """Simulate a dataset from a named preset, Splatter's defaults, or both plus overrides.

    For example ``simulate("SimT3_1", seed=2, n_cells=500)``: a paper dataset
    with 500 cells. Unknown presets or parameter names raise :class:`InputError`.

    Parameters
    ----------
    preset
        One of :data:`PRESETS`; ``None``: Splatter's defaults, i.e. ``SplatParams()``.
    seed
        Non-negative integer; the same seed gives the same data.
    chunk_size, drop_zeros, true_counts
        Passed to :func:`simulate_splat`.
    **overrides
        :class:`SplatParams` fields replacing the preset's values.

    Returns
    -------
    anndata.AnnData
        Cells x genes, laid out as :func:`simulate_splat` describes (``uns['name']`` is the preset).
    """
    if preset is None:
        params = SplatParams()
    else:
        if preset not in PRESETS:
            raise InputError(
                f"unknown simulation preset {preset!r}; valid presets: {', '.join(PRESETS)}")
        params = PRESETS[preset]
    if overrides:
        params = params.replace(**overrides)
    return simulate_splat(params, seed=seed, chunk_size=chunk_size, drop_zeros=drop_zeros,
                          true_counts=true_counts, name=preset)
