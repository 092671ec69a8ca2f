"""Batched, device-side positive-pair augmentation (Ferrante et al. 2022).

The same augmentations as :class:`monai_cae.transforms.PositivePair` ("rotations of up to 30 degrees, Gaussian blur,
Gaussian noise, horizontal flips, and randomly rescaled crops", each with p = 0.5; Ferrante et al. 2022, Sec. 3), but
applied to a whole batch at once on the batch's device, with every sample drawn independently and no per-sample
Python loop. Use it after the ``DataLoader`` when per-sample MONAI transforms on the CPU are the bottleneck.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .positive_pair import FLIP_SPATIAL_AXIS, AugmentationParams, check_channel_first

__all__ = ["BatchPositivePair"]

# MONAI's Gaussian kernels are truncated at 4 sigma (monai.networks.layers.GaussianFilter default)
_BLUR_TRUNCATE: float = 4.0
_SEED_BOUND: int = 2**62


def _plane_rotation(angle: torch.Tensor, ndim: int, a: int, b: int) -> torch.Tensor:
    """Per-sample rotation matrices (B, ndim, ndim) by ``angle`` (B,) radians in the plane of axes ``a`` and ``b``."""
    rot = torch.eye(ndim, dtype=angle.dtype, device=angle.device).repeat(angle.shape[0], 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot[:, a, a] = cos
    rot[:, a, b] = -sin
    rot[:, b, a] = sin
    rot[:, b, b] = cos
    return rot


def affine_matrices(
    scale: torch.Tensor, shift: torch.Tensor, angles: torch.Tensor, spatial_shape: tuple[int, ...]
) -> torch.Tensor:
    """Build ``affine_grid`` matrices for "crop (scale + shift), then rotate" of a (B, C, *spatial_shape) batch.

    All arguments use the tensor's spatial axis order (H, W[, D]) and normalised coordinates in ``[-1, 1]``; the
    result is in ``torch.nn.functional.affine_grid``'s reversed (x, y[, z]) order, for ``align_corners=False``.
    An output location ``u`` samples the input at ``diag(scale) @ R @ u + shift``, where ``R`` is the rotation
    expressed in pixel units (so angles are true angles on non-square images).

    Args:
        scale: (B, ndim) crop side fractions; 1 means no crop.
        shift: (B, ndim) crop centres; ``|shift| <= 1 - scale`` keeps the crop inside the image.
        angles: (B, 1) for 2D or (B, 3) for 3D, radians; 3D rotates about each axis in turn.
        spatial_shape: the spatial size (H, W[, D]).

    Returns:
        (B, ndim, ndim + 1) matrices ``theta`` for ``affine_grid``.

    Raises:
        ValueError: when the argument shapes disagree.
    """
    ndim = len(spatial_shape)
    n_angles = 1 if ndim == 2 else 3
    if ndim not in (2, 3) or scale.shape[-1] != ndim or shift.shape[-1] != ndim or angles.shape[-1] != n_angles:
        raise ValueError(
            f"inconsistent shapes: spatial_shape {tuple(spatial_shape)}, scale {tuple(scale.shape)}, "
            f"shift {tuple(shift.shape)}, angles {tuple(angles.shape)}."
        )
    if ndim == 2:
        rot = _plane_rotation(angles[:, 0], 2, 0, 1)
    else:
        rot = (
            _plane_rotation(angles[:, 0], 3, 1, 2)
            @ _plane_rotation(angles[:, 1], 3, 0, 2)
            @ _plane_rotation(angles[:, 2], 3, 0, 1)
        )
    # normalised coordinates stretch each axis by its size, so conjugate by diag(size) to rotate in pixel space
    size = torch.tensor(spatial_shape, dtype=rot.dtype, device=rot.device)
    rot = rot * size[None, None, :] / size[None, :, None]
    linear = scale[:, :, None] * rot
    # affine_grid orders coordinates (x, y[, z]) = last spatial axis first
    linear = linear.flip(-1).flip(-2)
    return torch.cat([linear, shift.flip(-1)[:, :, None]], dim=-1)


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised Gaussian kernels (..., 2r + 1) for sigmas (...), with MONAI's default "erf" discretisation."""
    pos = torch.arange(-radius, radius + 1, dtype=sigma.dtype, device=sigma.device)
    denom = sigma[..., None] * math.sqrt(2.0)
    kernel = 0.5 * (torch.erf((pos + 0.5) / denom) - torch.erf((pos - 0.5) / denom))
    return kernel / kernel.sum(dim=-1, keepdim=True)


def _expand(mask: torch.Tensor, ndim: int) -> torch.Tensor:
    return mask.reshape(mask.shape[0], *([1] * (ndim - 1)))


class BatchPositivePair(nn.Module):
    """Make positive pairs for a whole batch on its device: two independently augmented views per sample.

    Same arguments and semantics as :class:`~monai_cae.transforms.PositivePair` (and the same validation, through
    :class:`~monai_cae.transforms.positive_pair.AugmentationParams`); every augmentation fires independently per
    sample with its probability, in the order crop, rotate, flip, blur, noise:

    - crop and rotation are fused into one per-sample affine matrix and applied with a single
      ``affine_grid`` + ``grid_sample`` (bi/trilinear, zero padding, ``align_corners=False``); the crop side
      fractions are drawn uniformly (continuously) per axis from ``crop_scale`` and its position uniformly inside
      the image, then it is resized back to the full size;
    - the horizontal flip (spatial axis 1, W) is an exact ``torch.flip``;
    - the blur is a separable grouped convolution with per-sample, per-axis sigma (kernel radius from the largest
      sigma, zero padding, as MONAI's ``GaussianFilter``);
    - the noise has mean 0 and per-sample std drawn uniformly from ``[0, noise_std]``.

    Samples for which an augmentation does not fire are left bit-identical by it. Per-sample parameters come from
    a CPU ``torch.Generator``; the noise field is drawn on the input's device from a generator seeded by it, so
    results are reproducible per device type (not across CPU and CUDA).

    Args:
        rotate_prob: probability of a rotation.
        rotate_range_deg: maximum absolute rotation angle in degrees (per axis for 3D).
        blur_prob: probability of a Gaussian blur.
        blur_sigma: ``(low, high)`` blur sigma range in pixels.
        noise_prob: probability of additive Gaussian noise.
        noise_std: upper bound of the noise standard deviation.
        flip_prob: probability of a horizontal flip.
        crop_prob: probability of a randomly rescaled crop.
        crop_scale: ``(low, high)`` crop side fraction range.
        seed: seed of the random generator; ``None`` draws one from ``torch``'s global generator, so that
            ``monai.utils.set_determinism`` (or ``torch.manual_seed``) before construction is reproducible.

    Raises:
        ValueError: for invalid arguments.

    Example:
        >>> view1, view2 = BatchPositivePair(seed=0)(torch.rand(8, 1, 28, 28))
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
        seed: int | None = None,
    ) -> None:
        super().__init__()
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
        self.blur_radius = int(max(self.params.blur_sigma[1] * _BLUR_TRUNCATE, 0.5) + 0.5)
        self.generator = torch.Generator()
        self.set_random_state(seed)

    def set_random_state(self, seed: int | None = None) -> BatchPositivePair:
        """Reseed the augmentation generator.

        Args:
            seed: non-negative integer seed; ``None`` draws one from ``torch``'s global generator.

        Returns:
            This module.

        Raises:
            ValueError: when ``seed`` is negative or not an integer.
        """
        if seed is None:
            seed = int(torch.randint(0, _SEED_BOUND, (1,)).item())
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}.")
        self.generator.manual_seed(seed)
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Make two independently augmented views of every sample of ``x``.

        Args:
            x: batch (B, C, H, W) or (B, C, H, W, D).

        Returns:
            Two tensors shaped like ``x``, on its device; floating inputs keep their dtype, others become
            ``float32``.

        Raises:
            ValueError: when ``x`` is not a 2D/3D channel-first batch.
        """
        check_channel_first(x.shape, batched=True)
        if not x.is_floating_point():
            x = x.float()
        return self._augment(x), self._augment(x)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        g = self.generator
        batch, ndim = x.shape[0], x.ndim - 2
        spatial_shape = tuple(x.shape[2:])

        # Draw everything for every sample, whether or not it is used, so that the random stream (and so the
        # result for a seed) does not depend on which augmentations happen to fire.
        fire = torch.rand(5, batch, generator=g) < torch.tensor(
            [p.crop_prob, p.rotate_prob, p.flip_prob, p.blur_prob, p.noise_prob]
        )[:, None]
        crop_lo, crop_hi = p.crop_scale
        scale = crop_lo + (crop_hi - crop_lo) * torch.rand(batch, ndim, generator=g, dtype=torch.float64)
        shift = (1.0 - scale) * (2.0 * torch.rand(batch, ndim, generator=g, dtype=torch.float64) - 1.0)
        n_angles = 1 if ndim == 2 else 3
        angles = p.rotate_range_rad * (2.0 * torch.rand(batch, n_angles, generator=g, dtype=torch.float64) - 1.0)
        blur_lo, blur_hi = p.blur_sigma
        sigma = blur_lo + (blur_hi - blur_lo) * torch.rand(batch, ndim, generator=g, dtype=torch.float64)
        noise_std = p.noise_std * torch.rand(batch, generator=g, dtype=torch.float64)
        noise_seed = int(torch.randint(0, _SEED_BOUND, (1,), generator=g).item())

        crop_on, rot_on, flip_on, blur_on, noise_on = (m.to(x.device) for m in fire)
        crop_sel, rot_sel = fire[0][:, None], fire[1][:, None]
        scale = torch.where(crop_sel, scale, torch.ones_like(scale))
        shift = torch.where(crop_sel, shift, torch.zeros_like(shift))
        angles = torch.where(rot_sel, angles, torch.zeros_like(angles))

        # grid_sample has no half-precision CPU kernels; compute in float32 and cast back at the end
        work = x if x.dtype in (torch.float32, torch.float64) else x.float()
        out = work

        theta = affine_matrices(scale, shift, angles, spatial_shape).to(device=x.device, dtype=work.dtype)
        grid = F.affine_grid(theta, list(work.shape), align_corners=False)
        warped = F.grid_sample(work, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # even an identity grid is not bit-exact, so samples with neither crop nor rotation keep their values
        out = torch.where(_expand(crop_on | rot_on, x.ndim), warped, out)

        out = torch.where(_expand(flip_on, x.ndim), out.flip(2 + FLIP_SPATIAL_AXIS), out)

        out = torch.where(_expand(blur_on, x.ndim), self._blur(out, sigma.to(x.device, work.dtype)), out)

        noise_gen = torch.Generator(device=x.device)
        noise_gen.manual_seed(noise_seed)
        noise = torch.randn(work.shape, generator=noise_gen, device=x.device, dtype=work.dtype)
        noise = noise * _expand(noise_std.to(x.device, work.dtype), x.ndim)
        out = torch.where(_expand(noise_on, x.ndim), out + noise, out)

        return out.to(x.dtype)

    def _blur(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur of (B, C, *spatial) with per-sample, per-axis ``sigma`` (B, ndim)."""
        batch, channels = x.shape[:2]
        ndim = x.ndim - 2
        conv = F.conv2d if ndim == 2 else F.conv3d
        radius = self.blur_radius
        # one group per (sample, channel): stacking the batch into channels gives each sample its own kernel
        kernels = _gaussian_kernels(sigma, radius).repeat_interleave(channels, dim=0)  # (B * C, ndim, K)
        out = x.reshape(1, batch * channels, *x.shape[2:])
        for axis in range(ndim):
            shape = [batch * channels, 1] + [1] * ndim
            shape[2 + axis] = 2 * radius + 1
            padding = [0] * ndim
            padding[axis] = radius
            out = conv(out, kernels[:, axis].reshape(shape), padding=tuple(padding), groups=batch * channels)
        return out.reshape(x.shape)
