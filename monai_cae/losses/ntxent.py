"""Numerically stable NT-Xent (normalised temperature-scaled cross-entropy) loss, optionally over all ranks' batches
and a queue of negatives from earlier batches, and optionally without negatives from the anchor's pseudo-class."""

from __future__ import annotations

from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as functional_collectives
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["NTXentLoss"]


class NTXentLoss(_Loss):
    """SimCLR's NT-Xent loss over a batch of positive pairs (Chen et al. 2020; Ferrante et al. 2022, Eq. 1).

    For ``2N`` projections (two views of ``N`` images) the loss of view ``i`` is
    ``-log(exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau))`` with ``j`` its positive and ``sim`` the
    cosine similarity; the result averages over all ``2N`` views.

    ``monai.losses.ContrastiveLoss`` computes the same quantity with an explicit ``exp``, which overflows and returns
    NaN for temperatures of 0.01 and below. This form feeds the scaled similarities to a log-softmax
    (``cross_entropy``), which subtracts the row maximum, so it stays finite for any positive temperature.

    Two options enlarge the set of negatives, the method's weak point being its need for large batches (SimCLR's
    quality grows with the number of negatives, Chen et al. 2020, Fig. 9):

    - ``gather_distributed``: under ``torch.distributed`` with several ranks, every rank's projections are gathered
      with a differentiable all-gather (``torch.distributed._functional_collectives.all_gather_single``, whose
      backward reduce-scatters the gradients to the rank that produced each row). Each rank scores its own ``2N``
      anchors against all ``2 N W`` candidates (``W`` ranks), so the mean of the ranks' losses, and with
      DistributedDataParallel's gradient averaging the update, equal the single-process loss over the global batch
      of ``N W`` pairs. Every rank must pass the same ``N`` (``DistributedSampler`` with ``drop_last=True``
      guarantees it).
    - ``queue_size``: a first-in-first-out queue (memory bank, as in MoCo, He et al. 2020) of the L2-normalised,
      detached first-view projections of the last ``queue_size`` images of earlier batches (all ranks' images with
      ``gather_distributed``), added to every anchor's denominator as negatives. There is no momentum encoder: the
      entries were produced by the encoder being trained, up to ``queue_size / N`` steps ago, so they are slightly
      stale. Features drift slowly once past the first iterations (Wang et al. 2020, "Cross-Batch Memory for
      Embedding Learning"), so keep the queue to a few dozen batches at most. The queue only
      grows while the module is in training mode, and is a buffer, so it is saved and restored with checkpoints.

    Cluster-aware negatives (``pseudo_labels`` in :meth:`forward`): instance discrimination treats every other image
    as a negative, so it pushes apart images that show the same thing. Cluster-guided contrastive pretraining
    ("Cluster-guided contrastive learning for medical image segmentation pretraining") assigns every image a
    pseudo-class by hierarchically clustering autoencoder features without supervision, and "prevents destructive
    interference ... by avoiding the selection of negatives from the same pseudo-class". Given one non-negative
    pseudo-class per pair, every candidate of the anchor's pseudo-class is dropped from its denominator (its logit is
    set to ``-inf`` before the log-softmax, so the form stays finite at any temperature), except the positive, which
    always stays. Distinct pseudo-classes for all pairs give exactly the plain loss; when all candidates share the
    anchor's pseudo-class the positive is the only term left, and that view's loss is exactly 0, with zero gradient.
    Pseudo-classes are gathered across ranks with the projections, and queued entries keep the pseudo-class they
    were enqueued with (``-1``, matching no anchor, when enqueued without one). A new clustering numbers its classes
    afresh, so empty the queue (:meth:`reset_queue`) whenever the pseudo-classes are recomputed;
    :class:`~monai_cae.handlers.PseudoClassHandler` does.

    Args:
        temperature: softmax temperature ``tau``; must be positive.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (one value per local view, ``(2N,)``).
        gather_distributed: score the anchors against the projections of all ranks (no effect without an
            initialised process group of more than one rank).
        queue_size: number of queued negatives; 0 disables the queue.

    Raises:
        ValueError: for a non-positive temperature, a negative queue size or an unknown reduction.
    """

    queue: torch.Tensor
    queue_labels: torch.Tensor

    def __init__(
        self,
        temperature: float = 0.5,
        reduction: LossReduction | str = LossReduction.MEAN,
        gather_distributed: bool = False,
        queue_size: int = 0,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if queue_size < 0:
            raise ValueError(f"queue_size must be non-negative, got {queue_size}.")
        self.temperature = float(temperature)
        self.gather_distributed = bool(gather_distributed)
        self.queue_size = int(queue_size)
        # the projection size is only known at the first call; the queue is oldest-first and at most queue_size long
        self.register_buffer("queue", torch.zeros(0, 0))
        # the pseudo-class of each queued row, -1 for rows enqueued without one
        self.register_buffer("queue_labels", torch.zeros(0, dtype=torch.long))

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, pseudo_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Compute the loss.

        Args:
            z1: ``(N, D)`` projections of the first views.
            z2: ``(N, D)`` projections of the second views; row ``i`` is the positive of ``z1[i]``.
            pseudo_labels: optional ``(N,)`` non-negative integer pseudo-class of each pair; candidates (other views,
                queued projections) of the anchor's pseudo-class are then left out of its denominator.

        Returns:
            The reduced loss, or ``(2N,)`` per-view losses with ``reduction="none"``.

        Raises:
            ValueError: when the inputs are not matching ``(N, D)`` matrices with ``N >= 2``, ``D`` differs from
                the queued projections', or ``pseudo_labels`` is not ``(N,)`` non-negative integers.
        """
        if z1.ndim != 2 or z1.shape != z2.shape:
            raise ValueError(f"z1 and z2 must be matching (N, D) matrices, got {tuple(z1.shape)} and {tuple(z2.shape)}.")
        n = z1.shape[0]
        if n < 2:
            raise ValueError(f"NT-Xent needs at least 2 pairs to have negatives, got a batch of {n}.")
        if self.queue.numel() and self.queue.shape[1] != z1.shape[1]:
            raise ValueError(f"projections have size {z1.shape[1]}, the queued ones {self.queue.shape[1]}.")
        if pseudo_labels is not None:
            if pseudo_labels.shape != (n,) or pseudo_labels.is_floating_point() or pseudo_labels.is_complex():
                raise ValueError(
                    f"pseudo_labels must be ({n},) integers, got {pseudo_labels.dtype} of shape "
                    f"{tuple(pseudo_labels.shape)}."
                )
            if bool((pseudo_labels < 0).any()):
                raise ValueError(f"pseudo_labels must be non-negative, got {pseudo_labels.min().item()}.")
            pseudo_labels = pseudo_labels.to(device=z1.device, dtype=torch.long)
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        anchors = torch.cat([z1, z2], dim=0)
        rank, world_size = (idist.get_rank(), idist.get_world_size()) if self.gather_distributed else (0, 1)
        if world_size > 1:
            # the differentiable gather torch 2.13 recommends (torch.distributed.nn.functional.all_gather is
            # deprecated); its backward sums every rank's gradient into the rank that produced the rows
            all_z1 = functional_collectives.all_gather_single(z1.contiguous(), 0, dist.group.WORLD)
            all_z2 = functional_collectives.all_gather_single(z2.contiguous(), 0, dist.group.WORLD)
            all_labels = (
                None
                if pseudo_labels is None
                else functional_collectives.all_gather_single(pseudo_labels.contiguous(), 0, dist.group.WORLD)
            )
        else:
            all_z1, all_z2, all_labels = z1, z2, pseudo_labels
        total = all_z1.shape[0]
        # candidates are [all first views; all second views]; this rank's pairs start at rank * n in each half
        own = torch.arange(n, device=z1.device) + rank * n
        self_index = torch.cat([own, own + total])
        positives = torch.cat([own + total, own])
        logits = anchors @ torch.cat([all_z1, all_z2]).t() / self.temperature
        logits = logits.scatter(1, self_index[:, None], float("-inf"))
        if all_labels is not None:
            anchor_labels = torch.cat([pseudo_labels, pseudo_labels])[:, None]
            same_class = anchor_labels == torch.cat([all_labels, all_labels])[None, :]
            # the positive shares the anchor's pseudo-class by construction and must stay in the numerator
            same_class = same_class.scatter(1, positives[:, None], False)
            logits = logits.masked_fill(same_class, float("-inf"))
        if self.queue.numel():
            # queued negatives only add to the denominators: the targets index the batch columns, which come first
            queued = anchors @ self.queue.to(anchors.dtype).t() / self.temperature
            if all_labels is not None:
                queued_labels = self.queue_labels.to(anchors.device)[None, :]
                queued = queued.masked_fill(anchor_labels == queued_labels, float("-inf"))
            logits = torch.cat([logits, queued], dim=1)
        loss = F.cross_entropy(logits, positives, reduction=self.reduction)
        if self.training and self.queue_size:
            self._enqueue(all_z1.detach(), all_labels)
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor, labels: torch.Tensor | None) -> None:
        keys = keys.float()
        labels = torch.full((len(keys),), -1, dtype=torch.long, device=keys.device) if labels is None else labels
        if self.queue.numel():
            keys = torch.cat([self.queue.to(keys.device), keys])
            labels = torch.cat([self.queue_labels.to(keys.device), labels])
        # copies, so the queue does not keep the whole gathered batch alive through a view
        self.queue = keys[-self.queue_size :].clone()
        self.queue_labels = labels[-self.queue_size :].clone()

    def reset_queue(self) -> None:
        """Empty the queue of negatives."""
        self.queue = torch.zeros(0, 0, device=self.queue.device)
        self.queue_labels = torch.zeros(0, dtype=torch.long, device=self.queue_labels.device)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # the queue's length and width depend on the run that saved it: adopt them before the strict shape check
        incoming = state_dict.get(prefix + "queue")
        if incoming is not None and prefix + "queue_labels" not in state_dict:
            # checkpoints written before pseudo-classes existed: their queued rows have none
            state_dict[prefix + "queue_labels"] = torch.full((len(incoming),), -1, dtype=torch.long)
        for name in ("queue", "queue_labels"):
            incoming = state_dict.get(prefix + name)
            if incoming is not None and incoming.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(incoming, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
