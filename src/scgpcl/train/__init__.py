"""Training: the stages, their schedule, k-means and the estimate of K."""

from ._auto_k import AutoKResult, estimate_k
from ._distributed_kmeans import lloyd_kmeans
from ._kmeans import KMeansResult, assign, central_run, consensus_labels, kmeans
from ._loop import StageResult, check_stage_terms, loss_weights
from ._schedule import STOP_LABELS, Schedule
from ._trainer import Trainer, TrainingResult, prototype_sizes

__all__ = [
    "STOP_LABELS", "AutoKResult", "KMeansResult", "Schedule", "StageResult", "Trainer", "TrainingResult", "assign", "central_run",
    "check_stage_terms", "consensus_labels", "estimate_k", "kmeans", "lloyd_kmeans", "loss_weights", "prototype_sizes",
]
