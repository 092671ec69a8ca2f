from __future__ import annotations

from .distributed_inference import ShardedStrata, assign_strata_sharded, model_digest, shard_range
from .embedding import embed_dataset
from .knn_evaluator import KNNProbeEvaluator
from .label_free_evaluator import LabelFreeEvaluator
from .model_card import (
    MODEL_CARD_NAME,
    REFERENCE_PERCENTILES,
    load_trained_model,
    model_card_path,
    read_model_card,
    training_similarity_percentile,
    write_model_card,
)
from .rng_state import RNGState
from .sampling import ClusterGaussianSampler, generate_stratum_images
from .step import CAEStep
from .strata import StrataAssignment, atomic_write, load_model, write_assignments
from .strata_evaluator import StrataEvaluator, assign_strata
from .trainer import CAETrainer

__all__ = [
    "CAEStep",
    "CAETrainer",
    "ClusterGaussianSampler",
    "KNNProbeEvaluator",
    "LabelFreeEvaluator",
    "MODEL_CARD_NAME",
    "REFERENCE_PERCENTILES",
    "RNGState",
    "ShardedStrata",
    "StrataAssignment",
    "StrataEvaluator",
    "assign_strata",
    "assign_strata_sharded",
    "atomic_write",
    "embed_dataset",
    "generate_stratum_images",
    "load_model",
    "load_trained_model",
    "model_card_path",
    "read_model_card",
    "training_similarity_percentile",
    "write_model_card",
    "model_digest",
    "shard_range",
    "write_assignments",
]
