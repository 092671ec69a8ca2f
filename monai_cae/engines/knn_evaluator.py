"""A cheap kNN probe of the latent space, run as a MONAI evaluator while training."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Events
from ignite.metrics import Accuracy
from monai.engines import Evaluator
from monai.handlers import from_engine
from monai.utils import CommonKeys as Keys

from monai_cae.clustering.knn import knn_votes
from monai_cae.inference.embedding import embed_dataset
from monai_cae.networks.nets import ContrastiveAutoEncoder


__all__ = ["KNNProbeEvaluator"]


class KNNProbeEvaluator(Evaluator):
    """kNN accuracy of the latent ``h`` on a labelled split, against a memory bank built from another split.

    At the start of each run the memory bank is re-embedded with the current encoder; every validation batch is
    then classified by the majority label of its ``k`` nearest bank entries (cosine similarity). The metric,
    ``knn_accuracy``, makes representation collapse visible while training: it falls to the majority-class rate.
    Run it every few epochs from a ``monai.handlers.ValidationHandler``.

    Args:
        device: device to embed on.
        val_data_loader: labelled loader to classify.
        network: the contrastive autoencoder being trained.
        bank_data_loader: labelled loader for the memory bank (the training set, without augmentation).
        k: number of neighbours.
        image_key: key of the images in a batch.
        label_key: key of the labels in a batch.
        val_handlers: handlers to attach (e.g. ``StatsHandler``).

    Raises:
        ValueError: for ``k < 1``.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        network: ContrastiveAutoEncoder,
        bank_data_loader: Iterable,
        k: int = 5,
        image_key: str = Keys.IMAGE,
        label_key: str = Keys.LABEL,
        val_handlers: Sequence | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            key_val_metric={"knn_accuracy": Accuracy(output_transform=from_engine([Keys.PRED, Keys.LABEL]))},
            val_handlers=val_handlers,
            decollate=False,
        )
        self.network = network
        self.bank_data_loader = bank_data_loader
        self.k = k
        self.image_key = image_key
        self.label_key = label_key
        self.bank = torch.zeros(0)
        self.bank_labels = torch.zeros(0, dtype=torch.long)
        self.add_event_handler(Events.EPOCH_STARTED, self._build_bank)

    def _build_bank(self, engine: KNNProbeEvaluator) -> None:
        self.network.eval()
        features, labels = embed_dataset(
            self.network.encode, self.bank_data_loader, self.state.device, self.image_key, self.label_key, False
        )
        self.bank = torch.from_numpy(features).to(self.state.device)
        self.bank_labels = torch.from_numpy(labels).to(self.state.device)

    def _iteration(self, engine: KNNProbeEvaluator, batchdata: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        images = torch.as_tensor(batchdata[self.image_key]).to(engine.state.device)
        labels = torch.as_tensor(batchdata[self.label_key]).reshape(-1).long().to(engine.state.device)
        self.network.eval()
        with torch.no_grad():
            features = self.network.encode(images)
        num_classes = int(max(self.bank_labels.max(), labels.max())) + 1
        votes = knn_votes(self.bank, self.bank_labels, features, min(self.k, len(self.bank)), num_classes)
        return {Keys.IMAGE: images, Keys.LABEL: labels, Keys.PRED: votes.float()}
