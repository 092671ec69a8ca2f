"""Train task: the bundle's training workflow (``train.json``, run id ``run``) started from MONAI Label."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask

from monai_cae.data import RADIOGRAPH_MODALITIES, ArrayImageDataset, CohortDataset

from ..bundle_model import radiograph_entries
from ..versions import ModelVersion, current_version, new_version, publish

__all__ = ["DATASETS", "CAETrain"]

logger = logging.getLogger(__name__)

DATASETS = ("datastore", "bundle")
"""Training data: the datastore's images (unlabelled, read by the cohort pipeline) or the bundle's own dataset."""

_MIN_IMAGES = 4  # the elbow method needs two cluster counts in [2, N - 1]
_PROTOTYPES = "assignment.prototypes"  # the state dict's prototype buffer (PrototypeAssignment)


class CAETrain(BundleTrainTask):
    """MONAI Label's ``BundleTrainTask`` on the ``cae`` bundle, which trains without labels.

    The request (``POST /train/<model>`` body) takes ``max_epochs`` and ``warmup_epochs`` (the contrastive phase,
    before prototype discovery), ``dataset`` (one of :data:`DATASETS`; default ``"datastore"``), ``pretrained``
    (start from the current version's weights; its prototypes are discovered again, so that the strata belong to
    the new model), ``device`` and ``run_id`` (default ``"run"``, train.json's workflow).

    Every task trains a new model version (:mod:`lib.versions`): train.json's ``output_dir`` and ``model_dir`` go
    to its own run folder ``runs/label/<version>/``, so its model, prototypes, reference embeddings, checkpoints and
    TensorBoard events stay together, and the bundle's ``models/`` and ``runs/train/`` are never written. The
    version becomes current when training completed; the infer task uses it from its next request.

    With ``"datastore"``, every image of the datastore (labelled or not) is decoded once by the cohort pipeline,
    skipped files are logged, and the batch size and cluster counts shrink to fit a small collection; the kNN
    probe, which needs labels, is off. With ``"bundle"``, the bundle's configured dataset is used as it is.

    Args:
        bundle_path: the bundle folder.
        conf: the app's ``--conf`` options.

    Raises:
        FileNotFoundError: when the bundle has no ``configs/train.json``.
    """

    def __init__(self, bundle_path: str, conf: dict[str, str]) -> None:
        super().__init__(bundle_path, conf)
        if not self.is_valid():
            raise FileNotFoundError(f"no train config in {bundle_path}/configs: pass --conf bundle_path.")
        self._request: dict[str, Any] = {}
        self._images: list[str] = []
        self._version: ModelVersion | None = None
        self._previous: ModelVersion | None = None

    def config(self) -> dict[str, Any]:
        """The options MONAI Label shows for this task."""
        options = super().config()
        options.pop("val_split", None)  # no labels, so no validation split
        options.pop("model_filename", None)  # training starts from the current version, not a file of models/
        options.update(
            max_epochs=int(self.bundle_config.get("max_epochs")),
            warmup_epochs=int(self.bundle_config.get("warmup_epochs")),
            dataset=list(DATASETS),
            run_id="run",
        )
        return options

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Check the request, run train.json's ``run`` workflow into a new version, and make that version current.

        Raises:
            ValueError: for epochs out of order, an unknown dataset, or fewer than 4 usable datastore images.
            FileNotFoundError: when training ended without a model (the current version stays).
        """
        defaults = self.config()
        max_epochs = int(request.get("max_epochs", defaults["max_epochs"]))
        warmup_epochs = int(request.get("warmup_epochs", defaults["warmup_epochs"]))
        if not 1 <= warmup_epochs < max_epochs:
            raise ValueError(
                f"warmup_epochs must be in [1, max_epochs - 1] so that prototypes are discovered, got "
                f"warmup_epochs={warmup_epochs} with max_epochs={max_epochs}."
            )
        dataset = request.get("dataset", DATASETS[0])
        dataset = dataset[0] if isinstance(dataset, list) else dataset
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}.")
        self._request = {**request, "max_epochs": max_epochs, "warmup_epochs": warmup_epochs, "dataset": dataset}
        if dataset == "datastore":
            # the decoded images go to the workflow as an object, which torchrun's config file cannot carry
            self._request.update(multi_gpu=False, force_multi_gpu=False)
        self._previous = current_version(self.bundle_path)
        self._version = new_version(self.bundle_path)
        logger.info("train: version %s in %s (current: %s)", self._version.name, self._version.folder,
                    self._previous.name)
        result = super().__call__(self._request, datastore)
        # only reached when the workflow completed: an exception, or a killed process, leaves the pointer alone
        publish(self.bundle_path, self._version, self._previous)
        logger.info("train: version %s is current (previous: %s)", self._version.name, self._previous.name)
        return {**(result or {}), "version": self._version.name, "previous": self._previous.name}

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, str]]:
        # unsupervised: every image counts, labelled or not (the base class keeps only labelled ones)
        if request["dataset"] != "datastore":
            self._images = []
        else:
            # an image that is no longer a file of the studies resolves to "", and is left out
            uris = [datastore.get_image_uri(image_id) for image_id in sorted(datastore.list_images())]
            self._images = [uri for uri in uris if uri]
        return [{"image": path} for path in self._images]

    def _partition_datalist(self, datalist: list, request: dict[str, Any], shuffle: bool = False) -> tuple[list, None]:
        return datalist, None

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        # MONAI Label passes models/<model_filename>; a new version starts from the current one instead. MONAI Label
        # 0.8.5 also tests os.path.exists(None), a TypeError, when training starts from scratch.
        if not pretrained or not os.path.isfile(self._previous.model):
            return
        # the weights without the prototypes: the discovery handler runs again only for a network without any
        state = torch.load(self._previous.model, map_location="cpu", weights_only=True)
        state = {key: value[:0] if key.endswith(_PROTOTYPES) else value for key, value in state.items()}
        start = os.path.join(self._version.folder, "pretrained.pt")
        torch.save(state, start)
        logger.info("train: starting from version %s (%s), prototypes discovered again", self._previous.name,
                    self._previous.model)
        super()._load_checkpoint(start, True, train_handlers)

    def _datastore_dataset(self) -> ArrayImageDataset:
        max_pixels = self.bundle_config.get_parsed_content("max_pixels")
        entries = [e for path in self._images for e in radiograph_entries(path, RADIOGRAPH_MODALITIES, max_pixels)]
        cohort = CohortDataset(entries, self.bundle_config.get_parsed_content("img_size"), max_pixels=max_pixels)
        items = [cohort[i] for i in range(len(cohort))]
        for entry in cohort.manifest:
            if entry.reason:
                logger.warning("train: %s skipped (%s: %s)", entry.image_id, entry.reason, entry.detail)
        for item in items:
            if not item["ok"]:
                logger.warning("train: %s skipped (%s: %s)", item["id"], item["reason"], item["detail"])
        loaded = [item for item in items if item["ok"]]
        if len(loaded) < _MIN_IMAGES:
            raise ValueError(
                f"the datastore has {len(loaded)} usable images (of {len(self._images)}); training on it needs at "
                f"least {_MIN_IMAGES}, or pass dataset 'bundle'."
            )
        images = np.stack([np.asarray(item["image"], dtype=np.float32) for item in loaded])
        # the cohort pipeline already scaled them to [0, 1]
        return ArrayImageDataset(images, channel_last=False, ids=[item["id"] for item in loaded], intensity="dtype")

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        # the bundle builds its datasets by expression, so MONAI Label's datalist keys do not apply
        overrides.pop("train#dataset#data", None)
        overrides.pop("validate#dataset#data", None)
        overrides["warmup_epochs"] = self._request["warmup_epochs"]
        overrides["progress"] = False
        overrides["output_dir"] = self._version.folder
        overrides["model_dir"] = self._version.model_dir
        if self._request["dataset"] == "datastore":
            dataset = self._datastore_dataset()
            n = len(dataset)
            k_values = [k for k in self.bundle_config.get_parsed_content("k_values") if k < n]
            overrides.update(
                {
                    "train#dataset": dataset,
                    "validate#dataset": dataset,
                    "batch_size": min(int(self.bundle_config.get("batch_size")), n),
                    "k_values": k_values if len(k_values) >= 2 else list(range(2, n)),
                    "val_interval": self._request["max_epochs"] + 1,
                }
            )
            logger.info("train: %d datastore images, batch %d, k in %s", n, overrides["batch_size"],
                        overrides["k_values"])
        return overrides
