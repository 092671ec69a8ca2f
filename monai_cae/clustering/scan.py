"""A clustering head learned on the frozen latent: neighbour consistency, then self-labelling (SCAN).

Van Gansbeke et al. 2020, "SCAN: Learning to Classify Images without Labels" (ECCV): a head maps each sample to a
distribution over ``k`` clusters. Its first loss makes a sample and its nearest neighbours in the latent agree,
while an entropy term on the mean assignment keeps every cluster in use. Self-labelling then trains the head with
cross-entropy on its own confident predictions, which sharpens the clusters and corrects neighbours that crossed a
class boundary. Here the backbone stays frozen (the encoder of the contrastive autoencoder), so the head sees the
fixed latent, and the input noise of self-labelling stands in for SCAN's strong image augmentations.
"""

from __future__ import annotations

import copy
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SCANHead", "fit_scan_head", "nearest_neighbours"]


def nearest_neighbours(data: np.ndarray, count: int, chunk: int = 4096) -> np.ndarray:
    """Indices of each row's ``count`` most cosine-similar other rows, ``(N, count)``, computed in row chunks.

    Raises:
        ValueError: when ``count`` is not in ``[1, N - 1]``.
    """
    if not 1 <= count < len(data):
        raise ValueError(f"count must be in [1, N - 1] with N={len(data)}, got {count}.")
    bank = F.normalize(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), dim=1)
    out = []
    for start in range(0, len(bank), chunk):
        similarity = bank[start:start + chunk] @ bank.T
        rows = torch.arange(start, start + len(similarity))
        similarity[torch.arange(len(similarity)), rows] = -float("inf")  # a row is not its own neighbour
        out.append(similarity.topk(count, dim=1).indices)
    return torch.cat(out).numpy()


class SCANHead(nn.Module):
    """Several independent two-layer heads; the one of lowest SCAN loss is kept (SCAN trains ten, Sec. 3.2).

    Args:
        in_features: latent dimension.
        k: number of clusters.
        heads: number of heads trained side by side.
        hidden: width of the hidden layer.
    """

    def __init__(self, in_features: int, k: int, heads: int = 5, hidden: int = 512) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, k))
            for _ in range(heads)
        )
        self.best = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(heads, N, k)`` logits of every head."""
        return torch.stack([head(x) for head in self.heads])

    @torch.no_grad()
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``(N, k)`` cluster probabilities of the kept head for L2-normalised rows."""
        self.eval()
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        return F.softmax(self.heads[self.best](x), dim=1).numpy()


def _scan_loss(logits: torch.Tensor, neighbour_logits: torch.Tensor, entropy_weight: float) -> torch.Tensor:
    """Per-head SCAN loss, ``(heads,)``: ``-log <p_i, p_j>`` over neighbour pairs minus the entropy of the mean."""
    p, q = F.softmax(logits, dim=-1), F.softmax(neighbour_logits, dim=-1)
    consistency = -torch.log((p * q).sum(-1).clamp_min(1e-8)).mean(-1)
    mean = p.mean(1)
    entropy = -(mean * torch.log(mean.clamp_min(1e-8))).sum(-1)
    return consistency - entropy_weight * entropy


def fit_scan_head(
    data: np.ndarray,
    k: int,
    seed: int = 0,
    n_neighbors: int = 20,
    entropy_weight: float = 5.0,
    epochs: int = 50,
    self_label_epochs: int = 25,
    confidence: float = 0.99,
    noise: float = 0.1,
    heads: int = 5,
    batch_size: int = 256,
    lr: float = 1e-3,
) -> tuple[np.ndarray, SCANHead]:
    """Train a :class:`SCANHead` on fixed rows and return the clusters of its best head.

    Args:
        data: ``(N, D)`` rows (L2-normalised latents).
        k: number of clusters.
        seed: seed of the initialisation, the batches and the neighbour draws.
        n_neighbors: neighbours mined per row; one of them is drawn per row and step.
        entropy_weight: weight of the entropy of the mean assignment (SCAN's 5.0).
        epochs: epochs of the neighbour-consistency phase.
        self_label_epochs: epochs of self-labelling on confident rows (0 skips it).
        confidence: probability above which a row's prediction becomes its pseudo-label.
        noise: standard deviation of the Gaussian noise added to a row's direction in self-labelling, relative
            to the rows' mean per-axis spread.
        heads: heads trained side by side.
        batch_size: rows per step.
        lr: Adam learning rate.

    Returns:
        ``(labels, head)``: the ``(N,)`` clusters and the trained head.

    Raises:
        ValueError: for an ``entropy_weight`` or ``noise`` below 0, a ``confidence`` outside ``(0, 1)``, or fewer
            than one epoch, head or row per batch.
    """
    if entropy_weight < 0 or noise < 0:
        raise ValueError(f"entropy_weight and noise must be >= 0, got {entropy_weight} and {noise}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    if min(epochs, heads, batch_size) < 1 or self_label_epochs < 0:
        raise ValueError(f"epochs, heads and batch_size must be >= 1 and self_label_epochs >= 0, got {epochs}, "
                         f"{heads}, {batch_size} and {self_label_epochs}.")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    neighbours = torch.from_numpy(nearest_neighbours(data, min(n_neighbors, len(data) - 1)))
    head = SCANHead(x.shape[1], k, heads)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    batch_size = min(batch_size, len(x))

    def batches():
        order = torch.randperm(len(x), generator=generator)
        # a last batch of one row would break BatchNorm; it is merged into the batch before it
        return [order[i:i + batch_size] for i in range(0, len(order) - batch_size // 2, batch_size)] or [order]

    head.train()
    for _ in range(epochs):
        for rows in batches():
            drawn = neighbours[rows, torch.randint(neighbours.shape[1], (len(rows),), generator=generator)]
            loss = _scan_loss(head(x[rows]), head(x[drawn]), entropy_weight).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    head.eval()
    with torch.no_grad():
        drawn = neighbours[:, 0]
        head.best = int(torch.argmin(_scan_loss(head(x), head(x[drawn]), entropy_weight)))
    if self_label_epochs:
        _self_label(head, x, batches, generator, self_label_epochs, confidence, noise, optimizer)
    return np.argmax(head.predict_proba(data), axis=1), head


def _self_label(head, x, batches, generator, epochs, confidence, noise, optimizer) -> None:
    """Cross-entropy on confident pseudo-labels; stops, and restores the head it started from, when a cluster empties.

    Pseudo-labels of a cluster with few confident rows carry little weight, so on an imbalanced latent (as on
    PneumoniaMNIST, 3 pneumonia to 1 normal) self-labelling can let the dominant cluster absorb a small one.
    """
    best = head.heads[head.best]
    scale = noise * float(x.std(0).mean())

    def clusters_in_use() -> int:
        best.eval()
        with torch.no_grad():
            return len(torch.unique(best(x).argmax(1)))

    in_use, start = clusters_in_use(), copy.deepcopy(best.state_dict())
    for _ in range(epochs):
        best.eval()
        with torch.no_grad():
            probabilities = F.softmax(best(x), dim=1)
        top, pseudo = probabilities.max(1)
        confident = top > confidence
        if not confident.any():
            return
        # classes weighted by inverse frequency among confident rows, so a dominant cluster does not absorb others
        counts = torch.bincount(pseudo[confident], minlength=probabilities.shape[1]).float()
        weight = torch.where(counts > 0, counts.sum() / counts.clamp_min(1) / (counts > 0).sum(), 0.0)
        best.train()
        for rows in batches():
            rows = rows[confident[rows]]
            if len(rows) < 2:
                continue
            perturbed = x[rows] + scale * torch.randn(x[rows].shape, generator=generator)
            loss = F.cross_entropy(best(perturbed), pseudo[rows], weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if clusters_in_use() < in_use:
            best.load_state_dict(start)
            return
