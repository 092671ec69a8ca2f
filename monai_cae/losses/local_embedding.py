"""Pixel-level contrastive loss of the local embedding branch: neighbouring pixels together, others apart."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["LocalEmbeddingLoss", "sample_neighbour_pairs"]


def sample_neighbour_pairs(
    shape: Sequence[int],
    num_pixels: int,
    radius: int = 1,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random anchor pixels and, for each, a random other pixel of its neighbourhood in the same image.

    Anchors are drawn uniformly (with replacement) over the batch and the image. The neighbour is at an offset drawn
    uniformly from the non-zero offsets of the ``(2 radius + 1)^d`` cube; an offset leaving the image is mirrored
    (``-offset``), so border pixels keep a real neighbour instead of being clamped onto themselves.

    Args:
        shape: ``(B, *spatial)``: batch size then the spatial size.
        num_pixels: number of anchors.
        radius: neighbourhood radius in pixels (Chebyshev distance).
        device: device of the returned indices.
        generator: optional random generator (on ``device``), for reproducible draws.

    Returns:
        ``(anchors, positives)``: ``(num_pixels,)`` int64 indices into the flattened ``B * prod(spatial)`` pixels.

    Raises:
        ValueError: for fewer than one spatial dimension, a non-positive ``num_pixels`` or ``radius``, or an image
            with fewer than two pixels.
    """
    batch, spatial = int(shape[0]), [int(s) for s in shape[1:]]
    if len(spatial) == 0 or batch < 1 or min(spatial) < 1:
        raise ValueError(f"shape must be (B, *spatial) with positive sizes, got {tuple(shape)}.")
    if num_pixels < 1 or radius < 1:
        raise ValueError(f"num_pixels and radius must be positive, got {num_pixels} and {radius}.")
    if max(spatial) < 2:
        raise ValueError(f"an image of spatial size {spatial} has no neighbouring pixels.")
    dims = len(spatial)
    side = 2 * radius + 1
    batch_index = torch.randint(batch, (num_pixels,), device=device, generator=generator)
    coords = torch.stack([torch.randint(s, (num_pixels,), device=device, generator=generator) for s in spatial], 1)
    # an index over the side^d - 1 non-zero offsets: skipping the centre code maps it to a non-zero offset
    code = torch.randint(side**dims - 1, (num_pixels,), device=device, generator=generator)
    code = code + (code >= (side**dims - 1) // 2).long()
    offsets = torch.stack([(code // side**k) % side - radius for k in reversed(range(dims))], 1)
    sizes = torch.tensor(spatial, device=device)
    moved = coords + offsets
    outside = (moved < 0) | (moved >= sizes)
    # mirrored, then clamped for images narrower than the radius (where even the mirror may fall outside)
    moved = torch.where(outside, coords - offsets, moved)
    moved = torch.minimum(moved.clamp_min(0), sizes - 1)
    strides = [1] * dims
    for k in reversed(range(dims - 1)):
        strides[k] = strides[k + 1] * spatial[k + 1]
    stride = torch.tensor(strides, device=device)
    per_image = int(torch.tensor(spatial).prod())
    anchors = batch_index * per_image + (coords * stride).sum(1)
    positives = batch_index * per_image + (moved * stride).sum(1)
    return anchors, positives


class LocalEmbeddingLoss(_Loss):
    """Local discrimination on the pixel hypersphere (Chen et al., "Unsupervised learning of local discriminative
    representation for medical images", embedding branch).

    Pixels close in space usually belong to the same tissue, so each sampled anchor pixel's positive is a random
    neighbour within ``radius`` in the same image, and its negatives are the positives of all other anchors of the
    batch (other places, other images). With ``a_i``, ``p_i`` the L2-normalised embeddings the loss is the symmetric
    InfoNCE ``0.5 * (CE(A P^T / tau) + CE(P A^T / tau))`` with the diagonal as target: neighbours are pulled
    together and all other pixels are spread over the sphere. The scaled similarities go through a log-softmax
    (``cross_entropy``), which is finite at any positive temperature.

    Why neighbours in one un-augmented image and not the same pixel in two augmented views: the image-level views
    are geometrically different (rotation, rescaled crop, flip), so the pixel correspondence between them would need
    the exact inverse warp, with interpolation and pixels that exist in one view only. A neighbour in the same image
    is an exact correspondence, and it also teaches invariance to small translations.

    Args:
        temperature: softmax temperature ``tau``.
        num_pixels: anchors sampled per call, over the whole batch (the cost is quadratic in it).
        radius: neighbourhood radius of the positives, in pixels.

    Raises:
        ValueError: for a non-positive temperature, ``num_pixels`` below 2 or a non-positive radius.
    """

    def __init__(self, temperature: float = 0.1, num_pixels: int = 1024, radius: int = 1) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if num_pixels < 2 or radius < 1:
            raise ValueError(f"num_pixels must be at least 2 and radius positive, got {num_pixels} and {radius}.")
        self.temperature = float(temperature)
        self.num_pixels = num_pixels
        self.radius = radius

    def forward(
        self,
        embedding: torch.Tensor,
        pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            embedding: ``(B, D, *spatial)`` pixel embeddings (normalised again here).
            pairs: optional ``(anchors, positives)`` flat pixel indices, as from :func:`sample_neighbour_pairs`;
                drawn with the global random generator when omitted.

        Returns:
            The scalar loss.

        Raises:
            ValueError: when ``embedding`` has no spatial dimension, or ``pairs`` differ in length.
        """
        if embedding.ndim < 3:
            raise ValueError(f"expected embeddings (B, D, *spatial), got {tuple(embedding.shape)}.")
        if pairs is None:
            shape = (embedding.shape[0], *embedding.shape[2:])
            pairs = sample_neighbour_pairs(shape, self.num_pixels, self.radius, embedding.device)
        anchors, positives = pairs
        if anchors.shape != positives.shape or anchors.ndim != 1:
            raise ValueError(f"anchors and positives must be equal-length 1D, got {anchors.shape}, {positives.shape}.")
        flat = embedding.movedim(1, -1).reshape(-1, embedding.shape[1])
        a = F.normalize(flat[anchors].float(), dim=1)
        p = F.normalize(flat[positives].float(), dim=1)
        logits = a @ p.t() / self.temperature
        target = torch.arange(len(anchors), device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
