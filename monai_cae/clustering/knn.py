"""k-nearest-neighbour classification in an embedding space."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["knn_votes"]


def knn_votes(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int = 5,
    num_classes: int | None = None,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Votes of the ``k`` nearest memory-bank entries (cosine similarity) for each query.

    Ferrante et al. 2022, evaluation (b): "each sample of the test set is compared with every element stored in the
    memory bank ... The predicted label is then defined as the mode of the labels of the k closest samples (in our
    case k = 5)". Ties in the mode go to the lowest class index (``argmax`` of the votes).

    Args:
        bank: ``(M, D)`` memory-bank features.
        bank_labels: ``(M,)`` integer labels in ``[0, num_classes)``.
        queries: ``(N, D)`` query features.
        k: number of neighbours, ``1 <= k <= M``.
        num_classes: number of classes; ``bank_labels.max() + 1`` when omitted.
        chunk_size: queries processed at once, to bound memory.

    Returns:
        ``(N, num_classes)`` vote counts; ``argmax(1)`` is the prediction.

    Raises:
        ValueError: for mismatched shapes, negative labels or an invalid ``k``.
    """
    if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
        raise ValueError(f"bank and queries must be (M, D) and (N, D), got {tuple(bank.shape)}, {tuple(queries.shape)}.")
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError(f"bank_labels must be ({bank.shape[0]},), got {tuple(bank_labels.shape)}.")
    if bank_labels.numel() and int(bank_labels.min()) < 0:
        raise ValueError("bank_labels must be non-negative class indices; unlabelled samples (-1) cannot vote.")
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k must be in [1, {bank.shape[0]}], got {k}.")
    num_classes = int(bank_labels.max()) + 1 if num_classes is None else num_classes
    bank = F.normalize(bank.float(), dim=1)
    labels = bank_labels.long().to(bank.device)
    votes = []
    for start in range(0, queries.shape[0], chunk_size):
        chunk = F.normalize(queries[start : start + chunk_size].float().to(bank.device), dim=1)
        neighbours = (chunk @ bank.t()).topk(k, dim=1).indices
        votes.append(F.one_hot(labels[neighbours], num_classes).sum(1))
    return torch.cat(votes) if votes else torch.zeros(0, num_classes, dtype=torch.long)
