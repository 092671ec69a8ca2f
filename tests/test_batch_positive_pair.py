"""Tests of the batched, device-side positive-pair augmentation."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from monai.utils import set_determinism

from monai_cae.transforms import BatchPositivePair
from monai_cae.transforms.batch_positive_pair import affine_matrices
# shared helpers; pytest's default (prepend) import mode puts tests/ on sys.path
from test_positive_pair import (
    AUGMENTATIONS,
    BAD_ARGUMENTS,
    bar_image,
    image,
    only,
    orientation_deg,
    reference_blur,
)

ALL_ON = {f"{a}_prob": 1.0 for a in AUGMENTATIONS}
N_SAMPLES = 400  # Bernoulli trials per rate estimate, one batch


def changed(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample flag: did the sample change at all?"""
    return (out != x).flatten(1).any(dim=1)


def warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@pytest.fixture
def reset_determinism() -> Iterator[None]:
    yield
    set_determinism(None)


# ---------------------------------------------------------------------------------------------------------------
# shapes, types, independence, reproducibility


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kwargs", [{}, ALL_ON], ids=["defaults", "all_on"])
def test_shape_dtype_device_and_two_different_views(size: int, channels: int, kwargs: dict[str, Any]) -> None:
    x = image((8, channels, size, size))
    out = BatchPositivePair(**kwargs, seed=0)(x)
    assert isinstance(out, tuple) and len(out) == 2
    for v in out:
        assert v.shape == x.shape and v.dtype == x.dtype and v.device == x.device
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_floating_dtype_is_kept(dtype: torch.dtype) -> None:
    v1, v2 = BatchPositivePair(**ALL_ON, seed=1)(image((4, 1, 28, 28), dtype=dtype))
    assert v1.dtype == v2.dtype == dtype and torch.isfinite(v1.float()).all()


def test_integer_input_is_promoted_to_float32() -> None:
    v1, _ = BatchPositivePair(seed=1)((image((2, 1, 28, 28)) * 255).to(torch.uint8))
    assert v1.dtype == torch.float32


@pytest.mark.parametrize("channels", [1, 2])
def test_3d_batch(channels: int) -> None:
    x = image((3, channels, 16, 20, 12))
    v1, v2 = BatchPositivePair(**ALL_ON, seed=3)(x)
    assert v1.shape == v2.shape == x.shape
    assert not torch.equal(v1, v2)
    assert torch.equal(BatchPositivePair(**only("flip"))(x)[0], torch.flip(x, dims=(3,)))


def test_samples_are_augmented_independently() -> None:
    x = image((1, 1, 28, 28)).expand(6, -1, -1, -1).contiguous()
    v1, v2 = BatchPositivePair(**ALL_ON, seed=0)(x)
    for v in (v1, v2):
        for i in range(1, 6):
            assert not torch.equal(v[0], v[i])


def test_same_seed_same_views_and_different_seeds_differ() -> None:
    x = image((4, 1, 28, 28))
    a1, a2 = BatchPositivePair(**ALL_ON, seed=42)(x)
    b1, b2 = BatchPositivePair(**ALL_ON, seed=42)(x)
    c1, c2 = BatchPositivePair(**ALL_ON, seed=43)(x)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1) and not torch.equal(a2, c2)


def test_set_random_state_resets_the_stream() -> None:
    x = image((4, 1, 28, 28))
    t = BatchPositivePair(seed=9)
    first = [v for _ in range(3) for v in t(x)]
    t.set_random_state(9)
    second = [v for _ in range(3) for v in t(x)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.usefixtures("reset_determinism")
def test_set_determinism_then_construct_is_reproducible() -> None:
    x = image((4, 1, 28, 28))
    set_determinism(seed=123)
    a = BatchPositivePair(**ALL_ON)(x)
    set_determinism(seed=123)
    b = BatchPositivePair(**ALL_ON)(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed_raises(seed: Any) -> None:
    with pytest.raises(ValueError, match="seed"):
        BatchPositivePair(seed=seed)


# ---------------------------------------------------------------------------------------------------------------
# each augmentation fires per sample at its probability


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_fires_at_its_probability(name: str) -> None:
    x = image((N_SAMPLES // 2, 1, 28, 28))
    v1, v2 = BatchPositivePair(**only(name, 0.5), seed=2024)(x)
    frac = torch.cat([changed(v1, x), changed(v2, x)]).double().mean().item()
    assert abs(frac - 0.5) < 4 * math.sqrt(0.25 / N_SAMPLES), f"{name}: fired in {frac:.3f} of {N_SAMPLES}"


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_probability_one_always_fires(name: str) -> None:
    x = image((50, 1, 28, 28))
    for v in BatchPositivePair(**only(name, 1.0), seed=7)(x):
        assert changed(v, x).all()


def test_probability_zero_never_fires() -> None:
    x = image((50, 3, 28, 28))
    for v in BatchPositivePair(**only(None), seed=7)(x):
        assert torch.equal(v, x)


# ---------------------------------------------------------------------------------------------------------------
# correctness of the individual augmentations


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_flip_is_horizontal(size: int, channels: int) -> None:
    x = image((4, channels, size, size))
    for v in BatchPositivePair(**only("flip"), seed=0)(x):
        assert torch.equal(v, torch.flip(x, dims=(-1,)))


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_full_scale_crop_is_identity(size: int, channels: int) -> None:
    x = image((4, channels, size, size))
    for v in BatchPositivePair(**only("crop", crop_scale=(1.0, 1.0)), seed=0)(x):
        torch.testing.assert_close(v, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [28, 64])
def test_half_scale_crop_halves_the_slope_of_a_ramp(size: int) -> None:
    # a ramp stays a ramp under an axis-aligned crop; half of each side resized to full size halves the slope
    h = torch.arange(size, dtype=torch.float64)[:, None]
    w = torch.arange(size, dtype=torch.float64)[None, :]
    x = (h + 2 * w)[None, None].expand(4, 1, -1, -1).contiguous()
    for v in BatchPositivePair(**only("crop", crop_scale=(0.5, 0.5)), seed=0)(x):
        inner = v[:, 0, 2:-2, 2:-2]
        torch.testing.assert_close(inner.diff(dim=1), torch.full_like(inner.diff(dim=1), 0.5))
        torch.testing.assert_close(inner.diff(dim=2), torch.full_like(inner.diff(dim=2), 1.0))
        # the crop lies inside the image: every value is one of the input's range
        assert v.min() >= x.min() - 1e-9 and v.max() <= x.max() + 1e-9


def test_noise_residual_std_within_bounds() -> None:
    x = image((100, 1, 64, 64))
    std_max = 0.1
    v1, v2 = BatchPositivePair(**only("noise", noise_std=std_max), seed=11)(x)
    stds = torch.cat([(v1 - x).flatten(1).std(dim=1), (v2 - x).flatten(1).std(dim=1)])
    # per-sample std is uniform in [0, std_max]; 4096 pixels estimate it to about 1 %
    assert stds.max() <= std_max * 1.05 and stds.min() > 0
    assert abs(stds.mean().item() - std_max / 2) < 4 * (std_max / math.sqrt(12)) / math.sqrt(len(stds))
    assert abs((v1 - x).mean().item()) < 1e-3


@pytest.mark.parametrize("sigma", [0.5, 1.0])
@pytest.mark.parametrize("channels", [1, 3])
def test_blur_matches_reference(sigma: float, channels: int) -> None:
    x = image((3, channels, 28, 28))
    expected = torch.stack([torch.from_numpy(reference_blur(s.numpy(), sigma)).float() for s in x])
    for v in BatchPositivePair(**only("blur", blur_sigma=(sigma, sigma)), seed=0)(x):
        torch.testing.assert_close(v, expected, atol=1e-5, rtol=0)


def test_blur_sigma_is_per_sample() -> None:
    # the same image twice in a batch: two sigmas give two different smoothness levels, hence variances
    x = image((1, 1, 28, 28)).expand(2, -1, -1, -1).contiguous()
    v, _ = BatchPositivePair(**only("blur", blur_sigma=(0.3, 3.0)), seed=0)(x)
    assert changed(v, x).all()
    assert not torch.isclose(v[0].var(), v[1].var(), rtol=1e-3)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_affine_rotation_by_multiples_of_90_degrees_matches_rot90(k: int) -> None:
    x = image((2, 3, 8, 8))
    ones, zeros = torch.ones(2, 2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    theta = affine_matrices(ones, zeros, torch.full((2, 1), k * math.pi / 2, dtype=torch.float64), (8, 8))
    # a positive angle turns the image clockwise as displayed (row 0 on top), i.e. rot90 with negative k
    torch.testing.assert_close(warp(x, theta), torch.rot90(x, -k, dims=(2, 3)), atol=1e-5, rtol=0)


def test_affine_rotation_is_in_pixel_space_on_non_square_images() -> None:
    x = image((1, 1, 10, 20))
    one = torch.ones(1, 2, dtype=torch.float64)
    theta = affine_matrices(one, 0 * one, torch.full((1, 1), math.pi / 2, dtype=torch.float64), (10, 20))
    # the central 10 x 10 square maps onto itself, turned by 90 degrees without stretching
    rotated = torch.rot90(x, -1, dims=(2, 3))  # (1, 1, 20, 10)
    torch.testing.assert_close(warp(x, theta)[..., 5:15], rotated[..., 5:15, :], atol=1e-5, rtol=0)


def test_affine_identity_and_crop_on_3d() -> None:
    x = image((1, 1, 6, 8, 4))
    one = torch.ones(1, 3, dtype=torch.float64)
    theta = affine_matrices(one, 0 * one, torch.zeros(1, 3, dtype=torch.float64), (6, 8, 4))
    torch.testing.assert_close(warp(x, theta), x, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        affine_matrices(one, 0 * one, torch.zeros(1, 1, dtype=torch.float64), (6, 8, 4))


def test_rotation_leaves_a_centred_blob_unchanged() -> None:
    size = 64
    h, w = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
    blob = torch.exp(-(h**2 + w**2) / (2 * 6.0**2))[None, None].expand(4, 1, -1, -1).contiguous()
    for v in BatchPositivePair(**only("rotate"), seed=0)(blob):
        assert changed(v, blob).all()
        torch.testing.assert_close(v, blob, atol=1e-2, rtol=0)  # bilinear interpolation error at the peak


def test_rotation_angle_is_bounded_by_the_range_in_degrees() -> None:
    x = bar_image(64)[None].expand(40, -1, -1, -1).contiguous()
    v1, v2 = BatchPositivePair(**only("rotate", rotate_range_deg=30.0), seed=0)(x)
    angles = [abs(orientation_deg(s[0])) for s in torch.cat([v1, v2])]
    assert max(angles) <= 30.5
    assert max(angles) > 20.0  # uses the range: P(80 uniform draws all below 20 deg) = (2/3) ** 80


# ---------------------------------------------------------------------------------------------------------------
# validation and devices


@pytest.mark.parametrize("kwargs, name", BAD_ARGUMENTS)
def test_bad_arguments_raise(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        BatchPositivePair(**kwargs)


@pytest.mark.parametrize("shape", [(1, 28, 28), (28, 28), (2, 1, 1, 28, 28, 4), (0, 1, 28, 28)])
def test_bad_input_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"shape \("):
        BatchPositivePair()(torch.zeros(shape))


def test_module_has_no_parameters_and_runs_without_grad() -> None:
    t = BatchPositivePair(seed=0)
    assert list(t.parameters()) == []
    with torch.no_grad():
        v1, _ = t(image((2, 1, 28, 28)))
    assert v1.shape == (2, 1, 28, 28)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("shape", [(8, 3, 64, 64), (2, 1, 16, 20, 12)])
def test_runs_on_cuda(shape: tuple[int, ...]) -> None:
    x = image(shape).cuda()
    a1, a2 = BatchPositivePair(**ALL_ON, seed=5)(x)
    b1, _ = BatchPositivePair(**ALL_ON, seed=5)(x)
    assert a1.is_cuda and a2.is_cuda and a1.shape == x.shape and a1.dtype == x.dtype
    # cuDNN may pick different kernels between calls, so compare to float tolerance rather than bitwise
    torch.testing.assert_close(a1, b1, atol=1e-6, rtol=0)
    assert not torch.equal(a1, a2)
    for v in BatchPositivePair(**only("flip"), seed=0)(x):
        assert torch.equal(v, torch.flip(x, dims=(3,)))
    # same random parameters on both devices, so geometry and blur agree with the CPU path
    cpu = BatchPositivePair(**only(None, rotate_prob=1.0, crop_prob=1.0, blur_prob=1.0), seed=5)(x.cpu())
    gpu = BatchPositivePair(**only(None, rotate_prob=1.0, crop_prob=1.0, blur_prob=1.0), seed=5)(x)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-4, rtol=0)
