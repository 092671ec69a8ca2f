"""Clustering loss of the local branch: pixels to their centre, with a balance term against collapse."""

from __future__ import annotations

import math

import torch
from torch.nn.modules.loss import _Loss

__all__ = ["LocalClusteringLoss"]


class LocalClusteringLoss(_Loss):
    """Soft-assignment clustering of pixel embeddings on learnable unit centres (Chen et al., "Unsupervised learning
    of local discriminative representation for medical images", clustering branch).

    With ``s_ik`` the cosine similarity of pixel ``i`` to centre ``k`` and ``q_ik = softmax_k(s_ik / tau)`` its soft
    assignment:

    - compactness ``1 - mean_i sum_k q_ik s_ik`` (in [0, 2]) pulls every pixel towards the centres it is assigned to,
      and the centres towards their pixels, and sharpens the assignment;
    - balance ``log K + sum_k q_k log q_k`` with ``q_k = mean_i q_ik`` (the KL divergence of the batch's cluster
      usage from uniform, in [0, log K]) is zero when every centre takes an equal share of the batch's pixels and
      ``log K`` when all pixels fall in one cluster, the trivial solution compactness alone would reach.

    The balance term is a prior of equal cluster sizes over a batch; regions of unequal area pull it above zero at
    the optimum, which ``balance_weight`` trades against compactness.

    Args:
        temperature: softmax temperature ``tau`` of the soft assignment.
        balance_weight: weight of the balance term.

    Raises:
        ValueError: for a non-positive temperature or a negative ``balance_weight``.
    """

    def __init__(self, temperature: float = 0.1, balance_weight: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if balance_weight < 0:
            raise ValueError(f"balance_weight must be non-negative, got {balance_weight}.")
        self.temperature = float(temperature)
        self.balance_weight = float(balance_weight)

    def forward(self, similarity: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            similarity: ``(B, K, *spatial)`` cosine similarities of the pixels to the ``K >= 2`` centres.

        Returns:
            ``{"compactness", "balance", "total"}`` scalars, ``total = compactness + balance_weight * balance``.

        Raises:
            ValueError: when ``similarity`` is not ``(B, K, *spatial)`` with ``K >= 2``.
        """
        if similarity.ndim < 3 or similarity.shape[1] < 2:
            raise ValueError(f"expected similarities (B, K >= 2, *spatial), got {tuple(similarity.shape)}.")
        similarity = similarity.float()
        q = torch.softmax(similarity / self.temperature, dim=1)
        compactness = 1.0 - (q * similarity).sum(1).mean()
        usage = q.movedim(1, -1).reshape(-1, similarity.shape[1]).mean(0)
        balance = math.log(similarity.shape[1]) + torch.special.xlogy(usage, usage).sum()
        return {"compactness": compactness, "balance": balance, "total": compactness + self.balance_weight * balance}
