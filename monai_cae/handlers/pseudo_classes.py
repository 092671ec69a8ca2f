"""Ignite handler that keeps a pseudo-class per training image, for NT-Xent with cluster-aware negatives."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_cae.clustering.agglomerative import agglomerative_pseudo_classes
from monai_cae.distributed import broadcast_matrix
from monai_cae.inference.embedding import embed_dataset
from monai_cae.losses import NTXentLoss

__all__ = ["NEGATIVES", "PseudoClassHandler", "cluster_aware_negatives"]

NEGATIVES = ("all", "cluster_aware")


def cluster_aware_negatives(negatives: str) -> bool:
    """Check a negative-selection mode, as the bundle's ``negatives`` option takes it.

    Args:
        negatives: ``"all"`` (plain NT-Xent: every other image is a negative) or ``"cluster_aware"`` (no negative
            from the anchor's own pseudo-class).

    Returns:
        Whether the mode needs pseudo-classes.

    Raises:
        ValueError: for any other value.
    """
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}.")
    return negatives == "cluster_aware"


class PseudoClassHandler:
    """Pseudo-classes of the training images from the current encoder, refreshed every ``interval`` epochs.

    Cluster-guided contrastive pretraining ("Cluster-guided contrastive learning for medical image segmentation
    pretraining") produces "pseudo-classes by hierarchically clustering features obtained by an auto-encoder in an
    unsupervised manner" and avoids "the selection of negatives from the same pseudo-class". Here the autoencoder
    is the one being trained: when a phase-1 epoch starts (the first one, then every ``interval`` epochs), the
    handler embeds ``data_loader`` with the encoder, clusters the latents with
    :func:`~monai_cae.clustering.agglomerative_pseudo_classes`, and keeps a table from dataset index to pseudo-class, which
    :meth:`lookup` reads for each training batch (:class:`~monai_cae.engines.CAETrainer` passes the result to
    :class:`~monai_cae.losses.NTXentLoss` as ``pseudo_labels``). Phase 2 trains no contrastive loss, so nothing is
    refreshed there.

    The table is checkpointable (``state_dict`` / ``load_state_dict``): a run resumed between two refreshes goes on
    with the table the interrupted run used, and one resumed at a refresh epoch recomputes it from the restored
    weights, with the subsample seeded by ``seed`` and the epoch, so the result equals the uninterrupted run's.

    In a distributed run (every rank attaches the handler) rank 0 embeds and clusters the whole ``data_loader``
    (give it the unsharded loader) and broadcasts the table, so every rank masks negatives with the same classes
    whatever the numerical differences between devices, while the others wait in the broadcast.

    Args:
        data_loader: loader over the training set *without* augmentation, whose batches carry each image's dataset
            index under ``index_key`` (the indices the training batches carry).
        num_classes: number of pseudo-classes.
        interval: epochs between refreshes.
        seed: seed of the clustering subsample (see :func:`~monai_cae.clustering.agglomerative_pseudo_classes`).
        max_fit_samples: the most images the hierarchical clustering is fitted on.
        loss: optional loss whose NT-Xent negative queues are emptied at every refresh, because each clustering
            numbers its classes afresh and the queued entries' old numbers would mask the wrong negatives.
        image_key: key of the images in a batch.
        index_key: key of the dataset indices in a batch.
        progress: show progress bars.

    Raises:
        ValueError: for ``num_classes`` below 2 or ``interval`` below 1.
    """

    def __init__(
        self,
        data_loader: Iterable,
        num_classes: int = 10,
        interval: int = 5,
        seed: int = 0,
        max_fit_samples: int = 5000,
        loss: nn.Module | None = None,
        image_key: str = "image",
        index_key: str = "index",
        progress: bool = True,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        if interval < 1:
            raise ValueError(f"interval must be at least 1, got {interval}.")
        self.data_loader = data_loader
        self.num_classes = num_classes
        self.interval = interval
        self.seed = seed
        self.max_fit_samples = max_fit_samples
        self.loss = loss
        self.image_key = image_key
        self.index_key = index_key
        self.progress = progress
        self.table = torch.zeros(0, dtype=torch.long)
        self.epoch = 0  # the epoch whose start computed the table, 0 before any
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._on_epoch_started)

    def _on_epoch_started(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if engine.phase(epoch) == 1 and ((epoch - 1) % self.interval == 0 or self.table.numel() == 0):
            self(engine)

    def __call__(self, engine: Engine) -> None:
        """Recompute the table from ``engine.network``'s current encoder."""
        epoch = engine.state.epoch
        table = None
        rank = idist.get_rank()
        if rank == 0:
            network = engine.network
            network.eval()
            features, indices = embed_dataset(
                network.encode, self.data_loader, engine.state.device, self.image_key, self.index_key, self.progress,
                "Pseudo-classes",
            )
            labels = agglomerative_pseudo_classes(features, self.num_classes, self.max_fit_samples, self.seed + epoch)
            table = torch.full((int(indices.max()) + 1, 1), -1.0)
            table[torch.from_numpy(indices), 0] = torch.from_numpy(labels).float()
        # class numbers are small integers, exact in the float32 the broadcast carries
        self.table = broadcast_matrix(table, engine.state.device)[:, 0].long().cpu()
        self.epoch = epoch
        if self.loss is not None:
            for module in self.loss.modules():
                if isinstance(module, NTXentLoss):
                    module.reset_queue()
        if rank == 0:
            sizes = torch.bincount(self.table[self.table >= 0], minlength=self.num_classes).tolist()
            self.logger.info(f"Pseudo-classes at epoch {epoch}: {self.num_classes} classes of sizes {sizes}.")

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Pseudo-classes of a batch.

        Args:
            indices: dataset indices of the batch's images.

        Returns:
            ``(B,)`` int64 pseudo-classes, on the CPU.

        Raises:
            RuntimeError: before the first refresh.
            ValueError: for an index the clustered ``data_loader`` did not cover.
        """
        if self.table.numel() == 0:
            raise RuntimeError("no pseudo-classes yet: attach the PseudoClassHandler to the trainer before running.")
        indices = torch.as_tensor(indices).reshape(-1).long().cpu()
        in_range = (indices >= 0) & (indices < len(self.table))
        labels = torch.full_like(indices, -1)
        labels[in_range] = self.table[indices[in_range]]
        if bool((labels < 0).any()):
            raise ValueError(
                f"dataset indices {indices[labels < 0][:5].tolist()} have no pseudo-class: the handler's data_loader "
                "must cover the training set, with the same index_key."
            )
        return labels

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"table": self.table.clone(), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, torch.Tensor | int]) -> None:
        """Restore a table saved by :meth:`state_dict`."""
        self.table = torch.as_tensor(state["table"]).long().cpu()
        self.epoch = int(state["epoch"])
