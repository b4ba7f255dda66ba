"""Simulated single-cell counts: a NumPy port of Splatter's Splat ``groups`` model.

>>> from scgpcl.simulate import simulate
>>> adata = simulate("SimT3_1", seed=0)          # a paper dataset (docs/method.md section 8)
>>> adata = simulate("demo")                      # small, quick, for ``scgpcl demo``
>>> adata = simulate(n_cells=500, n_genes=2000, group_prob=(0.5, 0.5), dropout_mid=1.0)

See :func:`simulate_splat` for the model and the output layout.
"""

# imported on first use, so that the ``scgpcl`` command can register ``simulate`` (scgpcl.simulate._cli)
# without loading anndata and the simulator
_LAZY = {
    "PRESETS": "_presets", "PRESET_DESCRIPTIONS": "_presets", "imbalance_group_prob": "_presets", "simulate": "_presets",
    "RNG_BLOCK": "_splat", "SplatParams": "_splat", "dropout_rate": "_splat", "simulate_splat": "_splat",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    try:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
    except AttributeError as e:  # raised inside a dependency's import: Python would report "cannot import name"
        raise ImportError(f"importing scgpcl.simulate.{_LAZY[name]} failed: {type(e).__name__}: {e}") from e
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


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
