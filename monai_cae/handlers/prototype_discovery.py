"""Ignite handler that finds cluster prototypes between the two training phases."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events

from monai_cae.clustering import (
    CLUSTERING_METHODS,
    K_CRITERIA,
    ClusteringResult,
    ElbowResult,
    KSelection,
    choose_k,
    cluster_latent,
    elbow_kmeans,
)
from monai_cae.distributed import broadcast_matrix
from monai_cae.inference.embedding import embed_dataset

__all__ = ["PrototypeDiscoveryHandler"]


class PrototypeDiscoveryHandler:
    """Freeze-time prototype discovery: embed the training set, choose ``k``, cluster, install prototypes.

    Ferrante et al. 2022 (Sec. 2): "the encoder is frozen and a search for optimal number of clusters is run using
    KMeans combined with the elbow method. Cluster centroids are then stored in a matrix whose columns represent
    cluster prototypes." That is ``clustering_method="kmeans"`` with ``k_criterion="elbow"``, the defaults. Another
    criterion (:data:`~monai_cae.clustering.K_CRITERIA`) chooses ``k`` from the same KMeans sweep or its own fits,
    and another method (:data:`~monai_cae.clustering.CLUSTERING_METHODS`) clusters at that ``k``; its prototypes
    are then the clusters' unit mean directions (:func:`~monai_cae.clustering.cluster_latent`), so an image's
    stratum is still its most cosine-similar prototype. The handler runs when the first phase-2 epoch starts and the network has no prototypes yet
    (so a run resumed from a phase-1 checkpoint, or from one taken before discovery finished, discovers them then),
    and at the end of a run that never reached phase 2. It writes ``elbow.json``, ``elbow.png``, ``kmeans.pkl`` (the
    elbow's own choice), ``k_selection.json`` and ``k_<criterion>.png`` (the criterion's curve),
    ``clustering.json`` (method, ``k``, cluster sizes, fit time), ``prototypes.npy`` and ``embeddings.npy`` into
    ``output_dir``.

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
        fit_sample: for more training images than this, the KMeans sweep is fitted on a random subsample of this
            size and measured on all (see :func:`~monai_cae.clustering.elbow_kmeans`); ``None`` fits on all.
        clustering_method: a key of :data:`~monai_cae.clustering.CLUSTERING_METHODS`.
        k_criterion: a key of :data:`~monai_cae.clustering.K_CRITERIA`.
        clustering_options: options of the method (see :func:`~monai_cae.clustering.cluster_latent`).
        prototypes_path: optional extra path to save ``prototypes.npy`` to, e.g. beside the bundle's model.
        image_key: key of the images in a batch.
        progress: show progress bars.

    Raises:
        ValueError: when fewer than two values of ``k`` are given, or for an unknown method or criterion.
        TypeError: when ``clustering_options`` is not a mapping (a string left unparsed on a command line, say).
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
        clustering_method: str = "kmeans",
        k_criterion: str = "elbow",
        clustering_options: Mapping[str, Any] | None = None,
    ) -> None:
        if len(k_values) < 2:
            raise ValueError(f"k_values needs at least two cluster counts, got {k_values}.")
        if clustering_method not in CLUSTERING_METHODS:
            raise ValueError(f"Unknown clustering_method {clustering_method!r}; choose one of "
                             f"{sorted(CLUSTERING_METHODS)}.")
        if k_criterion not in K_CRITERIA:
            raise ValueError(f"Unknown k_criterion {k_criterion!r}; choose one of {sorted(K_CRITERIA)}.")
        if clustering_options is not None and not isinstance(clustering_options, Mapping):
            raise TypeError(f"clustering_options must be a mapping of the method's options, got {clustering_options!r}.")
        self.data_loader = data_loader
        self.output_dir = output_dir
        self.k_values = list(k_values)
        self.seed = seed
        self.normalize = normalize
        self.fit_sample = fit_sample
        self.prototypes_path = prototypes_path
        self.image_key = image_key
        self.progress = progress
        self.clustering_method = clustering_method
        self.k_criterion = k_criterion
        self.clustering_options = dict(clustering_options or {})
        self.result: ElbowResult | None = None
        self.selection: KSelection | None = None
        self.clustering: ClusteringResult | None = None
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
        if idist.get_rank() > 0:
            network.set_prototypes(broadcast_matrix(None, engine.state.device))
            return
        network.eval()
        features, _ = embed_dataset(
            network.encode, self.data_loader, engine.state.device, self.image_key, None, self.progress, "Embedding"
        )
        self.result = elbow_kmeans(features, self.k_values, seed=self.seed, normalize=self.normalize,
                                   fit_sample=self.fit_sample, progress=self.progress)
        self.selection = choose_k(features, self.k_values, self.k_criterion, seed=self.seed, normalize=self.normalize,
                                  progress=self.progress, sweep=self.result)
        k = self.selection.k
        if self.clustering_method == "kmeans":
            # the published prototypes: the sweep's own KMeans centroids, at the criterion's k
            prototypes = self.result.models[k].cluster_centers_.astype(np.float32)
        else:
            self.clustering = cluster_latent(features, self.clustering_method, k, self.seed, self.normalize,
                                             **self.clustering_options)
            prototypes = self.clustering.prototypes
        network.set_prototypes(broadcast_matrix(torch.from_numpy(prototypes), engine.state.device))
        self._save(features, prototypes)
        self.logger.info(
            f"Prototype discovery at epoch {engine.state.epoch}: k={len(prototypes)} ({self.k_criterion} chose "
            f"{k}), {self.clustering_method}."
        )

    def _save(self, features: np.ndarray, prototypes: np.ndarray) -> None:
        self.result.save(self.output_dir)
        self.selection.plot(os.path.join(self.output_dir, f"k_{self.k_criterion}.png"))
        summary = (self.clustering.to_dict() if self.clustering is not None else
                   {"method": "kmeans", "k": len(prototypes), "normalized": self.normalize,
                    "sizes": np.bincount(self.result.models[len(prototypes)].labels_).tolist()})
        for name, content in (("k_selection.json", self.selection.to_dict()), ("clustering.json", summary)):
            with open(os.path.join(self.output_dir, name), "w") as f:
                json.dump(content, f, indent=2)
        for path in (os.path.join(self.output_dir, "prototypes.npy"), self.prototypes_path):
            if path is not None:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
                np.save(path, prototypes)
        np.save(os.path.join(self.output_dir, "embeddings.npy"), features)
