"""Ignite handler that finds cluster prototypes between the two training phases."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events

from monai_cae.clustering import ElbowResult, elbow_kmeans
from monai_cae.distributed import broadcast_matrix, rank_and_world_size
from monai_cae.engines.embedding import embed_dataset

__all__ = ["PrototypeDiscoveryHandler"]


class PrototypeDiscoveryHandler:
    """Freeze-time prototype discovery: embed the training set, KMeans with the elbow method, install prototypes.

    Ferrante et al. 2022 (Sec. 2): "the encoder is frozen and a search for optimal number of clusters is run using
    KMeans combined with the elbow method. Cluster centroids are then stored in a matrix whose columns represent
    cluster prototypes." The handler runs when the first phase-2 epoch starts and the network has no prototypes yet
    (so a run resumed from a phase-1 checkpoint, or from one taken before discovery finished, discovers them then),
    and at the end of a run that never reached phase 2. It writes ``elbow.json``, ``elbow.png``, ``kmeans.pkl``,
    ``prototypes.npy`` and ``embeddings.npy`` into ``output_dir``.

    In a distributed run (every rank attaches the handler) discovery happens once: rank 0 embeds the whole
    ``data_loader`` (give it the unsharded loader), runs KMeans and writes the artefacts, then broadcasts the
    prototype matrix, so every rank installs the same values. The other ranks wait in the broadcast meanwhile, so
    the process group's timeout (``init_process_group(timeout=...)``) must exceed the discovery time.

    Args:
        data_loader: loader over the training set *without* augmentation.
        output_dir: folder for the artefacts.
        k_values: cluster counts to try.
        seed: KMeans random state.
        normalize: cluster L2-normalised latents (consistent with the cosine prototype assignment).
        fit_sample: for more training images than this, KMeans is fitted on a random subsample of this size and
            measured on all (see :func:`~monai_cae.clustering.elbow_kmeans`); ``None`` fits on all.
        prototypes_path: optional extra path to save ``prototypes.npy`` to, e.g. beside the bundle's model.
        image_key: key of the images in a batch.
        progress: show progress bars.

    Raises:
        ValueError: when fewer than two values of ``k`` are given.
    """

    def __init__(
        self,
        data_loader: Iterable,
        output_dir: str,
        k_values: Sequence[int] = tuple(range(2, 11)),
        seed: int = 0,
        normalize: bool = True,
        fit_sample: int | None = 20_000,
        prototypes_path: str | None = None,
        image_key: str = "image",
        progress: bool = True,
    ) -> None:
        if len(k_values) < 2:
            raise ValueError(f"k_values needs at least two cluster counts, got {k_values}.")
        self.data_loader = data_loader
        self.output_dir = output_dir
        self.k_values = list(k_values)
        self.seed = seed
        self.normalize = normalize
        self.fit_sample = fit_sample
        self.prototypes_path = prototypes_path
        self.image_key = image_key
        self.progress = progress
        self.result: ElbowResult | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)
        engine.add_event_handler(Events.COMPLETED, self._on_completed)

    def _on_epoch_started(self, engine: Engine) -> None:
        if engine.phase(engine.state.epoch) == 2 and engine.network.num_prototypes == 0:
            self(engine)

    def _on_completed(self, engine: Engine) -> None:
        if engine.network.num_prototypes == 0:
            self(engine)

    def __call__(self, engine: Engine) -> None:
        network = engine.network
        if rank_and_world_size()[0] > 0:
            network.set_prototypes(broadcast_matrix(None, engine.state.device))
            return
        network.eval()
        features, _ = embed_dataset(
            network.encode, self.data_loader, engine.state.device, self.image_key, None, self.progress, "Embedding"
        )
        self.result = elbow_kmeans(features, self.k_values, seed=self.seed, normalize=self.normalize,
                                   fit_sample=self.fit_sample, progress=self.progress)
        network.set_prototypes(broadcast_matrix(torch.from_numpy(self.result.centroids), engine.state.device))
        self.result.save(self.output_dir)
        np.save(os.path.join(self.output_dir, "embeddings.npy"), features)
        if self.prototypes_path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(self.prototypes_path)), exist_ok=True)
            np.save(self.prototypes_path, self.result.centroids)
        silhouette = self.result.silhouettes[self.result.k_values.index(self.result.k)]
        self.logger.info(
            f"Prototype discovery at epoch {engine.state.epoch}: k={self.result.k} "
            f"({'knee' if self.result.knee_found else 'best silhouette'}), silhouette={silhouette:.3f}."
        )
