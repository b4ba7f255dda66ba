"""Data handling: reading, checking, preprocessing, the bipartite graph."""

from ._graph import BipartiteAdjacency, BipartiteGraph, Subgraph, SubgraphSampler
from ._preprocess import PreparedData, prepare, select_genes

__all__ = ["BipartiteAdjacency", "BipartiteGraph", "PreparedData", "Subgraph", "SubgraphSampler", "prepare", "select_genes"]
