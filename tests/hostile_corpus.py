"""A generated hostile archive: every kind of file a hospital archive holds, broken, strange or malicious, each with
the outcome the cohort pipeline must give it.

The images are real: every DICOM file is the shared NIH radiograph (or a derived copy of it) written with pydicom,
every other image its pixels written with PIL or nibabel. Bombs are small files that declare gigabytes: JPEG and
JPEG 2000 streams whose frame header was patched, headers that lie, a deflated data set of zeros, a NIfTI header.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import nibabel
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pack_bits
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

SELECTED = "selected"
"""The outcome of a good image: selected by the scan, then processed."""

SOURCE = "nih_cxr_covid0000.dcm"


@dataclass(frozen=True)
class HostileFile:
    """One file (or link, FIFO, folder) of the corpus.

    Attributes:
        name: path relative to the corpus root (may hold bytes that are not UTF-8, as surrogate escapes).
        kind: what it is, in words.
        outcome: ``"selected"`` for a good image, or the reason code it must be skipped with.
        bomb: a file that declares gigabytes, refused before decoding.
        alone: the outcome when the file is seen on its own (a server request), where it differs from the archive's:
            a copy is only a duplicate beside its original.
        served: whether a server on the corpus offers it: not what is no regular file, a link out of the corpus, or
            neither DICOM nor named as an image.
    """

    name: str
    kind: str
    outcome: str
    bomb: bool = False
    alone: str | None = None
    served: bool = True

    @property
    def outcome_alone(self) -> str:
        """The outcome of the file on its own."""
        return self.alone or self.outcome


def _pixels(shared_data: str, size: int = 256) -> np.ndarray:
    ds = pydicom.dcmread(os.path.join(shared_data, "dicom", SOURCE))
    image = Image.fromarray(ds.pixel_array).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _base(shared_data: str, pixels: np.ndarray) -> Dataset:
    """The shared radiograph's header (DX chest) with new UIDs, holding ``pixels`` (8-bit grey)."""
    ds = pydicom.dcmread(os.path.join(shared_data, "dicom", SOURCE))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.BodyPartExamined = "CHEST"
    ds.set_pixel_data(pixels, "MONOCHROME2", 8)
    return ds


def _jpeg_bytes(pixels: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _patch_jpeg_size(jpeg: bytes, rows: int, columns: int) -> bytes:
    # the start-of-frame segment: marker, length, precision, then height and width
    data, i = bytearray(jpeg), 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    data[i + 5 : i + 9] = struct.pack(">HH", rows, columns)
    return bytes(data)


def _patch_j2k_size(codestream: bytes, rows: int, columns: int) -> bytes:
    # the SIZ segment: marker, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz (one tile covering the image)
    data = bytearray(codestream)
    i = data.index(b"\xff\x51")
    data[i + 6 : i + 14] = struct.pack(">II", columns, rows)
    data[i + 22 : i + 30] = struct.pack(">II", columns, rows)
    return bytes(data)


def _with_frame(ds: Dataset, frame: bytes, syntax: UID, rows: int, columns: int) -> Dataset:
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns = rows, columns
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


def build_corpus(root: str, shared_data: str) -> list[HostileFile]:
    """Write the corpus into ``root`` (which must not exist yet).

    Args:
        root: the corpus folder; one image is written beside it, for a link out of the corpus.
        shared_data: the shared data folder (its ``dicom/`` radiographs).

    Returns:
        Every file written, with its expected outcome.
    """
    os.makedirs(root)
    pixels = _pixels(shared_data)
    files: list[HostileFile] = []

    def put(name: str, kind: str, outcome: str, write: Callable[[str], None], bomb: bool = False,
            alone: str | None = None, served: bool = True) -> None:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write(path)
        files.append(HostileFile(name, kind, outcome, bomb, alone, served))

    def dicom(ds: Dataset, **save) -> Callable[[str], None]:
        return lambda path: ds.save_as(path, **save)

    def derived(**attributes) -> Dataset:
        ds = _base(shared_data, pixels)
        for key, value in attributes.items():
            if value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value)
        return ds

    def raw(data: bytes) -> Callable[[str], None]:
        def write(path: str) -> None:
            with open(path, "wb") as f:
                f.write(data)

        return write

    # good images: every one must be processed
    put("2019/DX/plain.dcm", "plain 8-bit DICOM", SELECTED, dicom(derived()))
    put("2019/DX/named.png", "DICOM named .png", SELECTED, dicom(derived()))
    put("2019/DX/no_extension", "DICOM without extension", SELECTED, dicom(derived()))
    no_meta = derived()
    del no_meta.file_meta
    put("2019/DX/acr_nema.dcm", "DICOM without preamble or file meta (ACR-NEMA style)", SELECTED,
        lambda p: no_meta.save_as(p, implicit_vr=True, little_endian=True))
    mono1 = derived()
    mono1.set_pixel_data(255 - pixels, "MONOCHROME1", 8)
    put("2019/DX/monochrome1.dcm", "MONOCHROME1", SELECTED, dicom(mono1))
    put("2019/DX/window0.dcm", "Window Width 0", SELECTED, dicom(derived(WindowCenter=128, WindowWidth=0)))
    deep = derived()
    deep.set_pixel_data(pixels.astype(np.uint16) * 16, "MONOCHROME2", 12)
    put("2019/DX/12bit.dcm", "12 bits stored in 16", SELECTED, dicom(deep))
    signed = derived()
    signed.set_pixel_data(pixels.astype(np.int16) * 64 - 8192, "MONOCHROME2", 16)
    put("2019/DX/signed16.dcm", "signed 16-bit", SELECTED, dicom(signed))
    rgb = derived()
    rgb.set_pixel_data(np.stack([pixels] * 3, -1), "RGB", 8)
    put("2019/DX/rgb.dcm", "RGB", SELECTED, dicom(rgb))
    ybr = derived()
    ybr.set_pixel_data(np.stack([pixels, np.full_like(pixels, 128), np.full_like(pixels, 128)], -1), "YBR_FULL", 8)
    put("2019/DX/ybr_full.dcm", "YBR_FULL", SELECTED, dicom(ybr))
    palette = derived()
    palette.set_pixel_data(pixels, "PALETTE COLOR", 8)
    ramp = np.arange(256, dtype=np.uint16) * 257
    for offset in range(3):  # red, green, blue
        palette.add_new(0x00281101 + offset, "US", [256, 0, 16])
        palette.add_new(0x00281201 + offset, "OW", ramp.tobytes())
    put("2019/DX/palette.dcm", "PALETTE COLOR", SELECTED, dicom(palette))
    rle = derived()
    rle.compress(RLELossless)
    put("2019/DX/rle.dcm", "RLE Lossless", SELECTED, dicom(rle))
    j2k = derived()
    j2k.compress(JPEG2000Lossless)
    put("2019/DX/j2k.dcm", "JPEG 2000 Lossless", SELECTED, dicom(j2k))
    jpeg = _with_frame(derived(), _jpeg_bytes(pixels), JPEGBaseline8Bit, *pixels.shape)
    put("2019/DX/jpeg.dcm", "JPEG Baseline", SELECTED, dicom(jpeg))
    deflated = derived()
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    put("2019/DX/deflated.dcm", "Deflated Explicit VR Little Endian", SELECTED, dicom(deflated))
    wide = derived()
    wide.BitsAllocated = wide.BitsStored = 32
    wide.HighBit = 31
    wide.PixelData = (pixels.astype(np.uint32) * 1_000_000).tobytes()
    put("2019/DX/32bit.dcm", "32 bits stored", SELECTED, dicom(wide))
    binary = derived()
    binary.BitsAllocated = binary.BitsStored = 1
    binary.HighBit = 0
    binary.PixelData = pack_bits((pixels > 128).astype(np.uint8))
    put("2019/DX/1bit.dcm", "1 bit stored (a bitmap)", SELECTED, dicom(binary))
    colour_jpeg = io.BytesIO()
    Image.fromarray(np.stack([pixels, pixels, 255 - pixels], -1), "RGB").save(colour_jpeg, format="JPEG", subsampling=2)
    ybr422 = derived(SamplesPerPixel=3, PhotometricInterpretation="YBR_FULL_422", PlanarConfiguration=0)
    put("2019/DX/ybr_full_422.dcm", "YBR_FULL_422 (a colour JPEG)", SELECTED,
        dicom(_with_frame(ybr422, colour_jpeg.getvalue(), JPEGBaseline8Bit, *pixels.shape)))
    strip = derived()
    strip.set_pixel_data(np.ascontiguousarray(np.tile(pixels[:2], (1, 80))[:, :20000]), "MONOCHROME2", 8)
    put("2019/DX/strip.dcm", "a 2 x 20000 strip (extreme aspect ratio)", SELECTED, dicom(strip))
    put("2019/DX/caf\udce9.dcm", "a Latin-1 file name (not UTF-8)", SELECTED, dicom(derived()))
    put("Jos\udce9/20190101/latin1_folder.png", "PNG in a Latin-1 folder name", SELECTED,
        lambda p: Image.fromarray(pixels).save(p, format="PNG"))
    put("2019/DX/no_patient_id.dcm", "no PatientID", SELECTED, dicom(derived(PatientID=None)))
    put("2019/DX/multi_value_id.dcm", "PatientID with a backslash (multi-valued)", SELECTED,
        dicom(derived(PatientID="A\\B")))
    put("2019/DX/=formula.dcm", "formula values in name and header", SELECTED,
        dicom(derived(PatientID="=HYPERLINK(\"http://x\")", StationName="+SUM(1,2)", Manufacturer="@cmd")))
    put("2019/DX/quote\"new\nline.dcm", "quote and newline in the file name", SELECTED, dicom(derived()))
    put("2019/DX/" + "L" * 200 + ".dcm", "a 204-character file name", SELECTED, dicom(derived()))
    put("2019/DX/folder.dcm/inside.dcm", "an image inside a folder named like an image", SELECTED, dicom(derived()))
    whole = derived()
    put("2019/DX/zz_original.dcm", "the original of a truncated copy that sorts first", SELECTED, dicom(whole))
    put("patients/p01/16bit.png", "16-bit PNG", SELECTED,
        lambda p: Image.fromarray(pixels.astype(np.uint16) * 257).save(p, format="PNG"))
    put("patients/p02/photo.jpg", "JPEG file", SELECTED, lambda p: Image.fromarray(pixels).save(p, format="JPEG"))
    put("patients/p03/scan.tif", "TIFF", SELECTED, lambda p: Image.fromarray(pixels).save(p, format="TIFF"))
    put("patients/p04/float.nii.gz", "2D float NIfTI", SELECTED,
        lambda p: nibabel.save(nibabel.Nifti1Image(pixels.T.astype(np.float32), np.eye(4)), p))

    # refused with a reason, and the run goes on
    whole_bytes = io.BytesIO()
    whole.save_as(whole_bytes)
    put("2019/DX/aa_truncated_copy.dcm", "truncated copy carrying the original's SOPInstanceUID", "duplicate",
        raw(whole_bytes.getvalue()[: len(whole_bytes.getvalue()) // 2]), alone="corrupt")
    cut = io.BytesIO()
    derived().save_as(cut)
    put("broken/truncated_pixels.dcm", "pixel data cut short", "corrupt", raw(cut.getvalue()[:-5000]))
    put("broken/truncated_header.dcm", "header cut short", "corrupt", raw(cut.getvalue()[:400]))
    put("broken/empty.dcm", "zero bytes", "corrupt", raw(b""))
    put("broken/notes.txt", "a text file", "not_image", raw(b"clinical notes, not an image\n"), served=False)
    put("broken/text.dcm", "text named .dcm", "not_image", raw(b"this is not DICOM\n" * 20))
    put("broken/random.png", "random bytes named .png", "corrupt", raw(np.random.default_rng(0).bytes(4096)))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a.dcm", cut.getvalue())
    put("broken/archive.zip", "a ZIP archive", "not_image", raw(zipped.getvalue()), served=False)
    put("broken/photo.gif", "a GIF (unsupported format)", "not_image",
        lambda p: Image.fromarray(pixels).save(p, format="GIF"), served=False)
    damaged = bytearray(cut.getvalue())
    damaged[300:340] = b"\xff" * 40
    put("broken/damaged_header.dcm", "garbage bytes in the header", "corrupt", raw(bytes(damaged)))
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.Modality, sr.PatientID = "DX", "SR-1"
    put("broken/report_sr.dcm", "a structured report (no pixel data)", "no_pixel_data", dicom(sr))
    multi = derived()
    multi.set_pixel_data(np.stack([pixels, pixels]), "MONOCHROME2", 8)
    put("broken/two_frames.dcm", "two frames", "volume_3d", dicom(multi))
    put("broken/volume.nii", "a 3D NIfTI", "volume_3d",
        lambda p: nibabel.save(nibabel.Nifti1Image(np.zeros((16, 16, 16), np.float32), np.eye(4)), p))
    put("broken/zero_rows.dcm", "Rows 0", "empty_image", dicom(derived(Rows=0)))
    single = derived()
    single.set_pixel_data(pixels[:1, :1].copy(), "MONOCHROME2", 8)
    put("broken/one_pixel.dcm", "a 1 x 1 image", "constant_image", dicom(single))
    flat = derived()
    flat.set_pixel_data(np.full_like(pixels, 90), "MONOCHROME2", 8)
    put("broken/constant.dcm", "every pixel equal", "constant_image", dicom(flat))
    nan = pixels.T.astype(np.float32)
    nan[10, 10] = np.nan
    put("broken/nan.nii", "float NIfTI with a NaN", "non_finite",
        lambda p: nibabel.save(nibabel.Nifti1Image(nan, np.eye(4)), p))
    inf = pixels.T.astype(np.float32)
    inf[5, 5] = np.inf
    put("broken/inf.nii", "float NIfTI with an inf", "non_finite",
        lambda p: nibabel.save(nibabel.Nifti1Image(inf, np.eye(4)), p))
    put("broken/slope_overflow.dcm", "Rescale Slope overflowing float32", "non_finite",
        dicom(derived(RescaleSlope="1e38", RescaleIntercept="0")))
    unknown = derived()
    unknown.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9.9999.1"
    put("broken/unknown_syntax.dcm", "an unknown transfer syntax", "no_decoder",
        lambda p: unknown.save_as(p, enforce_file_format=False, implicit_vr=False, little_endian=True))
    put("other/ct.dcm", "a CT slice", "modality", dicom(derived(Modality="CT")))
    put("other/leg.dcm", "a leg radiograph", "body_part", dicom(derived(BodyPartExamined="LEG")))

    # links and special files
    put("links/zz_link_to_plain.dcm", "a link to a good image (the same SOPInstanceUID)", "duplicate",
        lambda p: os.symlink(os.path.join(root, "2019/DX/plain.dcm"), p), alone=SELECTED)
    put("links/broken_link.dcm", "a link to nothing", "unreadable", lambda p: os.symlink("/nonexistent/x.dcm", p),
        served=False)
    put("links/loop_a.dcm", "a link loop", "unreadable",
        lambda p: (os.symlink("loop_b.dcm", p), os.symlink("loop_a.dcm", os.path.join(os.path.dirname(p), "loop_b.dcm"))),
        served=False)
    files.append(HostileFile("links/loop_b.dcm", "the other half of the loop", "unreadable", served=False))
    put("links/fifo.dcm", "a FIFO (would block a reader)", "unreadable", os.mkfifo, served=False)
    outside = os.path.join(os.path.dirname(root), "outside_the_corpus.dcm")
    derived().save_as(outside)
    put("links/outside.dcm", "a link to an image outside the corpus (an archive may link; a server never serves it)",
        SELECTED, lambda p: os.symlink(outside, p), served=False)

    # bombs: refused before any pixel is decoded or inflated
    small_jpeg = _jpeg_bytes(np.full((16, 16), 128, np.uint8))
    for side in (16000, 60000):
        put(f"bombs/jpeg_{side}.dcm", f"1 KB JPEG DICOM declaring {side} x {side}", "too_large",
            dicom(_with_frame(derived(), _patch_jpeg_size(small_jpeg, side, side), JPEGBaseline8Bit, side, side)),
            bomb=True)
    put("bombs/jpeg_lying_header.dcm", "header 256 x 256, JPEG stream 16000 x 16000", "too_large",
        dicom(_with_frame(derived(), _patch_jpeg_size(small_jpeg, 16000, 16000), JPEGBaseline8Bit, 256, 256)),
        bomb=True)
    j2k_frame = pydicom.encaps.generate_frames(j2k.PixelData, number_of_frames=1)
    put("bombs/j2k_lying_header.dcm", "header 256 x 256, JPEG 2000 stream 16000 x 16000", "too_large",
        dicom(_with_frame(derived(), _patch_j2k_size(next(j2k_frame), 16000, 16000), JPEG2000Lossless, 256, 256)),
        bomb=True)
    zeros = derived()
    zeros.add_new(0x00091010, "LO", "monai_cae test")
    zeros.add_new(0x00091011, "OB", bytes(600_000_000))
    zeros.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    put("bombs/deflated.dcm", "1 MB deflated data set inflating to 600 MB", "too_large", dicom(zeros), bomb=True)
    del zeros
    header = nibabel.Nifti1Header()
    header.set_data_dtype(np.float64)
    header.set_data_shape((32000, 32000))
    put("bombs/header.nii", "a NIfTI header asking for 8 GB", "too_large",
        raw(header.binaryblock + bytes(4 + 64)), bomb=True)
    put("bombs/png_20000.png", "a PNG of 20000 x 20000 zeros (400 KB)", "too_large",
        lambda p: Image.new("L", (20000, 20000)).save(p, format="PNG"), bomb=True)
    put("bombs/png_9000.png", "a PNG of 9000 x 9000 (above the default limit, below Pillow's)", "too_large",
        lambda p: Image.new("L", (9000, 9000), 7).save(p, format="PNG"), bomb=True)
    big = derived(Rows=60000, Columns=60000)
    put("bombs/native_header.dcm", "a native header declaring 60000 x 60000 over 64 KB of pixels", "too_large",
        dicom(big, enforce_file_format=False), bomb=True)
    return files

