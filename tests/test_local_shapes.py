"""The local branch recovers the regions of generated images with known structure (Chen et al., "Unsupervised
learning of local discriminative representation for medical images"): textured shapes, no labels in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from monai_cae.losses import LocalDiscriminationLoss
from monai_cae.networks.nets import ContrastiveAutoEncoder

SIZE = 28
# measured after 400 steps (about 10 s a seed on one thread): mean IoU 0.753 / 0.753 / 0.751 for seeds 0 / 1 / 2,
# against 0.444 / 0.177 / 0.175 for the untrained branch; 200 steps reach 0.721 / 0.754 / 0.614
MIN_MEAN_IOU = 0.7


def textured_shapes(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Images of a flat background (0.2), a full-height band of Gaussian noise (mean 0.75, std 0.12) and a disc of
    vertical stripes (period 4 px, 0.15-0.85, random phase) on top, at random places; their region maps (0, 1, 2).

    The stripes span the band's and the background's grey levels, so a pixel's own value does not tell its region:
    its neighbourhood's texture does.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = np.full((n, 1, SIZE, SIZE), 0.2, np.float32)
    regions = np.zeros((n, SIZE, SIZE), np.int64)
    for i in range(n):
        width = rng.integers(9, 13)
        x0 = rng.integers(0, SIZE - width)
        band = (xx >= x0) & (xx < x0 + width)
        cy, cx = rng.uniform(8, SIZE - 8, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(6, 8) ** 2
        noise = 0.75 + 0.12 * rng.standard_normal((SIZE, SIZE))
        stripes = 0.5 + 0.35 * np.sin(2 * np.pi * xx / 4 + rng.uniform(0, 2 * np.pi))
        images[i, 0][band], regions[i][band] = noise[band], 1
        images[i, 0][disc], regions[i][disc] = stripes[disc], 2
    return torch.from_numpy(np.clip(images, 0, 1)), regions


def matched_mean_iou(pred: np.ndarray, truth: np.ndarray, num_regions: int, num_clusters: int) -> float:
    """Mean IoU over the regions after the Hungarian matching of clusters to regions (unmatched regions score 0)."""
    iou = np.zeros((num_regions, num_clusters))
    for r in range(num_regions):
        for k in range(num_clusters):
            union = ((truth == r) | (pred == k)).sum()
            iou[r, k] = ((truth == r) & (pred == k)).sum() / max(union, 1)
    rows, cols = linear_sum_assignment(-iou)
    return float(iou[rows, cols].sum() / num_regions)


def test_matched_mean_iou_reference() -> None:
    truth = np.array([[0, 0, 1, 1]])
    assert matched_mean_iou(np.array([[1, 1, 0, 0]]), truth, 2, 2) == 1.0  # cluster names do not matter
    assert matched_mean_iou(np.array([[0, 0, 0, 0]]), truth, 2, 2) == pytest.approx(0.25)  # (0.5 + 0) / 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_local_branch_recovers_textured_regions(one_thread, seed: int) -> None:
    torch.manual_seed(seed)
    train_images, _ = textured_shapes(256, seed)
    test_images, test_regions = textured_shapes(64, seed + 100)
    network = ContrastiveAutoEncoder(img_size=SIZE, local_branch=True, local_clusters=3, local_embedding_dim=8)
    loss = LocalDiscriminationLoss(num_pixels=512)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    with torch.no_grad():
        before = matched_mean_iou(network.cluster_map(test_images).numpy(), test_regions, 3, 3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(400):
        batch = train_images[torch.randint(len(train_images), (32,), generator=generator)]
        optimizer.zero_grad()
        loss(*network.local(batch))["total"].backward()
        optimizer.step()
    with torch.no_grad():
        after = matched_mean_iou(network.cluster_map(test_images).numpy(), test_regions, 3, 3)
    print(f"mean IoU before {before:.3f}, after {after:.3f}")
    assert after > MIN_MEAN_IOU, f"mean IoU {after:.3f} (untrained {before:.3f})"
    assert after > before + 0.2
