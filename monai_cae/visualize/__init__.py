"""Figures of the paper as PNG files (mirrors ``monai.visualize``)."""

from __future__ import annotations

from .figures import (
    as_display_images,
    log_figure_to_tensorboard,
    plot_cluster_montage,
    plot_cluster_samples,
    plot_latent_tsne,
    plot_reconstructions,
)

__all__ = [
    "as_display_images",
    "log_figure_to_tensorboard",
    "plot_cluster_montage",
    "plot_cluster_samples",
    "plot_latent_tsne",
    "plot_reconstructions",
]
