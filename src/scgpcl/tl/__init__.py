"""scanpy-style tools: ``adata`` first, results written into it (or returned)."""

from ._batches import batch_composition
from ._cluster import cluster, store_results
from ._markers import markers

__all__ = ["batch_composition", "cluster", "markers", "store_results"]
