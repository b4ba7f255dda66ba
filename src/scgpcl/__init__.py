"""scGPCL: single-cell clustering with graph prototypical contrastive learning.

Two faces over one implementation:

* :class:`SCGPCL` — ``SCGPCL(adata, n_clusters=K).train()``, then
  ``.predict()``, ``.get_latent_representation()``, ``.save(dir)``,
  ``SCGPCL.load(dir, adata)``;
* :func:`scgpcl.tl.cluster` — scanpy-style, writes ``obs['scgpcl']``,
  ``obsm['X_scgpcl']`` and ``uns['scgpcl']``.
"""

import logging as _logging

from . import metrics, tl
from ._config import ModelConfig, PreprocessConfig, SamplerConfig, SCGPCLConfig, TrainConfig, fast, faithful
from ._errors import InputError
from .data._io import read_counts
from .model import SCGPCL

__version__ = "0.1.0"

_logging.getLogger("scgpcl").addHandler(_logging.NullHandler())

__all__ = [
    "SCGPCL", "SCGPCLConfig", "PreprocessConfig", "ModelConfig", "SamplerConfig", "TrainConfig",
    "InputError", "fast", "faithful", "metrics", "read_counts", "tl", "__version__",
]
