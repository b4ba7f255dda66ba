"""Simulated single-cell counts: a NumPy port of Splatter's Splat ``groups`` model.

>>> from scgpcl.simulate import simulate
>>> adata = simulate("SimT3_1", seed=0)          # a paper dataset (docs/method.md section 8)
>>> adata = simulate("demo")                      # small, quick, for ``scgpcl demo``
>>> adata = simulate(n_cells=500, n_genes=2000, group_prob=(0.5, 0.5), dropout_mid=1.0)

See :func:`simulate_splat` for the model and the output layout.
"""

from ._presets import PRESET_DESCRIPTIONS, PRESETS, imbalance_group_prob, simulate
from ._splat import RNG_BLOCK, SplatParams, dropout_rate, simulate_splat

__all__ = [
    "PRESETS",
    "PRESET_DESCRIPTIONS",
    "RNG_BLOCK",
    "SplatParams",
    "dropout_rate",
    "imbalance_group_prob",
    "simulate",
    "simulate_splat",
]
