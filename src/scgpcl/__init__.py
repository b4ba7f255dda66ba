"""scGPCL: single-cell clustering with graph prototypical contrastive learning.

Two faces over one implementation:

* :class:`SCGPCL` — ``SCGPCL(adata, n_clusters=K).train()``, then
  ``.predict()``, ``.get_latent_representation()``, ``.save(dir)``,
  ``SCGPCL.load(dir, adata)``;
* :func:`scgpcl.tl.cluster` — scanpy-style, writes ``obs['scgpcl']``,
  ``obsm['X_scgpcl']`` and ``uns['scgpcl']``;

plus figures (:mod:`scgpcl.pl`), marker genes (:func:`scgpcl.tl.markers`), an
HTML report (:func:`scgpcl.report.write_report`) and a scikit-learn style
estimator (:class:`scgpcl.sklearn.SCGPCLClustering`). ``pl``, ``report`` and
``sklearn`` are imported on first use (matplotlib is not loaded before).
"""

import logging as _logging

from . import metrics, tl
from ._config import ModelConfig, PreprocessConfig, SamplerConfig, SCGPCLConfig, TrainConfig, fast, faithful, recommended
from ._errors import InputError
from .data._io import read_counts
from .model import SCGPCL

__version__ = "0.1.0"

_logging.getLogger("scgpcl").addHandler(_logging.NullHandler())

_LAZY = ("pl", "report", "sklearn")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "SCGPCL", "SCGPCLConfig", "PreprocessConfig", "ModelConfig", "SamplerConfig", "TrainConfig",
    "InputError", "fast", "faithful", "recommended", "metrics", "pl", "read_counts", "report", "sklearn", "tl", "__version__",
]
