"""TensorBoard logging of what the loss curves cannot show: reconstructions and the latent space."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from ignite.engine import Engine, Events
from monai.handlers import TensorBoardHandler
from monai.transforms import rescale_array
from monai.visualize import plot_2d_or_3d_image
from torch.utils.tensorboard import SummaryWriter

from monai_cae.inference.embedding import embed_dataset

__all__ = ["TensorBoardCAEHandler", "image_grid"]


def _middle_slice(images: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W, D)`` volumes at the middle slice of their last axis; 2D batches unchanged."""
    return images[..., images.shape[-1] // 2] if images.ndim == 5 else images


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
    tiles = [rescale_array(_middle_slice(row.detach().float().cpu()), 0.0, 1.0) for row in rows]
    return torch.cat([torch.cat(list(row), dim=-1) for row in tiles], dim=-2)


class TensorBoardCAEHandler(TensorBoardHandler):
    """Logs input/reconstruction grids every few epochs and the latent space to the embedding projector.

    The grid shows the first augmented views of the last batch above their reconstructions (by the warm-up decoder
    in phase 1 and the conditional decoder in phase 2), written by :func:`monai.visualize.plot_2d_or_3d_image` under
    the tag ``"reconstruction (top: input view, bottom: output)_HW_0"`` (``..._CHW`` for RGB images). At the end of
    training the latents of ``embedding_loader`` go to TensorBoard's projector (tag ``"latent h"``) with their labels
    and thumbnails.

    Like MONAI's TensorBoard handlers, it writes with ``summary_writer`` when given (so that every handler of a
    run shares one event file; its owner closes it), else with a writer of its own on ``log_dir``, which
    :meth:`close` closes.

    Args:
        summary_writer: TensorBoard writer to log with; default: a new one on ``log_dir``.
        log_dir: TensorBoard log folder when no ``summary_writer`` is given.
        num_images: images per grid row.
        interval: epochs between grids.
        embedding_loader: optional labelled loader whose latents are logged when training completes.
        max_embeddings: cap on the number of logged latents.
    """

    def __init__(
        self,
        summary_writer: SummaryWriter | None = None,
        log_dir: str = "./runs",
        num_images: int = 8,
        interval: int = 1,
        embedding_loader: Iterable | None = None,
        max_embeddings: int = 1000,
    ) -> None:
        super().__init__(summary_writer=summary_writer, log_dir=log_dir)
        self.num_images = num_images
        self.interval = interval
        self.embedding_loader = embedding_loader
        self.max_embeddings = max_embeddings

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.log_reconstructions)
        engine.add_event_handler(Events.COMPLETED, self.log_embeddings)

    def log_reconstructions(self, engine: Engine) -> None:
        output = engine.state.output
        n = min(self.num_images, len(output["view"]))
        grid = image_grid([output["view"][:n], output["pred"][:n]])
        # up to 3 channels, so that RGB inputs stay one colour image
        plot_2d_or_3d_image(grid[None], engine.state.epoch, self._writer, max_channels=3,
                            tag="reconstruction (top: input view, bottom: output)")
        self._writer.flush()

    def log_embeddings(self, engine: Engine) -> None:
        if self.embedding_loader is None:
            return
        engine.network.eval()
        features, labels, images = embed_dataset(
            engine.network.encode, self.embedding_loader, engine.state.device, progress=False, return_images=True
        )
        keep = min(self.max_embeddings, len(features))
        self._writer.add_embedding(
            torch.from_numpy(features[:keep]),
            metadata=None if labels is None else labels[:keep].tolist(),
            label_img=_middle_slice(torch.from_numpy(images[:keep])).float().clamp(0, 1),
            global_step=engine.state.epoch,
            tag="latent h",
        )
        self._writer.flush()
