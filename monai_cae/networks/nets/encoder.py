"""Convolutional encoder of the contrastive autoencoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from monai.utils import ensure_tuple_rep
from torch import nn

__all__ = ["CAEEncoder", "check_layout", "encoder_channels", "encoder_feature_shapes"]

PUBLISHED_CHANNELS = (32, 64, 128)
"""The channels of the published network's three strided convolutions (Ferrante et al. 2022, Sec. 2)."""


def check_layout(spatial_dims: int, channels: Sequence[int], image_channels: int, latent_size: int) -> None:
    """Validate the arguments the encoder and the decoder share.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: channels of the strided convolutions.
        image_channels: channels of the image the network reads or writes.
        latent_size: size of the latent vector.

    Raises:
        ValueError: for unsupported ``spatial_dims``, empty or non-positive ``channels``, or non-positive sizes.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
    if len(channels) == 0 or min(channels) < 1:
        raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels}.")
    if image_channels < 1 or latent_size < 1:
        raise ValueError(f"image channels and latent_size must be positive, got {image_channels} and {latent_size}.")


def encoder_feature_shapes(
    img_size: Sequence[int] | int,
    spatial_dims: int,
    num_layers: int,
    kernel_size: int = 4,
    stride: int = 2,
    pool_size: int = 2,
) -> tuple[list[tuple[int, ...]], tuple[int, ...]]:
    """Spatial shapes along the encoder, computed from the convolution arithmetic.

    Args:
        img_size: input spatial size, one int for all dimensions or one per dimension.
        spatial_dims: number of spatial dimensions.
        num_layers: number of strided convolutions.
        kernel_size: convolution kernel size (padding is ``(kernel_size - 1) // 2``, as in MONAI's ``Convolution``).
        stride: convolution stride.
        pool_size: average pooling kernel (and stride) after the last convolution.

    Returns:
        The shape after each convolution (input first, so ``num_layers + 1`` entries) and the shape after pooling.

    Raises:
        ValueError: when the input is too small to survive the convolutions and the pooling.
    """
    padding = (kernel_size - 1) // 2
    shape = ensure_tuple_rep(img_size, spatial_dims)
    if any(int(s) < 1 for s in shape):
        raise ValueError(f"img_size must be positive, got {img_size}.")
    shapes = [tuple(int(s) for s in shape)]
    for _ in range(num_layers):
        shapes.append(tuple((s + 2 * padding - kernel_size) // stride + 1 for s in shapes[-1]))
    pooled = tuple(s // pool_size for s in shapes[-1])
    if min(pooled) < 1:
        raise ValueError(
            f"img_size {tuple(shapes[0])} is too small for {num_layers} stride-{stride} convolutions and a "
            f"size-{pool_size} pooling: the feature map would shrink to {shapes[-1]} then {pooled}."
        )
    return shapes, pooled


def encoder_channels(
    img_size: Sequence[int] | int, max_grid: int = 4, max_channels: int = 256
) -> list[int]:
    """Channels of the strided convolutions for an input size: enough stages that the last grid stays small.

    The published network has three stride-2 stages (28 -> 14 -> 7 -> 3, then pooling), which leaves a 32 x 32
    grid of 128 features at 256 px and a linear layer of 16 M weights. Here a stage is added, doubling the channels
    up to ``max_channels``, until the last convolution's grid is at most ``max_grid`` on its longest side: 28 px keeps
    exactly the published ``[32, 64, 128]``; 64 px gets 4 stages, 128 px 5 and 256 px 6 (``[32, 64, 128, 256, 256,
    256]``), each ending on a 4 x 4 grid.

    Args:
        img_size: input spatial size, one int or one per dimension.
        max_grid: largest side of the last convolution's output.
        max_channels: cap on the channels of a stage.

    Returns:
        The channels of each stage, at least the published three.

    Raises:
        ValueError: for a non-positive ``img_size``, ``max_grid`` or ``max_channels``.
    """
    longest = img_size if isinstance(img_size, int) else max(img_size)
    if int(longest) < 1 or max_grid < 1 or max_channels < 1:
        raise ValueError(f"img_size, max_grid and max_channels must be positive, got {img_size}, {max_grid}, {max_channels}.")
    channels = list(PUBLISHED_CHANNELS)
    grid = int(longest)
    for _ in channels:
        grid = (grid - 2) // 2 + 1  # kernel 4, stride 2, padding 1
    while grid > max_grid:
        channels.append(min(channels[-1] * 2, max_channels))
        grid = (grid - 2) // 2 + 1
    return channels


class CAEEncoder(nn.Module):
    """Encoder ``e`` of the contrastive autoencoder: strided convolutions, average pooling and a linear layer.

    The published network (Ferrante et al. 2022, Sec. 2) has three 2D convolutions with kernel size 4 and stride 2,
    each followed by GELU, then an average pooling with kernel size 2 and a linear layer to a 128-d latent ``h``.
    The flatten size is derived from ``img_size``, so any input size that survives the downsampling works.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        in_channels: number of input channels.
        img_size: input spatial size (one int, or one per dimension).
        channels: output channels of each strided convolution; its length is the number of convolutions.
        latent_size: size of the latent representation ``h``.
        kernel_size: convolution kernel size.
        strides: convolution stride.
        pool_size: average pooling kernel size.
        act: activation after each convolution, any name or tuple accepted by MONAI's ``Act`` factory.
        norm: optional normalisation after each convolution (MONAI ``Norm`` factory); the paper uses none.

    Raises:
        ValueError: for unsupported ``spatial_dims``, empty ``channels``, non-positive sizes, or an ``img_size`` too
            small for the downsampling.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        img_size: Sequence[int] | int = 28,
        channels: Sequence[int] = (32, 64, 128),
        latent_size: int = 128,
        kernel_size: int = 4,
        strides: int = 2,
        pool_size: int = 2,
        act: tuple | str = "GELU",
        norm: tuple | str | None = None,
    ) -> None:
        super().__init__()
        check_layout(spatial_dims, channels, in_channels, latent_size)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.latent_size = latent_size
        self.feature_shapes, self.pooled_shape = encoder_feature_shapes(
            img_size, spatial_dims, len(channels), kernel_size, strides, pool_size
        )
        self.img_size: list[int] = list(self.feature_shapes[0])

        layers: list[nn.Module] = []
        previous = in_channels
        for out in channels:
            layers.append(
                Convolution(
                    spatial_dims,
                    previous,
                    out,
                    strides=strides,
                    kernel_size=kernel_size,
                    act=act,
                    norm=norm,
                    padding=(kernel_size - 1) // 2,
                )
            )
            previous = out
        self.convs = nn.Sequential(*layers)
        self.pool = Pool[Pool.AVG, spatial_dims](kernel_size=pool_size)
        self.flatten_size = previous * int(torch.tensor(self.pooled_shape).prod())
        self.fc = nn.Linear(self.flatten_size, latent_size)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError when ``x`` is not ``(B, in_channels, *img_size)``."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels or list(x.shape[2:]) != self.img_size:
            raise ValueError(f"expected input (B, {self.in_channels}, spatial {self.img_size}), got {x.shape}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode a batch.

        Args:
            x: images of shape ``(B, in_channels, *img_size)``.

        Returns:
            Latent representations ``h`` of shape ``(B, latent_size)``.

        Raises:
            ValueError: when ``x`` does not have the configured channels and spatial size.
        """
        self.check_input(x)
        return self.fc(torch.flatten(self.pool(self.convs(x)), 1))

