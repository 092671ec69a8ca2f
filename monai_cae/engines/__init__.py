from __future__ import annotations

from monai_cae.inference import (
    ClusterGaussianSampler,
    StrataAssignment,
    embed_dataset,
    generate_stratum_images,
    load_model,
    write_assignments,
)
from monai_cae.utils.io import atomic_write

from .distributed_inference import ShardAssignment, ShardedStrata, assign_strata_sharded, model_digest, shard_range
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
from .step import CAEStep
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
    "ShardAssignment",
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
