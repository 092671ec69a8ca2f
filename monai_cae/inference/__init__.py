"""Plain loops over a trained network and a loader, below the Ignite engines and handlers: embedding a dataset,
sampling new images of a stratum."""

from __future__ import annotations

from .embedding import embed_dataset
from .sampling import ClusterGaussianSampler, generate_stratum_images

__all__ = ["ClusterGaussianSampler", "embed_dataset", "generate_stratum_images"]
