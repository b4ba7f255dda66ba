"""Training loops, k-means and stopping rules."""

from ._kmeans import KMeansResult, kmeans
from ._trainer import StageResult, Trainer, prototype_sizes

__all__ = ["KMeansResult", "StageResult", "Trainer", "kmeans", "prototype_sizes"]
