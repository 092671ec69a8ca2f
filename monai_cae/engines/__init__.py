from __future__ import annotations

from .embedding import embed_dataset
from .knn_evaluator import KNNProbeEvaluator
from .rng_state import RNGState
from .sampling import ClusterGaussianSampler
from .trainer import CAETrainer

__all__ = ["CAETrainer", "ClusterGaussianSampler", "KNNProbeEvaluator", "RNGState", "embed_dataset"]
