"""DICOM decoding, the archive manifest and cohort loading, against real files (the shared data, pydicom's and
pydicom-data's test files) and independent reference formulas; pydicom is never mocked."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil

import nibabel
import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import LoadImage
from PIL import Image
from pydicom.data import get_testdata_file

from monai_cae.data import (
    CohortDataset,
    DicomRadiographReader,
    UnusableImageError,
    cohort_transform,
    decode_dicom,
    is_dicom_file,
    preprocessing_transform,
    pseudonymize,
    read_dicom_header,
    scan_archive,
)

NIH = "nih_cxr_covid0000.dcm"
SIIM = "siim_cr_jpeg_baseline.dcm"
SIIM_MONO1 = "siim_cr_jpeg_baseline_monochrome1.dcm"
LUMINANCE = np.array([0.299, 0.587, 0.114])


def shared_dicom(shared_data: str, name: str) -> str:
    return os.path.join(shared_data, "dicom", name)


def pydicom_file(name: str) -> str:
    # pydicom's own files and pydicom-data's (installed with the dicom extra): nothing is downloaded
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.fail(f"pydicom test file {name} is missing: install the dicom extra (pydicom-data).")
    return path


# ---------------------------------------------------------------------------------------------------------------
# the shared real chest radiographs


@pytest.mark.parametrize(
    "name, shape, mean, modality",
    [(NIH, (1024, 1024), 180.0587, "DX"), (SIIM, (1024, 1024), 160.3980, "CR")],
)
def test_shared_radiographs_decode_to_their_stored_pixels(shared_data, name, shape, mean, modality) -> None:
    path = shared_dicom(shared_data, name)
    image = decode_dicom(path)
    ds = pydicom.dcmread(path)
    assert ds.Modality == modality and ds.PhotometricInterpretation == "MONOCHROME2"
    assert image.shape == shape and image.dtype == np.float32
    # 8-bit MONOCHROME2 without LUTs: the display values are the stored ones (JPEG decoded for the CR)
    np.testing.assert_array_equal(image, ds.pixel_array.astype(np.float32))
    assert image.mean() == pytest.approx(mean, abs=1e-3)


def test_monochrome1_twin_is_inverted(shared_data) -> None:
    mono2 = decode_dicom(shared_dicom(shared_data, SIIM))
    mono1 = decode_dicom(shared_dicom(shared_data, SIIM_MONO1))
    # 8 bits stored, no LUT: MONOCHROME1 is inverted about the output range [0, 255]
    np.testing.assert_array_equal(mono1, 255.0 - mono2)
    transform = cohort_transform(28)
    x2 = transform({"image": shared_dicom(shared_data, SIIM), "format": "dicom"})["image"]
    x1 = transform({"image": shared_dicom(shared_data, SIIM_MONO1), "format": "dicom"})["image"]
    assert x1.shape == (1, 28, 28)
    # percentile scaling is symmetric and the area resize linear: the model inputs are exact negatives
    torch.testing.assert_close(x1, 1.0 - x2, atol=1e-5, rtol=0)


def test_header_is_read_lazily_and_without_identifying_fields(shared_data) -> None:
    ds = read_dicom_header(shared_dicom(shared_data, NIH))
    assert "PixelData" not in ds and ds.PatientID == "Covid0000"
    entries = scan_archive(os.path.join(shared_data, "dicom"), progress=False)
    by_name = {os.path.basename(e.path): e for e in entries}
    nih, siim, twin = by_name[NIH], by_name[SIIM], by_name[SIIM_MONO1]
    assert (nih.status, nih.Modality, nih.PatientID, nih.TransferSyntaxUID) == (
        "selected", "DX", "Covid0000", "1.2.840.10008.1.2"
    )
    assert (siim.status, siim.Modality, siim.ViewPosition, siim.BodyPartExamined) == ("selected", "CR", "PA", "CHEST")
    assert siim.TransferSyntaxUID == "1.2.840.10008.1.2.4.50" and (siim.rows, siim.columns) == (1024, 1024)
    # the twin was made by changing one tag: it repeats the SOPInstanceUID
    assert (twin.status, twin.reason) == ("skipped", "duplicate") and SIIM in twin.detail


@pytest.mark.parametrize(
    "kwargs, skipped",
    [
        ({"modalities": ["CR"]}, {NIH: "modality"}),
        ({"views": ["AP"]}, {SIIM: "view", SIIM_MONO1: "view"}),  # the DX has no ViewPosition: an empty tag passes
        ({"body_parts": ["ABDOMEN"]}, {SIIM: "body_part", SIIM_MONO1: "body_part"}),
        ({"modalities": None, "views": ["PA"], "body_parts": ["chest"]}, {}),
    ],
)
def test_selection_filters(shared_data, kwargs, skipped) -> None:
    entries = scan_archive(os.path.join(shared_data, "dicom"), progress=False, **kwargs)
    found = {os.path.basename(e.path): e.reason for e in entries if e.status == "skipped" and e.reason != "duplicate"}
    assert found == skipped


# ---------------------------------------------------------------------------------------------------------------
# pydicom's test files: the same pixels in several transfer syntaxes

LOSSLESS_PAIRS = [
    ("MR_small.dcm", "MR_small_RLE.dcm"),
    ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
    ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
    ("MR_small.dcm", "MR_small_implicit.dcm"),
    ("MR_small.dcm", "MR_small_bigendian.dcm"),
    ("SC_rgb.dcm", "SC_rgb_rle.dcm"),
    ("SC_rgb.dcm", "SC_rgb_jpeg_gdcm.dcm"),  # JPEG Lossless SV1
    ("SC_rgb.dcm", "SC_rgb_gdcm_KY.dcm"),  # JPEG 2000
    ("SC_rgb_16bit.dcm", "SC_rgb_rle_16bit.dcm"),
    ("US1_UNCR.dcm", "US1_J2KR.dcm"),  # YBR_RCT
    ("RG3_UNCR.dcm", "RG3_J2KR.dcm"),  # CR, MONOCHROME1, 10 bits, window
    ("JPEG2000_UNC.dcm", "JPEG2000.dcm"),
]
LOSSY_PAIRS = [
    ("SC_rgb.dcm", "SC_rgb_dcmtk_+eb+cr.dcm", 2.0),  # JPEG Baseline
    ("RG3_UNCR.dcm", "RG3_J2KI.dcm", 10.0),  # lossy JPEG 2000, out of 1023
]


@pytest.mark.parametrize("reference, compressed", LOSSLESS_PAIRS)
def test_lossless_syntaxes_decode_equal_to_their_reference(reference, compressed) -> None:
    expected = decode_dicom(pydicom_file(reference))
    np.testing.assert_array_equal(decode_dicom(pydicom_file(compressed)), expected)


def test_signed_ct_pair_decodes_equal_through_the_modality_lut() -> None:
    # the J2K copy says 16 bits stored where the original says 14, which changes the window's output range (PS3.3
    # C.11.2.1.2): the pixels agree up to the VOI stage
    expected = decode_dicom(pydicom_file("693_UNCR.dcm"), apply_voi=False)
    np.testing.assert_array_equal(decode_dicom(pydicom_file("693_J2KR.dcm"), apply_voi=False), expected)


@pytest.mark.parametrize("reference, compressed, tolerance", LOSSY_PAIRS)
def test_lossy_syntaxes_decode_close_to_their_reference(reference, compressed, tolerance) -> None:
    got, expected = decode_dicom(pydicom_file(compressed)), decode_dicom(pydicom_file(reference))
    assert np.abs(got - expected).max() <= tolerance


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEG-LL.dcm", "JPEGLSNearLossless_16.dcm"])
def test_other_codecs_decode(name) -> None:
    ds = pydicom.dcmread(pydicom_file(name))
    image = decode_dicom(pydicom_file(name))
    assert image.shape == (ds.Rows, ds.Columns) and np.isfinite(image).all() and image.std() > 0


def linear_window(x: np.ndarray, center: float, width: float, y_min: float, y_max: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently of pydicom."""
    x = x.astype(np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * (y_max - y_min) + y_min
    return np.where(x <= low, y_min, np.where(x > high, y_max, y))


def test_cr_monochrome1_goes_through_window_then_inversion() -> None:
    path = pydicom_file("RG3_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 10
    windowed = linear_window(ds.pixel_array, float(ds.WindowCenter), float(ds.WindowWidth), 0, 1023)
    np.testing.assert_allclose(decode_dicom(path), 1023 - windowed, atol=1e-3)
    # without the VOI LUT only the inversion about the stored range remains
    np.testing.assert_array_equal(decode_dicom(path, apply_voi=False), 1023.0 - ds.pixel_array)


def test_signed_pixels_go_through_the_modality_lut() -> None:
    path = pydicom_file("693_UNCR.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PixelRepresentation == 1 and ds.pixel_array.min() < 0
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(decode_dicom(path, apply_voi=False), expected.astype(np.float32))


def test_rgb_becomes_luminance() -> None:
    ds = pydicom.dcmread(pydicom_file("SC_rgb.dcm"))
    expected = (ds.pixel_array.astype(np.float64) @ LUMINANCE).astype(np.float32)
    np.testing.assert_array_equal(decode_dicom(pydicom_file("SC_rgb.dcm")), expected)


def test_file_without_preamble_or_file_meta(shared_data, tmp_path) -> None:
    ds = pydicom.dcmread(shared_dicom(shared_data, NIH))
    del ds.file_meta
    ds.preamble = None
    raw = str(tmp_path / "OLDFILE")
    ds.save_as(raw, implicit_vr=True, little_endian=True, enforce_file_format=False)
    with open(raw, "rb") as f:
        assert f.read(2) == b"\x08\x00"  # starts straight with group 0008: no preamble, no DICM
    assert is_dicom_file(raw) and read_dicom_header(raw).PatientID == "Covid0000"
    np.testing.assert_array_equal(decode_dicom(raw), decode_dicom(shared_dicom(shared_data, NIH)))


@pytest.mark.parametrize(
    "name, reason",
    [("emri_small.dcm", "volume_3d"), ("reportsi.dcm", "no_pixel_data"), ("rtplan.dcm", "no_pixel_data")],
)
def test_objects_that_are_not_2d_images_are_refused_with_a_reason(name, reason) -> None:
    with pytest.raises(UnusableImageError) as error:
        decode_dicom(pydicom_file(name))
    assert error.value.reason == reason


def test_reader_plugs_into_monai_load_image(shared_data) -> None:
    path = shared_dicom(shared_data, SIIM_MONO1)
    reader = DicomRadiographReader()
    assert reader.verify_suffix(path) and not reader.verify_suffix(os.path.join(shared_data, "README.md"))
    image = LoadImage(image_only=True, ensure_channel_first=True)(path, reader=reader)
    assert image.shape == (1, 1024, 1024)
    np.testing.assert_array_equal(image[0].numpy(), decode_dicom(path))


# ---------------------------------------------------------------------------------------------------------------
# other formats, the cache, pseudonyms


def test_dicom_nifti_and_png_of_the_same_pixels_give_the_same_model_input(shared_data, tmp_path) -> None:
    ds = pydicom.dcmread(shared_dicom(shared_data, NIH))
    pixels = np.asarray(Image.fromarray(ds.pixel_array).resize((96, 80)))  # not square: exercises the padding
    ds.PixelData, (ds.Rows, ds.Columns) = pixels.tobytes(), pixels.shape
    for name in ("patient", "patient/20200101"):
        os.makedirs(tmp_path / name, exist_ok=True)
    ds.save_as(tmp_path / "patient" / "image.dcm")
    Image.fromarray(pixels).save(tmp_path / "patient" / "image.png")
    nibabel.save(nibabel.Nifti1Image(pixels.T.copy(), np.eye(4)), tmp_path / "patient" / "20200101" / "image.nii.gz")
    entries = scan_archive(str(tmp_path), progress=False)
    assert sorted((e.format, e.status, e.rows, e.columns) for e in entries) == [
        ("dicom", "selected", 80, 96), ("image", "selected", 80, 96), ("nifti", "selected", 80, 96)
    ]
    nifti = next(e for e in entries if e.format == "nifti")
    assert (nifti.PatientID, nifti.StudyDate) == ("patient", "20200101")
    cohort = CohortDataset(entries, img_size=28)
    images = [cohort[i]["image"] for i in range(3)]
    assert images[0].shape == (1, 28, 28)
    for image in images[1:]:
        torch.testing.assert_close(image, images[0], atol=1e-6, rtol=0)
    # the same pipeline as the project's image folders
    folder = preprocessing_transform(28)({"image": str(tmp_path / "patient" / "image.png")})["image"]
    torch.testing.assert_close(folder, images[0], atol=1e-6, rtol=0)


def test_persistent_cache_gives_the_same_images(shared_data, tmp_path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    shutil.copy(shared_dicom(shared_data, NIH), archive / "a")
    entries = scan_archive(str(archive), progress=False)
    plain = CohortDataset(entries, 28)[0]["image"]
    cached = CohortDataset(entries, 28, cache_dir=str(tmp_path / "cache"))
    first, second = cached[0]["image"], cached[0]["image"]
    assert len(list((tmp_path / "cache" / "28x28").iterdir())) == 1
    torch.testing.assert_close(first, plain)
    torch.testing.assert_close(second, plain)


def test_pseudonyms_are_keyed_hmacs(shared_data) -> None:
    expected = "P-" + hmac.new(b"secret", b"Covid0000", hashlib.sha256).hexdigest()[:24]
    assert pseudonymize("Covid0000", "secret", prefix="P-") == expected
    assert pseudonymize("Covid0000", "other") != pseudonymize("Covid0000", "secret") and pseudonymize("", "k") == ""
    with pytest.raises(ValueError, match="key"):
        pseudonymize("Covid0000", "")
    runs = [scan_archive(os.path.join(shared_data, "dicom"), pseudonymize_key="secret", progress=False) for _ in "ab"]
    assert [e.PatientID for e in runs[0]] == [e.PatientID for e in runs[1]]
    nih = next(e for e in runs[0] if e.Modality == "DX")
    assert nih.PatientID == expected and nih.image_id.startswith("I-") and "Covid" not in nih.image_id
