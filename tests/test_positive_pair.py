"""Tests of the per-sample positive-pair transform (Ferrante et al. 2022 augmentations) and its dictionary twin."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.utils import set_determinism

from monai_cae.transforms import PositivePair, PositivePairD, PositivePaird, PositivePairDict

AUGMENTATIONS = ("rotate", "blur", "noise", "flip", "crop")
N_DRAWS = 200  # calls; each gives two views, so 400 Bernoulli trials per rate estimate


def only(name: str | None, prob: float = 1.0, **extra: Any) -> dict[str, Any]:
    """Constructor kwargs enabling only augmentation ``name`` (or none) with probability ``prob``."""
    kwargs: dict[str, Any] = {f"{a}_prob": 0.0 for a in AUGMENTATIONS}
    if name is not None:
        kwargs[f"{name}_prob"] = prob
    kwargs.update(extra)
    return kwargs


def image(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_tensor() if isinstance(t, MetaTensor) else t


def views(transform: PositivePair, x: torch.Tensor, n: int) -> Iterator[torch.Tensor]:
    for _ in range(n):
        yield from (plain(v) for v in transform(x))


def reference_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with MONAI's defaults: "erf" kernel truncated at 4 sigma, zero padding."""
    radius = int(max(4.0 * sigma, 0.5) + 0.5)
    erf = np.vectorize(math.erf)
    pos = np.arange(-radius, radius + 1)
    kernel = 0.5 * (erf((pos + 0.5) / (sigma * math.sqrt(2))) - erf((pos - 0.5) / (sigma * math.sqrt(2))))
    kernel = kernel / kernel.sum()
    out = x.astype(np.float64)
    for axis in range(1, x.ndim):
        out = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, out)
    return out


def bar_image(size: int) -> torch.Tensor:
    """A centred horizontal bar, 3 px thick and size // 2 long, so it stays inside the image when rotated."""
    x = torch.zeros(1, size, size)
    c, half = size // 2, size // 4
    x[0, c - 1 : c + 2, c - half : c + half] = 1.0
    return x


def orientation_deg(img: torch.Tensor) -> float:
    """Principal-axis angle (degrees, in (-90, 90]) of a 2D intensity image from its second moments."""
    img = img.double().clamp_min(0)
    h, w = torch.meshgrid(
        torch.arange(img.shape[0], dtype=img.dtype), torch.arange(img.shape[1], dtype=img.dtype), indexing="ij"
    )
    m = img.sum()
    ch, cw = (img * h).sum() / m, (img * w).sum() / m
    mu_hh = (img * (h - ch) ** 2).sum() / m
    mu_ww = (img * (w - cw) ** 2).sum() / m
    mu_hw = (img * (h - ch) * (w - cw)).sum() / m
    return math.degrees(0.5 * math.atan2(2 * mu_hw, mu_ww - mu_hh))


@pytest.fixture
def reset_determinism() -> Iterator[None]:
    yield
    set_determinism(None)


# ---------------------------------------------------------------------------------------------------------------
# shapes, types, independence, reproducibility


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["tensor", "numpy", "meta"])
def test_shape_dtype_and_two_different_views(size: int, channels: int, kind: str) -> None:
    x = image((channels, size, size))
    inp: Any = {"tensor": x, "numpy": x.numpy(), "meta": MetaTensor(x)}[kind]
    out = PositivePair(**only(None)).set_random_state(0)(inp)
    assert isinstance(out, tuple) and len(out) == 2
    for v in out:
        assert isinstance(v, torch.Tensor)
        assert v.shape == x.shape and v.dtype == x.dtype
    # with every augmentation forced on, the two draws cannot coincide
    v1, v2 = PositivePair(**{f"{a}_prob": 1.0 for a in AUGMENTATIONS}).set_random_state(0)(inp)
    assert not torch.equal(plain(v1), plain(v2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_floating_dtype_is_kept(dtype: torch.dtype) -> None:
    v1, v2 = PositivePair().set_random_state(1)(image((1, 28, 28), dtype=dtype))
    assert v1.dtype == v2.dtype == dtype


def test_integer_input_is_promoted_to_float32() -> None:
    v1, _ = PositivePair().set_random_state(1)((image((1, 28, 28)) * 255).to(torch.uint8))
    assert v1.dtype == torch.float32


@pytest.mark.parametrize("channels", [1, 2])
def test_3d_input(channels: int) -> None:
    x = image((channels, 16, 20, 12))
    v1, v2 = PositivePair(**{f"{a}_prob": 1.0 for a in AUGMENTATIONS}).set_random_state(3)(x)
    assert v1.shape == v2.shape == x.shape
    assert not torch.equal(plain(v1), plain(v2))


def test_default_views_differ_from_each_other() -> None:
    x = image((1, 28, 28))
    t = PositivePair().set_random_state(5)
    pairs = [t(x) for _ in range(20)]
    # with p = 0.5 for 5 augmentations both views are untouched with probability 1/1024 per pair
    assert sum(not torch.equal(plain(a), plain(b)) for a, b in pairs) >= 18


def test_same_seed_same_views_and_different_seeds_differ() -> None:
    x = image((1, 28, 28))
    kwargs = {f"{a}_prob": 1.0 for a in AUGMENTATIONS}
    a1, a2 = PositivePair(**kwargs).set_random_state(42)(x)
    b1, b2 = PositivePair(**kwargs).set_random_state(42)(x)
    c1, c2 = PositivePair(**kwargs).set_random_state(43)(x)
    assert torch.equal(plain(a1), plain(b1)) and torch.equal(plain(a2), plain(b2))
    assert not torch.equal(plain(a1), plain(c1)) and not torch.equal(plain(a2), plain(c2))


def test_set_random_state_resets_the_stream() -> None:
    x = image((1, 28, 28))
    t = PositivePair().set_random_state(9)
    first = [plain(v) for _ in range(3) for v in t(x)]
    t.set_random_state(9)
    second = [plain(v) for _ in range(3) for v in t(x)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.usefixtures("reset_determinism")
def test_set_determinism_then_construct_is_reproducible() -> None:
    x = image((1, 28, 28))
    set_determinism(seed=123)
    a = [plain(v) for v in PositivePair(**{f"{n}_prob": 1.0 for n in AUGMENTATIONS})(x)]
    set_determinism(seed=123)
    b = [plain(v) for v in PositivePair(**{f"{n}_prob": 1.0 for n in AUGMENTATIONS})(x)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_input_metatensor_is_not_modified() -> None:
    x = MetaTensor(image((1, 28, 28)))
    before = x.clone()
    v1, v2 = PositivePair(**only(None)).set_random_state(0)(x)
    assert len(x.applied_operations) == 0 and torch.equal(plain(x), plain(before))
    assert v1 is not x and v2 is not x and v1 is not v2


# ---------------------------------------------------------------------------------------------------------------
# each augmentation fires at its probability


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_fires_at_its_probability(name: str) -> None:
    x = image((1, 28, 28))
    t = PositivePair(**only(name, 0.5)).set_random_state(2024)
    changed = [not torch.equal(v, x) for v in views(t, x, N_DRAWS)]
    n = len(changed)
    frac = sum(changed) / n
    # a crop may draw the full image (probability 1/15**2 at 28 px), which is far inside the tolerance
    assert abs(frac - 0.5) < 4 * math.sqrt(0.25 / n), f"{name}: fired in {frac:.3f} of {n} views"


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_probability_one_always_fires(name: str) -> None:
    x = image((1, 28, 28))
    # crop_scale below 1 so a "crop" can never be the whole image
    t = PositivePair(**only(name, 1.0, crop_scale=(0.5, 0.9))).set_random_state(7)
    assert all(not torch.equal(v, x) for v in views(t, x, 25))


def test_probability_zero_never_fires() -> None:
    x = image((3, 28, 28))
    t = PositivePair(**only(None)).set_random_state(7)
    assert all(torch.equal(v, x) for v in views(t, x, 25))


# ---------------------------------------------------------------------------------------------------------------
# correctness of the individual augmentations


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_flip_is_horizontal(size: int, channels: int) -> None:
    x = image((channels, size, size))
    for v in PositivePair(**only("flip")).set_random_state(0)(x):
        assert torch.equal(plain(v), torch.flip(x, dims=(-1,)))


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_full_scale_crop_is_identity(size: int, channels: int) -> None:
    x = image((channels, size, size))
    for v in PositivePair(**only("crop", crop_scale=(1.0, 1.0))).set_random_state(0)(x):
        torch.testing.assert_close(plain(v), x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [28, 64])
def test_half_scale_crop_halves_the_slope_of_a_ramp(size: int) -> None:
    # bilinear resizing of a linear ramp is exact inside the image: cropping half of each side and resizing
    # back to full size must halve the per-pixel slope along both axes
    h = torch.arange(size, dtype=torch.float32)[:, None]
    w = torch.arange(size, dtype=torch.float32)[None, :]
    x = (h + 2 * w)[None]
    t = PositivePair(**only("crop", crop_scale=(0.5, 0.5))).set_random_state(0)
    for v in views(t, x, 3):
        inner = v[0, 2:-2, 2:-2]
        torch.testing.assert_close(inner.diff(dim=0), torch.full_like(inner.diff(dim=0), 0.5))
        torch.testing.assert_close(inner.diff(dim=1), torch.full_like(inner.diff(dim=1), 1.0))


def test_noise_residual_std_within_bounds() -> None:
    x = image((1, 64, 64))
    std_max = 0.1
    t = PositivePair(**only("noise", noise_std=std_max)).set_random_state(11)
    stds = torch.stack([(v - x).std() for v in views(t, x, 50)])
    # per-view std is uniform in [0, std_max]; 4096 pixels estimate it to about 1 %
    assert stds.max() <= std_max * 1.05 and stds.min() > 0
    assert abs(stds.mean().item() - std_max / 2) < 4 * (std_max / math.sqrt(12)) / math.sqrt(len(stds))


@pytest.mark.parametrize("sigma", [0.5, 1.0])
@pytest.mark.parametrize("channels", [1, 3])
def test_blur_matches_reference(sigma: float, channels: int) -> None:
    x = image((channels, 28, 28))
    expected = torch.from_numpy(reference_blur(x.numpy(), sigma)).float()
    for v in PositivePair(**only("blur", blur_sigma=(sigma, sigma))).set_random_state(0)(x):
        torch.testing.assert_close(plain(v), expected, atol=1e-4, rtol=0)


def test_rotation_leaves_a_centred_blob_unchanged() -> None:
    size = 64
    h, w = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
    blob = torch.exp(-(h**2 + w**2) / (2 * 6.0**2))[None]
    t = PositivePair(**only("rotate")).set_random_state(0)
    for v in views(t, blob, 3):
        assert not torch.equal(v, blob)
        torch.testing.assert_close(v, blob, atol=1e-2, rtol=0)  # bilinear interpolation error at the peak


def test_rotation_angle_is_bounded_by_the_range_in_degrees() -> None:
    x = bar_image(64)
    assert abs(orientation_deg(x[0])) < 1e-6
    t = PositivePair(**only("rotate", rotate_range_deg=30.0)).set_random_state(0)
    angles = [abs(orientation_deg(v[0])) for v in views(t, x, 40)]
    assert max(angles) <= 30.5
    assert max(angles) > 20.0  # uses the range: P(80 uniform draws all below 20 deg) = (2/3) ** 80


# ---------------------------------------------------------------------------------------------------------------
# dictionary version


def test_dict_aliases() -> None:
    assert PositivePairD is PositivePairDict is PositivePaird


@pytest.mark.parametrize("channels", [1, 3])
def test_dict_writes_two_views_and_keeps_original(channels: int) -> None:
    x = image((channels, 28, 28))
    data = {"img": x, "label": 1}
    t = PositivePaird(keys="img", **{f"{a}_prob": 1.0 for a in AUGMENTATIONS}).set_random_state(0)
    out = t(data)
    assert set(out) == {"img", "img_view1", "img_view2", "label"}
    assert out["img"] is x and out["label"] == 1 and set(data) == {"img", "label"}
    assert out["img_view1"].shape == out["img_view2"].shape == x.shape
    assert not torch.equal(plain(out["img_view1"]), plain(out["img_view2"]))
    assert not torch.equal(plain(out["img_view1"]), x)


def test_dict_custom_suffixes_and_several_keys() -> None:
    data = {"a": image((1, 28, 28), 0), "b": image((1, 28, 28), 1)}
    out = PositivePaird(keys=["a", "b"], view_suffixes=("_q", "_k"), **only("flip"))(data)
    for key in ("a", "b"):
        assert torch.equal(plain(out[f"{key}_q"]), torch.flip(data[key], dims=(-1,)))
        assert torch.equal(plain(out[f"{key}_k"]), torch.flip(data[key], dims=(-1,)))


def test_dict_reproducible_with_set_random_state() -> None:
    data = {"img": image((1, 28, 28))}
    a = PositivePaird(keys="img").set_random_state(3)(data)
    b = PositivePaird(keys="img").set_random_state(3)(data)
    for k in ("img_view1", "img_view2"):
        assert torch.equal(plain(a[k]), plain(b[k]))


def test_dict_missing_keys() -> None:
    with pytest.raises(KeyError):
        PositivePaird(keys="img")({"other": image((1, 28, 28))})
    out = PositivePaird(keys="img", allow_missing_keys=True)({"other": 1})
    assert out == {"other": 1}


@pytest.mark.parametrize("suffixes", [("_a", "_a"), ("", "_b"), ("_a",), "_a_b", ("_a", 2)])
def test_dict_bad_suffixes(suffixes: Any) -> None:
    with pytest.raises(ValueError, match="view_suffixes"):
        PositivePaird(keys="img", view_suffixes=suffixes)


# ---------------------------------------------------------------------------------------------------------------
# argument and input validation

BAD_ARGUMENTS = [
    ({"rotate_prob": -0.1}, "rotate_prob"),
    ({"blur_prob": 1.5}, "blur_prob"),
    ({"noise_prob": float("nan")}, "noise_prob"),
    ({"flip_prob": "half"}, "flip_prob"),
    ({"crop_prob": True}, "crop_prob"),
    ({"rotate_range_deg": -1.0}, "rotate_range_deg"),
    ({"rotate_range_deg": 200.0}, "rotate_range_deg"),
    ({"noise_std": -0.01}, "noise_std"),
    ({"noise_std": float("inf")}, "noise_std"),
    ({"blur_sigma": (0.0, 1.0)}, "blur_sigma"),
    ({"blur_sigma": (2.0, 1.0)}, "blur_sigma"),
    ({"blur_sigma": (1.0,)}, "blur_sigma"),
    ({"blur_sigma": 1.0}, "blur_sigma"),
    ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
    ({"crop_scale": (0.5, 1.2)}, "crop_scale"),
    ({"crop_scale": (0.9, 0.5)}, "crop_scale"),
]


@pytest.mark.parametrize("kwargs, name", BAD_ARGUMENTS)
def test_bad_arguments_raise(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PositivePair(**kwargs)
    with pytest.raises(ValueError, match=name):
        PositivePaird(keys="img", **kwargs)


@pytest.mark.parametrize("shape", [(28, 28), (28,), (1, 1, 28, 28, 4), (1, 0, 28)])
def test_bad_input_shapes_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"shape \("):
        PositivePair()(torch.zeros(shape))
    with pytest.raises(ValueError, match=r"shape \("):
        PositivePaird(keys="img")({"img": torch.zeros(shape)})
