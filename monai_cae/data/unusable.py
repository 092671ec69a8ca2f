"""What makes an input unusable: the reason codes, the error that carries one, and the size limit on images.

Every image, wherever it enters (the report, bundle inference, training from an archive, the MONAI Label app), is
described by :func:`~monai_cae.data.probe_file` and loaded by :func:`~monai_cae.data.cohort_transform`, and both
check the size an image declares against ``max_pixels`` before a pixel is decoded or inflated: a 1 KB file may
declare 16000 x 16000 pixels, and decoding it would take gigabytes in every loader process.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_BYTES_PER_PIXEL",
    "SKIP_REASONS",
    "UnusableImageError",
    "check_image_size",
    "validate_max_pixels",
]

DEFAULT_MAX_PIXELS = 8192 * 8192
"""The largest image accepted by default (67 megapixels): above every projection radiograph, including 43 x 43 cm
detectors at 0.1 mm (4300 x 4300), stitched long-leg images and films scanned at 500 dpi."""

MAX_BYTES_PER_PIXEL = 8
"""Bytes a pixel may take in a DICOM data set (3 samples of 16 bits is 6): bounds how far a deflated file may inflate."""

SKIP_REASONS = {
    "unreadable": "the file could not be opened or read (permissions, broken link, not a regular file)",
    "not_image": "neither a DICOM file nor a supported image format",
    "corrupt": "truncated or corrupt file (header or pixel data)",
    "no_pixel_data": "DICOM object without an image (structured report, presentation state, plan, ...)",
    "no_decoder": "compressed transfer syntax or image format with no decoder installed",
    "volume_3d": "3D volume or multi-frame object where a 2D radiograph is expected",
    "empty_image": "zero-sized image",
    "too_large": "the image declares more pixels than max_pixels (refused before decoding: a memory bomb or a "
    "volume, not a radiograph)",
    "constant_image": "every pixel has the same value",
    "non_finite": "a pixel is NaN or infinite (a float image with missing values, a rescale that overflows)",
    "duplicate": "SOPInstanceUID already seen in another file",
    "modality": "modality not selected (not a 2D radiograph)",
    "view": "view position not selected",
    "body_part": "body part not selected",
}
"""Reason codes of skipped inputs (``skipped.csv``'s ``reason`` column), with their meaning."""


class UnusableImageError(ValueError):
    """An input that cannot become a model input.

    Args:
        reason: a key of :data:`SKIP_REASONS`.
        detail: a specific, human-readable explanation.

    Raises:
        ValueError: for an unknown reason code.
    """

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in SKIP_REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {sorted(SKIP_REASONS)}.")
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def validate_max_pixels(max_pixels: int) -> int:
    """``max_pixels`` as an ``int``, checked.

    Args:
        max_pixels: the largest number of pixels an image may declare.

    Returns:
        ``int(max_pixels)``.

    Raises:
        ValueError: when it is not a whole number of at least 1.
    """
    whole = isinstance(max_pixels, numbers.Integral) or (isinstance(max_pixels, float) and max_pixels.is_integer())
    if isinstance(max_pixels, bool) or not whole or max_pixels < 1:
        raise ValueError(f"max_pixels must be a whole number of at least 1, got {max_pixels!r}.")
    return int(max_pixels)


def check_image_size(shape: Sequence[int], max_pixels: int, what: str = "the image") -> None:
    """Refuse an image whose declared shape holds more than ``max_pixels`` pixels (all axes counted).

    Args:
        shape: the declared shape (rows, columns and any frame, slice or sample axes).
        max_pixels: the largest accepted number of pixels; at least 1.
        what: what declared the shape, for the message (``"the header"``, ``"the JPEG stream"``).

    Raises:
        UnusableImageError: ``"too_large"``.
        ValueError: for a ``max_pixels`` below 1.
    """
    max_pixels = validate_max_pixels(max_pixels)
    pixels = 1
    for size in shape:
        pixels *= int(size)
    if pixels > max_pixels:
        dims = " x ".join(str(int(s)) for s in shape)
        raise UnusableImageError(
            "too_large", f"{what} declares {dims} = {pixels:,} pixels, above max_pixels = {max_pixels:,}"
        )
