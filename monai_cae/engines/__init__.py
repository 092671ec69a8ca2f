from __future__ import annotations

from .embedding import embed_dataset
from .knn_evaluator import KNNProbeEvaluator
from .rng_state import RNGState
from .sampling import ClusterGaussianSampler, generate_stratum_images
from .strata import StrataAssignment, assign_strata, atomic_write, load_model, write_assignments
from .trainer import CAETrainer

__all__ = [
    "CAETrainer",
    "ClusterGaussianSampler",
    "KNNProbeEvaluator",
    "RNGState",
    "StrataAssignment",
    "assign_strata",
    "atomic_write",
    "embed_dataset",
    "generate_stratum_images",
    "load_model",
    "write_assignments",
]
