"""Projection head ``p`` that maps the latent ``h`` to the space where the contrastive loss is computed."""

from __future__ import annotations

from monai.networks.layers.utils import get_act_layer
from torch import nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Sequential):
    """Multilayer perceptron projector ``z = p(h)`` (SimCLR, Chen et al. 2020; Ferrante et al. 2022, Sec. 2).

    The paper uses three layers. Every layer but the last is followed by the activation.

    Args:
        in_features: size of ``h``.
        hidden_features: width of the hidden layers.
        out_features: size of ``z``.
        num_layers: number of linear layers (at least 1).
        act: activation between layers (MONAI ``Act`` factory name or tuple).

    Raises:
        ValueError: for non-positive sizes or ``num_layers < 1``.
    """

    def __init__(
        self,
        in_features: int = 128,
        hidden_features: int = 128,
        out_features: int = 64,
        num_layers: int = 3,
        act: tuple | str = "GELU",
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        if min(in_features, hidden_features, out_features) < 1:
            raise ValueError(
                f"feature sizes must be positive, got in={in_features}, hidden={hidden_features}, out={out_features}."
            )
        sizes = [in_features] + [hidden_features] * (num_layers - 1) + [out_features]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < num_layers - 1:
                layers.append(get_act_layer(act))
        super().__init__(*layers)

