"""scanpy-style tools: ``adata`` first, results written into it."""

from ._cluster import cluster, store_results

__all__ = ["cluster", "store_results"]
