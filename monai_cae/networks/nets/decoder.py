"""Decoder of the contrastive autoencoder, symmetric to the encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer
from torch import nn

from .encoder import check_layout, encoder_feature_shapes

__all__ = ["CAEDecoder"]


class CAEDecoder(nn.Module):
    """Decoder ``d`` of the contrastive autoencoder: a linear layer and transposed convolutions.

    It mirrors :class:`CAEEncoder` (Ferrante et al. 2022, Sec. 2): a linear layer maps ``h`` to the encoder's last
    feature map (the shape before pooling, so that spatial detail does not have to be regrown from a pooled vector),
    then one stride-2 transposed convolution per encoder convolution restores the resolution. Output padding is
    chosen per layer so that odd sizes (28 -> 14 -> 7 -> 3) are reproduced exactly.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        out_channels: number of image channels to reconstruct.
        img_size: image spatial size (one int, or one per dimension).
        channels: the encoder's channels, in encoder order; the decoder runs them in reverse.
        latent_size: size of the input vector.
        kernel_size: transposed-convolution kernel size.
        strides: transposed-convolution stride.
        pool_size: the encoder's pooling size (only used to validate ``img_size`` the same way).
        act: activation after the linear layer and every transposed convolution but the last.
        norm: optional normalisation after each hidden transposed convolution.
        out_act: optional activation on the output, for example ``"SIGMOID"`` for images in [0, 1].

    Raises:
        ValueError: for unsupported ``spatial_dims``, empty ``channels`` or an ``img_size`` too small.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        out_channels: int = 1,
        img_size: Sequence[int] | int = 28,
        channels: Sequence[int] = (32, 64, 128),
        latent_size: int = 128,
        kernel_size: int = 4,
        strides: int = 2,
        pool_size: int = 2,
        act: tuple | str = "GELU",
        norm: tuple | str | None = None,
        out_act: tuple | str | None = None,
    ) -> None:
        super().__init__()
        check_layout(spatial_dims, channels, out_channels, latent_size)
        self.spatial_dims = spatial_dims
        self.latent_size = latent_size
        shapes, _ = encoder_feature_shapes(img_size, spatial_dims, len(channels), kernel_size, strides, pool_size)
        self.img_size: list[int] = list(shapes[0])
        self.feature_shape: list[int] = [channels[-1], *shapes[-1]]
        self.fc = nn.Sequential(nn.Linear(latent_size, int(torch.tensor(self.feature_shape).prod())), get_act_layer(act))

        padding = (kernel_size - 1) // 2
        targets = list(reversed(shapes[:-1]))
        in_chans = list(reversed(channels))
        out_chans = in_chans[1:] + [out_channels]
        layers: list[nn.Module] = []
        current = shapes[-1]
        for i, (target, cin, cout) in enumerate(zip(targets, in_chans, out_chans)):
            natural = [(c - 1) * strides - 2 * padding + kernel_size for c in current]
            output_padding = [t - n for t, n in zip(target, natural)]
            last = i == len(targets) - 1
            layers.append(
                Convolution(
                    spatial_dims,
                    cin,
                    cout,
                    strides=strides,
                    kernel_size=kernel_size,
                    act=None if last else act,
                    norm=None if last else norm,
                    is_transposed=True,
                    padding=padding,
                    output_padding=output_padding,
                    conv_only=last,
                )
            )
            current = target
        if out_act is not None:
            layers.append(get_act_layer(out_act))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Decode latent vectors.

        Args:
            h: latent vectors of shape ``(B, latent_size)``.

        Returns:
            Images of shape ``(B, out_channels, *img_size)``.

        Raises:
            ValueError: when ``h`` is not ``(B, latent_size)``.
        """
        if h.ndim != 2 or h.shape[1] != self.latent_size:
            raise ValueError(f"expected latent of shape (B, {self.latent_size}), got {h.shape}.")
        features = self.fc(h).view([h.shape[0]] + self.feature_shape)
        return self.deconvs(features)
