"""TensorBoard logging of what the loss curves cannot show: reconstructions and the latent space."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from ignite.engine import Engine, Events
from torch.utils.tensorboard import SummaryWriter

from monai_cae.inference.embedding import embed_dataset

__all__ = ["TensorBoardCAEHandler", "image_grid"]


def image_grid(rows: list[torch.Tensor]) -> torch.Tensor:
    """Tile equally sized batches into one image, one batch per row.

    Args:
        rows: batches ``(N, C, H, W)`` (or ``(N, C, H, W, D)``, shown at the middle slice of the last axis).

    Returns:
        A ``(C, rows * H, N * W)`` image with each row rescaled to [0, 1].

    Raises:
        ValueError: when the batches differ in shape.
    """
    if len({tuple(r.shape) for r in rows}) != 1:
        raise ValueError(f"all rows must have the same shape, got {[tuple(r.shape) for r in rows]}.")
    tiles = []
    for row in rows:
        row = row.detach().float().cpu()
        if row.ndim == 5:
            row = row[..., row.shape[-1] // 2]
        low, high = row.min(), row.max()
        row = (row - low) / (high - low).clamp_min(1e-8)
        tiles.append(torch.cat(list(row), dim=-1))
    return torch.cat(tiles, dim=-2)


class TensorBoardCAEHandler:
    """Logs input/reconstruction grids every few epochs and the latent space to the embedding projector.

    The grid shows the first augmented views of the last batch above their reconstructions (by the warm-up decoder
    in phase 1 and the conditional decoder in phase 2). At the end of training the latents of ``embedding_loader``
    go to TensorBoard's projector with their labels and thumbnails.

    Args:
        log_dir: TensorBoard log folder.
        num_images: images per grid row.
        interval: epochs between grids.
        embedding_loader: optional labelled loader whose latents are logged when training completes.
        max_embeddings: cap on the number of logged latents.
    """

    def __init__(
        self,
        log_dir: str,
        num_images: int = 8,
        interval: int = 1,
        embedding_loader: Iterable | None = None,
        max_embeddings: int = 1000,
    ) -> None:
        self.log_dir = log_dir
        self.num_images = num_images
        self.interval = interval
        self.embedding_loader = embedding_loader
        self.max_embeddings = max_embeddings
        self._writer: SummaryWriter | None = None

    @property
    def writer(self) -> SummaryWriter:
        if self._writer is None:
            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.log_reconstructions)
        engine.add_event_handler(Events.COMPLETED, self.log_embeddings)

    def log_reconstructions(self, engine: Engine) -> None:
        output = engine.state.output
        n = min(self.num_images, len(output["view"]))
        grid = image_grid([output["view"][:n], output["pred"][:n]])
        self.writer.add_image("reconstruction (top: input view, bottom: output)", grid, engine.state.epoch)
        self.writer.flush()

    def log_embeddings(self, engine: Engine) -> None:
        if self.embedding_loader is None:
            return
        engine.network.eval()
        features, labels = embed_dataset(engine.network.encode, self.embedding_loader, engine.state.device,
                                         progress=False)
        images = torch.cat([torch.as_tensor(b["image"]) for b in self.embedding_loader])
        keep = min(self.max_embeddings, len(features))
        thumbnails = images[:keep]
        if thumbnails.ndim == 5:
            thumbnails = thumbnails[..., thumbnails.shape[-1] // 2]
        self.writer.add_embedding(
            torch.from_numpy(features[:keep]),
            metadata=None if labels is None else labels[:keep].tolist(),
            label_img=thumbnails.float().clamp(0, 1),
            global_step=engine.state.epoch,
            tag="latent h",
        )
        self.writer.flush()
