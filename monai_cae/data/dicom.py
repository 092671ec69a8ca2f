"""DICOM radiographs: lazy header reading, pixel decoding to a display-ready grey image, and a MONAI image reader.

Decoding follows the DICOM grayscale pipeline (PS3.3 C.11, PS3.4 N.2): stored values -> Modality LUT (rescale
slope/intercept or LUT sequence) -> VOI LUT (LUT sequence or window) -> MONOCHROME1 inversion, so that larger values
are always brighter. Colour images (RGB, YBR, palette) are converted to luminance. Compressed transfer syntaxes are
decoded by pydicom's pixel handlers (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle, GDCM).
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
import pydicom
from monai.data import ImageReader
from monai.utils import ensure_tuple, optional_import
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.pixels.utils import _get_jpg_parameters
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, apply_windowing
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

from .unusable import DEFAULT_MAX_PIXELS, MAX_BYTES_PER_PIXEL, UnusableImageError, check_image_size

openjpeg, _ = optional_import("openjpeg")

__all__ = [
    "AGE_BANDS",
    "HEADER_FIELDS",
    "RADIOGRAPH_MODALITIES",
    "DicomRadiographReader",
    "decode_dicom",
    "dicom_image_problem",
    "header_fields",
    "is_dicom_file",
    "read_dicom_header",
]

RADIOGRAPH_MODALITIES = ("CR", "DX", "DR")
"""Modalities of 2D projection radiographs (``DR`` is not a DICOM defined term but is written by some devices)."""

HEADER_FIELDS = (
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "StudyDate",
    "Modality",
    "ViewPosition",
    "BodyPartExamined",
    "Manufacturer",
    "StationName",
    "PatientSex",
    "PatientAge",
    "PixelSpacing",
)
"""The only header fields copied out of a file: no name, birth date, address or other identifying field.

``PatientAge`` is kept only as an age band (:data:`AGE_BANDS`), never as the age itself, and ``PixelSpacing`` falls
back on ``ImagerPixelSpacing`` (projection radiographs often carry only the detector's spacing).
"""

AGE_BANDS = ((0, 17), (18, 39), (40, 59), (60, 79), (80, None))
"""Age bands in years, ``(first, last)`` with ``None`` for no upper end; written as ``"0-17"`` ... ``"80+"``."""


_LUMINANCE = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the weights of DICOM's YBR_FULL
# what pydicom needs to decode pixels; an image object lacking any was cut short or damaged
_IMAGE_DESCRIPTION = ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated")
# file meta or the first data elements of an old ACR-NEMA file (no preamble): group 0x0002 or 0x0008
_RAW_GROUPS = (0x0002, 0x0008)


def _looks_like_raw_dicom(head: bytes) -> bool:
    # a dataset written without preamble starts with a (group, element) tag of group 0002 or 0008, in either byte
    # order, followed by an explicit VR (two capitals) or an implicit 4-byte length
    if len(head) < 8:
        return False
    for order in "<>":
        group, element = struct.unpack(f"{order}HH", head[:4])
        if group in _RAW_GROUPS and element < 0x0100:
            vr = head[4:6]
            length = struct.unpack(f"{order}I", head[4:8])[0]
            if (vr.isalpha() and vr.isupper()) or length < 0x10000:
                return True
    return False


def is_dicom_file(path: str) -> bool:
    """Whether a file holds DICOM: the ``DICM`` marker after a 128-byte preamble, or a bare ACR-NEMA style dataset.

    Args:
        path: file to sniff (only its first 132 bytes are read).

    Returns:
        ``True`` for DICOM content, whatever the file name.

    Raises:
        OSError: when the file cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM" or _looks_like_raw_dicom(head)


_INFLATE_CHUNK = 1 << 20
# pydicom inflates a deflated data set whole, in memory, even to read its header
_META_GROUP_LENGTH = struct.Struct("<HH2sHI")


def _check_inflated_size(path: str, max_pixels: int) -> None:
    # a deflated data set is inflated piece by piece, and the file refused as soon as it outgrows the largest image
    # accepted: a few MB of zeros inflate to gigabytes
    with open(path, "rb") as f:
        if f.read(132)[128:] != b"DICM" or read_file_meta_info(path).get("TransferSyntaxUID") != (
            DeflatedExplicitVRLittleEndian
        ):
            return
        group, element, vr, _, group_length = _META_GROUP_LENGTH.unpack(f.read(_META_GROUP_LENGTH.size).ljust(12, b"\0"))
        if (group, element, vr) != (0x0002, 0x0000, b"UL"):
            raise UnusableImageError("corrupt", "deflated data set without the file meta group length")
        f.seek(132 + _META_GROUP_LENGTH.size + group_length)
        limit = max_pixels * MAX_BYTES_PER_PIXEL
        inflater, inflated = zlib.decompressobj(-zlib.MAX_WBITS), 0
        try:
            while not inflater.eof and (data := inflater.unconsumed_tail or f.read(_INFLATE_CHUNK)):
                inflated += len(inflater.decompress(data, _INFLATE_CHUNK))
                if inflated > limit:
                    raise UnusableImageError(
                        "too_large",
                        f"the deflated data set inflates to more than {limit:,} bytes ({MAX_BYTES_PER_PIXEL} bytes "
                        f"for each of max_pixels = {max_pixels:,})",
                    )
        except zlib.error as e:
            raise UnusableImageError("corrupt", f"damaged deflated data set ({e})") from e


def _jpeg_shape(frame: bytes) -> tuple[int, int, int]:
    # pydicom's own parse of the JPEG / JPEG-LS frame header (libjpeg's get_parameters decodes the whole image)
    params = _get_jpg_parameters(frame)
    if "height" not in params:
        raise ValueError("no start-of-frame segment")
    return params["height"], params["width"], params["components"]


def _j2k_shape(frame: bytes) -> tuple[int, int, int]:
    if not hasattr(openjpeg, "get_parameters"):
        raise UnusableImageError("no_decoder", "reading a JPEG 2000 frame header needs pylibjpeg-openjpeg")
    params = openjpeg.get_parameters(frame)  # the SIZ segment only
    return params["rows"], params["columns"], params["samples_per_pixel"]


def _check_stream_size(ds: Dataset, max_pixels: int) -> None:
    # a compressed frame carries its own size, which the decoder follows whatever the header says: a 1 KB JPEG may
    # declare 16000 x 16000 pixels under a header of 512 x 512
    syntax = _transfer_syntax(ds)
    if syntax in JPEGTransferSyntaxes + JPEGLSTransferSyntaxes:
        name, read_shape = "JPEG", _jpeg_shape
    elif syntax in JPEG2000TransferSyntaxes:
        name, read_shape = "JPEG 2000", _j2k_shape
    else:
        return  # native and RLE data are decoded to the header's size; deflate is bounded on reading
    try:
        shape = read_shape(next(generate_frames(ds.PixelData, number_of_frames=1)))
    except UnusableImageError:
        raise
    except Exception as e:  # damaged fragments or stream headers raise StopIteration, ValueError, RuntimeError...
        raise UnusableImageError("corrupt", f"damaged {name} stream ({type(e).__name__}: {e})") from e
    check_image_size(shape, max_pixels, f"the {name} stream")


def read_dicom_header(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Dataset:
    """Read a DICOM file's header without its pixel data.

    Files with a preamble are read strictly; files without one (old ACR-NEMA style, no file meta) are read with
    ``force=True`` and accepted only when they hold SOP or image elements. A file cut short (its last element holds
    fewer bytes than declared, or an image object ends before its image description) is corrupt.

    A deflated data set is first inflated in pieces, and refused as ``"too_large"`` when it outgrows
    ``max_pixels`` times :data:`~monai_cae.data.unusable.MAX_BYTES_PER_PIXEL` bytes, before pydicom inflates it whole.

    Args:
        path: the file.
        max_pixels: the largest image accepted, which bounds how far a deflated data set may inflate.

    Returns:
        The dataset, stopped before the pixel data.

    Raises:
        UnusableImageError: ``"unreadable"``, ``"not_image"``, ``"corrupt"`` or ``"too_large"``.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        if not head:
            raise UnusableImageError("corrupt", "empty file (0 bytes)")
        has_preamble = head[128:132] == b"DICM"
        if not has_preamble and not _looks_like_raw_dicom(head):
            raise UnusableImageError("not_image", "no DICOM preamble or data set, and not a supported image format")
        _check_inflated_size(path, max_pixels)
        # large private blobs stay on disk until asked for
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=not has_preamble, defer_size="64 KB")
        if not any(tag in ds for tag in ("SOPClassUID", "SOPInstanceUID", "Rows")):
            if has_preamble:
                raise UnusableImageError("corrupt", "DICOM marker but no SOP class or image elements (damaged header)")
            raise UnusableImageError("not_image", "bytes that parse as DICOM but hold no SOP or image elements")
        _check_complete(ds)
        # convert the values used later now, so that a damaged one fails here and not halfway through the run
        header_fields(ds)
        _ = ds.get("Rows"), ds.get("Columns"), ds.get("NumberOfFrames")
        return ds
    except UnusableImageError:
        raise
    except InvalidDicomError as e:
        raise UnusableImageError("not_image", f"not a DICOM file ({e})") from e
    except OSError as e:
        raise UnusableImageError("unreadable", f"{type(e).__name__}: {e.strerror or e}") from e
    except Exception as e:  # pydicom raises many types for damaged headers
        raise UnusableImageError("corrupt", f"damaged DICOM header ({type(e).__name__}: {e})") from e


def _check_complete(ds: Dataset) -> None:
    # pydicom stops quietly at the end of a cut file: its last element then holds fewer bytes than it declares
    tags = list(ds.keys())
    if tags:
        last = ds.get_item(tags[-1])
        value, length = getattr(last, "value", None), getattr(last, "length", 0)
        if isinstance(value, bytes) and length != 0xFFFFFFFF and len(value) < length:
            raise UnusableImageError(
                "corrupt", f"truncated file: element {tags[-1]} has {len(value)} of its {length} bytes"
            )
    sop_name = getattr(ds.get("SOPClassUID"), "name", "")
    missing = [name for name in _IMAGE_DESCRIPTION if name not in ds]
    if "Image Storage" in sop_name and missing:
        raise UnusableImageError(
            "corrupt", f"{sop_name} header without {', '.join(missing)} (truncated or damaged file)"
        )


def _age_band(ds: Dataset) -> str:
    # DICOM ages are nnnD, nnnW, nnnM or nnnY; some writers omit the unit (years)
    value = str(ds.get("PatientAge", "") or "").strip().upper()
    unit = value[-1] if value[-1:] in ("D", "W", "M", "Y") else "Y"
    number = value[:-1] if value[-1:] == unit else value
    if not number.isdigit():
        return ""
    years = int(number) // {"D": 365, "W": 52, "M": 12, "Y": 1}[unit]
    first, last = next(band for band in AGE_BANDS if band[1] is None or years <= band[1])
    return f"{first}+" if last is None else f"{first}-{last}"


def _spacing(ds: Dataset) -> str:
    for name in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(name)
        if value:
            return "\\".join(f"{float(v):g}" for v in (value if isinstance(value, MultiValue) else [value]))
    return ""


def _text(value: object) -> str:
    # str() of a MultiValue is a Python list repr; DICOM separates values with a backslash
    if isinstance(value, MultiValue):
        return "\\".join(str(v).strip() for v in value)
    return str(value or "").strip()


# read through a conversion, not copied as they are
_DERIVED_FIELDS = {"PatientAge": _age_band, "PixelSpacing": _spacing}


def header_fields(ds: Dataset) -> dict[str, str]:
    """The :data:`HEADER_FIELDS` of a dataset as stripped strings (empty when absent).

    A multi-valued element is written as DICOM writes it, its values joined by a backslash (``"A\\B"``).
    ``PatientAge`` becomes its band (``"60-79"``), ``PixelSpacing`` the row and column spacing in mm joined by a
    backslash as in DICOM (``"0.168\\0.168"``), from ``ImagerPixelSpacing`` where ``PixelSpacing`` is missing. A
    malformed age or spacing, which only describes the image, is left empty rather than failing the file.

    Args:
        ds: a dataset.

    Returns:
        ``{field: value}``.
    """
    fields = {name: _text(ds.get(name)) for name in HEADER_FIELDS if name not in _DERIVED_FIELDS}
    for name, derive in _DERIVED_FIELDS.items():
        try:
            fields[name] = derive(ds)
        except Exception:  # pydicom raises several types for a damaged value
            fields[name] = ""
    return fields


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid:
        return UID(uid)
    # a file without file meta (ACR-NEMA style) is uncompressed; its encoding is what the reader found
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is not False:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian


def dicom_image_problem(ds: Dataset, max_pixels: int = DEFAULT_MAX_PIXELS) -> UnusableImageError | None:
    """What stops a dataset from being decoded as one 2D image, judged from its header alone.

    Args:
        ds: a dataset (its pixel data may be absent, as after ``stop_before_pixels``).
        max_pixels: the largest image accepted (rows x columns x samples per pixel).

    Returns:
        The problem, or ``None`` when the header describes a decodable 2D image.
    """
    sop_class = ds.get("SOPClassUID")
    sop_name = getattr(sop_class, "name", str(sop_class or "unknown SOP class"))
    if "Rows" not in ds or "Columns" not in ds:
        return UnusableImageError("no_pixel_data", f"no image in this object ({sop_name})")
    try:
        rows, columns = int(ds.Rows or 0), int(ds.Columns or 0)
        frames = int(str(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError) as e:
        return UnusableImageError("corrupt", f"invalid image size or frame count ({e})")
    if rows == 0 or columns == 0:
        return UnusableImageError("empty_image", f"zero-sized image ({rows} x {columns})")
    if frames > 1:
        return UnusableImageError(
            "volume_3d", f"{frames} frames of {rows} x {columns} ({sop_name}) where a 2D radiograph is expected"
        )
    try:
        check_image_size((rows, columns, int(ds.get("SamplesPerPixel", 1) or 1)), max_pixels, "the header")
    except UnusableImageError as e:
        return e
    syntax = _transfer_syntax(ds)
    if not syntax.is_transfer_syntax:
        return UnusableImageError("no_decoder", f"unknown transfer syntax {syntax} (private, or not DICOM's)")
    if syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            return UnusableImageError("no_decoder", f"no pixel decoder exists for {syntax.name} ({syntax})")
        if not decoder.is_available:
            missing = "; ".join(f"{k}: {v}" for k, v in decoder.missing_dependencies)
            return UnusableImageError("no_decoder", f"no decoder installed for {syntax.name} ({missing})")
    return None


def _has_voi_lut(ds: Dataset) -> bool:
    items = ds.get("VOILUTSequence")
    return bool(items) and None not in (items[0].get("LUTDescriptor"), items[0].get("LUTData"))


def _has_window(ds: Dataset) -> bool:
    # a width pydicom refuses (below 1 for LINEAR, 0 or less otherwise) describes no window: the image is shown in
    # its full range rather than refused, as viewers do
    width = ds.get("WindowWidth")
    if ds.get("WindowCenter") in (None, "") or width in (None, ""):
        return False
    first = float(width[0] if isinstance(width, MultiValue) else width)
    return first >= 1 if str(ds.get("VOILUTFunction", "LINEAR")).upper() == "LINEAR" else first > 0


def _output_range(ds: Dataset, apply_voi: bool) -> tuple[float, float]:
    # MONOCHROME1 is inverted about the output range of the last LUT applied (PS3.3 C.7.6.3.1.2, C.11.2.1)
    if apply_voi and _has_voi_lut(ds):  # pydicom prefers the LUT when both are present
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    if apply_voi and _has_window(ds):
        # a window maps everything below / above it to its y_min / y_max, which pydicom derives from the header
        ends = apply_windowing(np.array([-np.inf, np.inf]), ds)
        return float(ends.min()), float(ends.max())
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    ends = apply_modality_lut(np.array([low, high], dtype=np.int64), ds)
    return float(ends.min()), float(ends.max())


def _apply_luts(arr: np.ndarray, ds: Dataset, apply_voi: bool) -> np.ndarray:
    out = apply_modality_lut(arr, ds)
    if apply_voi and (_has_voi_lut(ds) or _has_window(ds)):
        if _has_voi_lut(ds) and np.issubdtype(out.dtype, np.floating) and np.all(out == np.round(out)):
            # an identity rescale gives floats; the VOI LUT indexes by integer values
            out = out.astype(np.int64)
        out = apply_voi_lut(out, ds)
    return out


def decode_dicom(
    source: str | Dataset, apply_voi: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode a single-frame DICOM image to a grey ``float32`` array in which larger values are brighter.

    Grey images go through the Modality LUT and, when ``apply_voi``, the first VOI LUT or window, then MONOCHROME1
    is inverted about the output range. RGB, YBR (converted to RGB by pydicom) and palette colour images become
    BT.601 luminance. 8 to 16 (and 32) bits stored, signed or unsigned, and every transfer syntax with an installed
    decoder are handled; files without file meta are read with ``force=True``. Before anything is inflated or decoded,
    the size that the header and a compressed frame's own stream declare is checked against ``max_pixels``.

    Args:
        source: path of the file, or a dataset read with its pixel data.
        apply_voi: apply the VOI LUT / window stored in the file.
        max_pixels: the largest image accepted (rows x columns x samples per pixel).

    Returns:
        ``(rows, columns)`` float32 image, not normalised.

    Raises:
        UnusableImageError: for an unreadable or corrupt file, a missing image, a multi-frame object, a zero-sized
            image, an image larger than ``max_pixels`` (``"too_large"``) or a transfer syntax without decoder.
    """
    if isinstance(source, Dataset):
        ds = source
    else:
        try:
            _check_inflated_size(source, max_pixels)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = pydicom.dcmread(source, force=True)
        except UnusableImageError:
            raise
        except OSError as e:
            raise UnusableImageError("unreadable", f"{type(e).__name__}: {e.strerror or e}") from e
        except Exception as e:
            raise UnusableImageError("corrupt", f"damaged DICOM file ({type(e).__name__}: {e})") from e
        # a cut encapsulated pixel data element makes pydicom warn and drop the whole data set
        ended = [str(w.message) for w in caught if "End of file" in str(w.message)]
        if ended or len(ds) == 0:
            raise UnusableImageError("corrupt", "truncated file: " + (ended[0] if ended else "no data element read"))
    problem = dicom_image_problem(ds, max_pixels)
    if problem is not None:
        raise problem
    if "PixelData" not in ds:
        raise UnusableImageError("no_pixel_data", "the header describes an image but the file has no pixel data")
    _check_stream_size(ds, max_pixels)
    if not getattr(ds, "file_meta", None) or "TransferSyntaxUID" not in ds.file_meta:
        # pydicom's pixel handlers read the transfer syntax from the file meta, which old files lack
        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = _transfer_syntax(ds)
    try:
        arr = ds.pixel_array
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
        if arr.ndim == 3:
            return (arr[..., :3].astype(np.float64) @ _LUMINANCE).astype(np.float32)
        if arr.ndim != 2:
            raise UnusableImageError("volume_3d", f"decoded pixel array has shape {arr.shape}, not (rows, columns)")
        out = _apply_luts(arr, ds, apply_voi)
        if photometric == "MONOCHROME1":
            low, high = _output_range(ds, apply_voi)
            out = (low + high) - out.astype(np.float64)
        return np.asarray(out, dtype=np.float32)
    except UnusableImageError:
        raise
    except Exception as e:  # decoders raise ValueError, RuntimeError, struct.error... for damaged data
        raise UnusableImageError("corrupt", f"pixel data cannot be decoded ({type(e).__name__}: {e})") from e


class DicomRadiographReader(ImageReader):
    """A MONAI ``ImageReader`` for single-frame DICOM radiographs, decoded with :func:`decode_dicom`.

    Use it with ``monai.transforms.LoadImage``; it recognises DICOM by content, so files without a ``.dcm`` suffix
    work. Arrays are rows first, like the project's PNG reading. Only the image geometry goes into the metadata,
    never a header field.

    Args:
        apply_voi: apply the VOI LUT / window stored in the file.
        max_pixels: the largest image accepted, checked before decoding (see :func:`decode_dicom`).
    """

    def __init__(self, apply_voi: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__()
        self.apply_voi, self.max_pixels = apply_voi, max_pixels

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether every file is DICOM (by content; unreadable files are not)."""
        try:
            return all(is_dicom_file(os.fspath(f)) for f in ensure_tuple(filename))
        except OSError:
            return False

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs) -> list[np.ndarray] | np.ndarray:
        """Decode one file or several (stacked as channels by :meth:`get_data`)."""
        images = [decode_dicom(os.fspath(f), self.apply_voi, self.max_pixels) for f in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: list[np.ndarray] | np.ndarray) -> tuple[np.ndarray, dict]:
        """Array (stacked on a new first axis for several files) and geometry-only metadata."""
        images = list(ensure_tuple(img)) if isinstance(img, (list, tuple)) else [img]
        array = images[0] if len(images) == 1 else np.stack(images)
        meta = {
            "spatial_shape": np.asarray(images[0].shape),
            "original_channel_dim": float("nan") if len(images) == 1 else 0,
        }
        return array, meta
