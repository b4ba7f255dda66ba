"""scanpy-style tools: ``adata`` first, results written into it (or returned)."""

from ._cluster import cluster, store_results
from ._markers import markers

__all__ = ["cluster", "markers", "store_results"]
