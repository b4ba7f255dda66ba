"""The simulation presets' names, for the command line's help without importing the simulator.

:mod:`scgpcl.simulate._presets` defines the presets in this order and checks that they match.
"""

PRESET_NAMES: tuple[str, ...] = (
    *(f"SimT{k}_{i}" for k in (3, 6) for i in range(1, 6)),
    "Sig1", "Sig1b", "Sig2", "Sig3", "Sig4",
    *(f"Imb{i}" for i in range(1, 6)),
    "demo",
)
