"""The network computation of one training iteration, as a single module call that DistributedDataParallel can wrap."""

from __future__ import annotations

import torch
from torch import nn

from monai_cae.networks.nets import ContrastiveAutoEncoder

__all__ = ["CAEStep"]


class CAEStep(nn.Module):
    """Forward pass of one :class:`~monai_cae.engines.CAETrainer` iteration, in either phase (Ferrante et al. 2022,
    Algorithm 1).

    ``torch.nn.parallel.DistributedDataParallel`` all-reduces gradients only for computations that go through its
    own ``forward``, once per backward pass. The trainer needs two network calls per phase-1 iteration and, in
    phase 2, the encoder and the conditional decoder instead of ``forward``, so this module packs each phase's
    calls into one ``forward``; wrap it (not the network) in DDP, with ``find_unused_parameters=True`` because each
    phase leaves the other phase's parameters out of the graph. Globally unused parameters keep ``None`` gradients,
    so the optimizer leaves them untouched as in a single-process run.

    Args:
        network: the contrastive autoencoder; it stays reachable, unwrapped, as :attr:`network`.
    """

    def __init__(self, network: ContrastiveAutoEncoder) -> None:
        super().__init__()
        self.network = network

    def forward(
        self, view1: torch.Tensor, view2: torch.Tensor, phase: int, image: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, ...]:
        """Run one phase's computation on both views.

        Args:
            view1: first views.
            view2: second views.
            phase: 1 (encoder, projector and decoder trained) or 2 (frozen encoder, conditional decoder trained).
            image: in phase 1, the un-augmented images for the network's local branch
                (:meth:`~monai_cae.networks.nets.ContrastiveAutoEncoder.local`); ignored in phase 2.

        Returns:
            ``(z1, z2, y1, y2)``: projections (``None`` in phase 2) and reconstructions of both views; in phase 1 with
            ``image``, followed by the local branch's pixel ``embedding`` and ``similarity`` maps.

        Raises:
            ValueError: for a phase other than 1 or 2.
        """
        if phase == 1:
            h1, h2 = self.network(view1), self.network(view2)
            z1, z2 = self.network.project(h1), self.network.project(h2)
            y1, y2 = self.network.decode(h1), self.network.decode(h2)
            if image is not None:
                return z1, z2, y1, y2, *self.network.local(image)
            return z1, z2, y1, y2
        if phase != 2:
            raise ValueError(f"phase must be 1 or 2, got {phase}.")
        with torch.no_grad():
            h1, h2 = self.network.encode(view1), self.network.encode(view2)
        return None, None, self.network.decode_conditional(h1), self.network.decode_conditional(h2)
