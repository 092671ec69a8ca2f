"""Positive-pair generation for contrastive training (Ferrante et al. 2022).

Ferrante, Boccato, Duggento, Spasov, Toschi, "Contrastive learning for unsupervised medical image clustering and
reconstruction" (2022), Sec. 3: positive pairs are made by augmenting each image twice, where "we randomly apply
(with a probability p = 0.5), rotations of up to 30 degrees, Gaussian blur, Gaussian noise, horizontal flips, and
randomly rescaled crops".

This module provides the per-sample MONAI transform (array and dictionary flavours) and the shared, validated
augmentation parameters used by both it and :class:`monai_cae.transforms.BatchPositivePair`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import (
    Compose,
    MapTransform,
    RandFlip,
    RandGaussianNoise,
    RandGaussianSmooth,
    Randomizable,
    RandomizableTransform,
    RandRotate,
    RandScaleCrop,
    Resize,
    Transform,
)
from monai.utils import MAX_SEED, convert_to_tensor, get_seed

__all__ = ["PositivePair", "PositivePaird", "PositivePairD", "PositivePairDict"]

#: Spatial axis flipped by the "horizontal flip": the W axis of (C, H, W) and of (C, H, W, D).
FLIP_SPATIAL_AXIS: int = 1


def _as_real(name: str, value: Any) -> float:
    if isinstance(value, bool):
        # bools are ints in Python; accepting them would hide a mixed-up positional argument
        raise ValueError(f"{name} must be a real number, got {value!r}.")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}.") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return out


def _as_pair(name: str, value: Any) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}.")
    low, high = _as_real(name, value[0]), _as_real(name, value[1])
    if low > high:
        raise ValueError(f"{name} must satisfy low <= high, got {value!r}.")
    return low, high


@dataclass(frozen=True)
class AugmentationParams:
    """Validated probabilities and magnitudes of the positive-pair augmentations.

    Shared by :class:`PositivePair` and :class:`~monai_cae.transforms.BatchPositivePair` so both paths accept and
    reject exactly the same arguments. All probabilities default to the paper's p = 0.5.

    Args:
        rotate_prob: probability of a random rotation.
        rotate_range_deg: rotation angles are drawn uniformly from ``[-rotate_range_deg, rotate_range_deg]``
            degrees (per rotation axis for 3D inputs); in ``[0, 180]``.
        blur_prob: probability of a Gaussian blur.
        blur_sigma: ``(low, high)`` range of the blur sigma in pixels, drawn per spatial axis; ``0 < low <= high``.
        noise_prob: probability of additive Gaussian noise.
        noise_std: the noise standard deviation is drawn uniformly from ``[0, noise_std]``; ``>= 0``.
        flip_prob: probability of a horizontal flip.
        crop_prob: probability of a randomly rescaled crop.
        crop_scale: ``(low, high)`` range of the crop side length as a fraction of the image side, drawn
            independently per spatial axis (so the aspect ratio changes too); ``0 < low <= high <= 1``.

    Raises:
        ValueError: when a probability is outside ``[0, 1]``, a magnitude is negative or not finite, or a range is
            malformed. The message names the argument and the bad value.
    """

    rotate_prob: float = 0.5
    rotate_range_deg: float = 30.0
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.25, 1.5)
    noise_prob: float = 0.5
    noise_std: float = 0.05
    flip_prob: float = 0.5
    crop_prob: float = 0.5
    crop_scale: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        # normalise in place so downstream code can rely on plain floats / tuples
        for name in ("rotate_prob", "blur_prob", "noise_prob", "flip_prob", "crop_prob"):
            p = _as_real(name, getattr(self, name))
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}.")
            object.__setattr__(self, name, p)

        rot = _as_real("rotate_range_deg", self.rotate_range_deg)
        if not 0.0 <= rot <= 180.0:
            raise ValueError(f"rotate_range_deg must be in [0, 180], got {self.rotate_range_deg!r}.")
        object.__setattr__(self, "rotate_range_deg", rot)

        std = _as_real("noise_std", self.noise_std)
        if std < 0.0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std!r}.")
        object.__setattr__(self, "noise_std", std)

        sigma = _as_pair("blur_sigma", self.blur_sigma)
        if sigma[0] <= 0.0:
            raise ValueError(f"blur_sigma must be > 0, got {self.blur_sigma!r}.")
        object.__setattr__(self, "blur_sigma", sigma)

        scale = _as_pair("crop_scale", self.crop_scale)
        if not (0.0 < scale[0] and scale[1] <= 1.0):
            raise ValueError(f"crop_scale must lie in (0, 1], got {self.crop_scale!r}.")
        object.__setattr__(self, "crop_scale", scale)

    @property
    def rotate_range_rad(self) -> float:
        """The rotation range in radians, as MONAI and ``torch`` expect."""
        return math.radians(self.rotate_range_deg)


def check_channel_first(shape: Sequence[int], batched: bool = False) -> int:
    """Check a channel-first (optionally batched) 2D/3D shape and return its number of spatial dimensions.

    Args:
        shape: the array shape.
        batched: whether a leading batch dimension is expected.

    Returns:
        The number of spatial dimensions (2 or 3).

    Raises:
        ValueError: when the shape is not ``([B,] C, H, W)`` or ``([B,] C, H, W, D)`` or has an empty dimension.
    """
    lead = 2 if batched else 1
    expected = "(B, C, H, W) or (B, C, H, W, D)" if batched else "channel-first (C, H, W) or (C, H, W, D)"
    shape = tuple(int(s) for s in shape)
    if len(shape) - lead not in (2, 3) or any(s < 1 for s in shape):
        raise ValueError(f"expected a {expected} input, got shape {shape}.")
    return len(shape) - lead


class _RandRescaledCrop(RandomizableTransform):
    """With probability ``prob``, crop a random box (``RandScaleCrop``) and resize it back to the input size.

    A ``Compose([RandScaleCrop, Resize])`` cannot express this: ``Resize`` must be built with a fixed target size,
    while the target here is the (varying) size of each input, known only at call time.
    """

    def __init__(self, prob: float, scale: tuple[float, float]) -> None:
        RandomizableTransform.__init__(self, prob)
        self.cropper = RandScaleCrop(roi_scale=scale[0], max_roi_scale=scale[1], random_center=True, random_size=True)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> _RandRescaledCrop:
        super().set_random_state(seed=seed, state=state)
        self.cropper.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        img = convert_to_tensor(img, track_meta=get_track_meta())
        self.randomize()
        if not self._do_transform:
            return img
        spatial_size = tuple(img.shape[1:])
        mode = "bilinear" if len(spatial_size) == 2 else "trilinear"
        return Resize(spatial_size=spatial_size, mode=mode, align_corners=False)(self.cropper(img))


class PositivePair(Randomizable, Transform):
    """Make a positive pair: two independently augmented views of one channel-first image.

    Implements the augmentation of Ferrante et al. 2022 (Sec. 3) with MONAI random transforms, each applied
    independently with its own probability, in this order:

    1. randomly rescaled crop: ``RandScaleCrop`` (random size and position, side fractions drawn per axis from
       ``crop_scale``) then ``Resize`` (bi/trilinear) back to the input size;
    2. ``RandRotate`` by up to ``rotate_range_deg`` degrees (about every axis for 3D), bilinear, same size,
       zero padding (matches the batched ``grid_sample`` path and a dark background);
    3. ``RandFlip`` of spatial axis 1, i.e. W, the last axis of (C, H, W) ("horizontal flip");
    4. ``RandGaussianSmooth`` with sigma drawn per axis from ``blur_sigma``;
    5. ``RandGaussianNoise`` with mean 0 and std drawn from ``[0, noise_std]``.

    Geometric changes come first so that blur and noise are not resampled (and thereby smoothed) afterwards.
    Magnitude defaults assume intensities scaled to ``[0, 1]``.

    Args:
        rotate_prob: probability of a rotation.
        rotate_range_deg: maximum absolute rotation angle in degrees.
        blur_prob: probability of a Gaussian blur.
        blur_sigma: ``(low, high)`` blur sigma range in pixels.
        noise_prob: probability of additive Gaussian noise.
        noise_std: upper bound of the noise standard deviation.
        flip_prob: probability of a horizontal flip.
        crop_prob: probability of a randomly rescaled crop.
        crop_scale: ``(low, high)`` crop side fraction range.

    Raises:
        ValueError: for invalid arguments (see :class:`AugmentationParams`).

    Example:
        >>> view1, view2 = PositivePair().set_random_state(0)(torch.rand(1, 28, 28))
    """

    def __init__(
        self,
        rotate_prob: float = 0.5,
        rotate_range_deg: float = 30.0,
        blur_prob: float = 0.5,
        blur_sigma: tuple[float, float] = (0.25, 1.5),
        noise_prob: float = 0.5,
        noise_std: float = 0.05,
        flip_prob: float = 0.5,
        crop_prob: float = 0.5,
        crop_scale: tuple[float, float] = (0.5, 1.0),
    ) -> None:
        self.params = AugmentationParams(
            rotate_prob=rotate_prob,
            rotate_range_deg=rotate_range_deg,
            blur_prob=blur_prob,
            blur_sigma=blur_sigma,
            noise_prob=noise_prob,
            noise_std=noise_std,
            flip_prob=flip_prob,
            crop_prob=crop_prob,
            crop_scale=crop_scale,
        )
        p = self.params
        rad = p.rotate_range_rad
        self.pipeline = Compose(
            [
                _RandRescaledCrop(prob=p.crop_prob, scale=p.crop_scale),
                RandRotate(
                    range_x=rad,
                    range_y=rad,
                    range_z=rad,
                    prob=p.rotate_prob,
                    keep_size=True,
                    mode="bilinear",
                    padding_mode="zeros",
                    align_corners=False,
                ),
                RandFlip(prob=p.flip_prob, spatial_axis=FLIP_SPATIAL_AXIS),
                RandGaussianSmooth(
                    sigma_x=p.blur_sigma, sigma_y=p.blur_sigma, sigma_z=p.blur_sigma, prob=p.blur_prob
                ),
                # dtype=None keeps the noise in the input's precision instead of MONAI's float32 default
                RandGaussianNoise(prob=p.noise_prob, mean=0.0, std=p.noise_std, dtype=None, sample_std=True),
            ]
        )
        # Like monai.transforms.Compose: honour monai.utils.set_determinism at construction time, otherwise each
        # instance gets fresh entropy (the class-level Randomizable.R would otherwise be shared by all instances).
        self.set_random_state(seed=get_seed())

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> PositivePair:
        """Seed this transform and, deterministically from it, every inner random transform.

        Args:
            seed: integer seed.
            state: a ``np.random.RandomState`` to use instead of a seed.

        Returns:
            This transform.
        """
        super().set_random_state(seed=seed, state=state)
        self.pipeline.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, data: Any = None) -> None:
        """No-op: every random factor is drawn by the inner transforms when a view is made."""

    def __call__(self, img: NdarrayOrTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Make two independently augmented views of ``img``.

        Args:
            img: channel-first image, (C, H, W) or (C, H, W, D), numpy array or tensor.

        Returns:
            Two views with the input's shape; ``MetaTensor`` when MONAI meta tracking is on (the default).
            Floating inputs keep their dtype; other dtypes are promoted to ``float32``.

        Raises:
            ValueError: when ``img`` is not channel-first 2D/3D.
        """
        check_channel_first(img.shape)
        img = convert_to_tensor(img, track_meta=get_track_meta())
        if not img.is_floating_point():
            img = img.float()
        # The pipeline is run twice because one call of a random transform gives both views the same draw. Each run
        # gets its own clone: MONAI returns the input object itself when nothing fires and records every transform
        # in its meta data, so without it the views could alias each other and the caller's tensor.
        view1 = self.pipeline(img.clone())
        view2 = self.pipeline(img.clone())
        return view1.to(img.dtype), view2.to(img.dtype)


class PositivePaird(MapTransform, Randomizable):
    """Dictionary-based :class:`PositivePair`.

    For every key, writes two independently augmented views to ``key + view_suffixes[0]`` and
    ``key + view_suffixes[1]`` (overwriting existing entries) and keeps ``data[key]`` unchanged. Different keys are
    augmented independently of each other, which suits contrastive views but not image/label pairs.

    Args:
        keys: keys of the images to augment.
        view_suffixes: suffixes of the two output keys; two different, non-empty strings.
        allow_missing_keys: don't raise if a key is missing.
        rotate_prob: see :class:`PositivePair`.
        rotate_range_deg: see :class:`PositivePair`.
        blur_prob: see :class:`PositivePair`.
        blur_sigma: see :class:`PositivePair`.
        noise_prob: see :class:`PositivePair`.
        noise_std: see :class:`PositivePair`.
        flip_prob: see :class:`PositivePair`.
        crop_prob: see :class:`PositivePair`.
        crop_scale: see :class:`PositivePair`.

    Raises:
        ValueError: for invalid augmentation arguments or view suffixes.
    """

    def __init__(
        self,
        keys: KeysCollection,
        view_suffixes: tuple[str, str] = ("_view1", "_view2"),
        allow_missing_keys: bool = False,
        rotate_prob: float = 0.5,
        rotate_range_deg: float = 30.0,
        blur_prob: float = 0.5,
        blur_sigma: tuple[float, float] = (0.25, 1.5),
        noise_prob: float = 0.5,
        noise_std: float = 0.05,
        flip_prob: float = 0.5,
        crop_prob: float = 0.5,
        crop_scale: tuple[float, float] = (0.5, 1.0),
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if (
            isinstance(view_suffixes, str)
            or len(view_suffixes) != 2
            or not all(isinstance(s, str) and s for s in view_suffixes)
            or view_suffixes[0] == view_suffixes[1]
        ):
            raise ValueError(f"view_suffixes must be two different non-empty strings, got {view_suffixes!r}.")
        self.view_suffixes = (view_suffixes[0], view_suffixes[1])
        self.pair = PositivePair(
            rotate_prob=rotate_prob,
            rotate_range_deg=rotate_range_deg,
            blur_prob=blur_prob,
            blur_sigma=blur_sigma,
            noise_prob=noise_prob,
            noise_std=noise_std,
            flip_prob=flip_prob,
            crop_prob=crop_prob,
            crop_scale=crop_scale,
        )
        self.set_random_state(seed=get_seed())

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> PositivePaird:
        """Seed this transform and the inner :class:`PositivePair`.

        Args:
            seed: integer seed.
            state: a ``np.random.RandomState`` to use instead of a seed.

        Returns:
            This transform.
        """
        super().set_random_state(seed=seed, state=state)
        self.pair.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, data: Any = None) -> None:
        """No-op: random factors are drawn by the inner :class:`PositivePair`."""

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Add the two views of every key.

        Args:
            data: dictionary holding channel-first images under ``keys``.

        Returns:
            A shallow copy of ``data`` with the view entries added.

        Raises:
            ValueError: when an image is not channel-first 2D/3D.
            KeyError: when a key is missing and ``allow_missing_keys`` is False.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            view1, view2 = self.pair(d[key])
            d[f"{key}{self.view_suffixes[0]}"] = view1
            d[f"{key}{self.view_suffixes[1]}"] = view2
        return d


PositivePairD = PositivePairDict = PositivePaird
