"""scGPCL: single-cell clustering with graph prototypical contrastive learning.

Two faces over one implementation:

* :class:`SCGPCL` — ``SCGPCL(adata, n_clusters=K).train()``, then
  ``.predict()``, ``.get_latent_representation()``, ``.save(dir)``,
  ``SCGPCL.load(dir, adata)``;
* :func:`scgpcl.tl.cluster` — scanpy-style, writes ``obs['scgpcl']``,
  ``obsm['X_scgpcl']`` and ``uns['scgpcl']``;

plus figures (:mod:`scgpcl.pl`), marker genes (:func:`scgpcl.tl.markers`), an
HTML report (:func:`scgpcl.report.write_report`) and a scikit-learn style
estimator (:class:`scgpcl.sklearn.SCGPCLClustering`). Submodules and
``SCGPCL``/``read_counts`` are imported on first use, so ``import scgpcl`` is
cheap and loads neither torch nor scanpy.
"""

import logging as _logging

# Only the standard library is imported here (the config dataclasses, the error class), so that
# ``import scgpcl`` -- and with it the ``scgpcl`` command's start-up, ``--help`` and argument
# errors -- does not load torch, scanpy or anndata. Everything else is imported on first use.
from ._caches import use_writable_caches as _use_writable_caches
from ._config import (
    ModelConfig,
    PreprocessConfig,
    SamplerConfig,
    SCGPCLConfig,
    TrainConfig,
    faithful,
    fast,
    recommended,
)
from ._errors import InputError

__version__ = "0.1.0"

# before numba or matplotlib is imported: their caches where the usual folders cannot be written (a read-only
# home on a cluster); numba failed there ("cannot cache function ...: no locator available")
_use_writable_caches()

_logging.getLogger("scgpcl").addHandler(_logging.NullHandler())

#: submodules imported on first attribute access: ``scgpcl.tl``, ``scgpcl.pl``, ...
_LAZY_MODULES = ("data", "distributed", "metrics", "model", "pl", "report", "simulate", "sklearn", "tl", "train")
#: names imported on first access from the submodule that defines them
_LAZY_NAMES = {"SCGPCL": "model", "read_counts": "data._io"}


def __getattr__(name: str):
    import importlib

    if name not in _LAZY_MODULES and name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = name if name in _LAZY_MODULES else _LAZY_NAMES[name]
    try:
        value = importlib.import_module(f".{module}", __name__)
    except AttributeError as e:  # raised inside a dependency's import: Python would report "cannot import name"
        raise ImportError(f"importing scgpcl.{module} failed: {type(e).__name__}: {e}") from e
    if name in _LAZY_NAMES:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_NAMES))


__all__ = [
    "SCGPCL", "SCGPCLConfig", "PreprocessConfig", "ModelConfig", "SamplerConfig", "TrainConfig",
    "InputError", "fast", "faithful", "recommended", "metrics", "pl", "read_counts", "report", "sklearn", "tl", "__version__",
]
