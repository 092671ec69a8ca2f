"""Plain loops and records over a trained network, below the Ignite engines and handlers: loading a model,
embedding a dataset, the per-image assignment to strata (in memory or streamed to disk), sampling new images of a
stratum."""

from __future__ import annotations

from .assignment import StrataAssignment, StrataStore, image_digest, write_assignments
from .embedding import embed_dataset
from .model import load_model
from .sampling import ClusterGaussianSampler, generate_stratum_images

__all__ = [
    "ClusterGaussianSampler",
    "StrataAssignment",
    "StrataStore",
    "embed_dataset",
    "generate_stratum_images",
    "image_digest",
    "load_model",
    "write_assignments",
]
