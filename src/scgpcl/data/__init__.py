"""Data handling: reading, checking, preprocessing, the bipartite graph, sampling and batching."""

from ._features import CellFeatures
from ._graph import BipartiteAdjacency, CellGeneGraph, NeighborSampler, Subgraph
from ._io import read_counts
from ._loader import Batch, CellChunk, CountRows, SubgraphLoader, View
from ._preprocess import PreparedData, choose_target_sum, prepare, sample_components, select_genes, with_target_sum
from ._sparse import SparseBlock, gather_rows, spmm

__all__ = [
    "Batch", "BipartiteAdjacency", "CellChunk", "CellFeatures", "CellGeneGraph", "CountRows", "NeighborSampler",
    "PreparedData", "SparseBlock", "Subgraph", "SubgraphLoader", "View", "choose_target_sum", "gather_rows", "prepare",
    "read_counts",
    "sample_components", "select_genes", "spmm", "with_target_sum",
]
