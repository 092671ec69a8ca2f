"""Hostile archives and model files (issue 13): formula cells, file names that are not UTF-8, images without
PatientID, report folders inside the archive, staging folders of killed runs, unusable model files, broken windows,
misnamed DICOM and non-finite pixels. Every file is real: generated with pydicom, numpy, nibabel and PIL from the
shared radiographs; the model is a brief real bundle training."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import nibabel
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.uid import generate_uid

from monai_cae.data import (
    DEFAULT_MAX_PIXELS,
    CohortDataLoader,
    CohortDataset,
    ManifestEntry,
    UnusableImageError,
    check_image_size,
    cohort_transform,
    decode_dicom,
    read_manifest,
    scan_archive,
    write_manifest,
)
from monai_cae.data import SKIP_REASONS
from monai_cae.data.dicom import header_fields
from monai_cae.data.manifest import REPORT_MARKER, csv_cell, display_text
from monai_cae.engines import assign_strata
from monai_cae.engines.model_card import load_trained_model
from monai_cae.reports import writer
from monai_cae.reports.cli import main as report_main


NIH = "nih_cxr_covid0000.dcm"
SIIM_MONO1 = "siim_cr_jpeg_baseline_monochrome1.dcm"
CSV_FILES = ("manifest.csv", "skipped.csv", "assignments.csv", "strata_per_image.csv", "strata_per_patient.csv")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
def run_report(archive: str, output: str, model: str, *options: str) -> int:
    return report_main([archive, output, "--model", model, "--quiet", "--device", "cpu", "--num-workers", "0",
                        *options])


def read_csv(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def derived_dicom(shared_data: str, path: str, source: str = NIH, **attributes) -> None:
    """A real radiograph under a new SOPInstanceUID (not a duplicate), with header attributes changed (``None``
    deletes one)."""
    ds = pydicom.dcmread(os.path.join(shared_data, "dicom", source))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for name, value in attributes.items():
        if value is None:
            delattr(ds, name)
        else:
            setattr(ds, name, value)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path)


def noise_png(path: str, seed: int = 0) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 40), dtype=np.uint8)
    with open(path, "wb") as f:
        Image.fromarray(pixels).save(f, format="PNG")


# ---------------------------------------------------------------------------------------------------------------
# 1. formula injection


@pytest.mark.parametrize(
    "value, cell",
    [("=1+2", "'=1+2"), ("+SUM(A1)", "'+SUM(A1)"), ("-2+3", "'-2+3"), ("@cmd", "'@cmd"), ("\tx", "'\tx"),
     ("\rx", "'\rx"), ("'=x", "''=x"), ("plain", "plain"), ("'quoted", "'quoted"), ("a=b", "a=b"), ("", ""),
     (-0.25, -0.25), (-3, -3), (7, 7)],
)
def test_csv_cell_quotes_formulas_and_never_numbers(value, cell) -> None:
    assert csv_cell(value) == cell and type(csv_cell(value)) is type(cell)


def test_manifest_round_trip_takes_exactly_the_added_quote_away(tmp_path) -> None:
    entries = [ManifestEntry(path=f"/a/{i}.dcm", image_id=value, PatientID=value, StationName=value, rows=i)
               for i, value in enumerate(("=HYPERLINK(\"x\")", "'=already", "'plain", "-minus", "ok"))]
    write_manifest(entries, str(tmp_path / "manifest.csv"))
    assert read_manifest(str(tmp_path / "manifest.csv")) == entries


@pytest.fixture(scope="module")
def formula_report(trained_model, shared_data, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("formula")
    archive = root / "archive"
    derived_dicom(shared_data, str(archive / "=HYPERLINK(1).dcm"), PatientID="=HYPERLINK(\"http://x\",\"y\")",
                  Manufacturer="+SUM(1,2)", StationName="@cmd", StudyInstanceUID="1.2.3")
    derived_dicom(shared_data, str(archive / "\tTAB.dcm"), PatientID="-2+3")
    noise_png(str(archive / "@patient" / "\rstudy" / "x.png"))
    (archive / "-notes.txt").write_text("not an image")
    assert run_report(str(archive), str(root / "out"), trained_model) == 0
    return str(root / "out")


@pytest.mark.parametrize("name", CSV_FILES)
def test_no_csv_cell_starts_a_formula_and_numbers_stay_numbers(formula_report, name) -> None:
    with open(os.path.join(formula_report, name), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert len(rows) > 1
    header = rows[0]
    for row in rows[1:]:
        for column, cell in zip(header, row):
            if column.startswith("prob_") or column == "similarity":
                float(cell)  # written by the code: a number, never quoted
            if cell.startswith(FORMULA_STARTS):  # only a number the code wrote (a label -1) may start so
                assert cell.lstrip("-").replace(".", "", 1).isdigit(), f"{name} {column}: {cell!r} runs as a formula"


def test_quoted_cells_keep_the_value_after_the_quote(formula_report) -> None:
    images = {r["image_id"]: r for r in read_csv(os.path.join(formula_report, "strata_per_image.csv"))}
    assert set(images) == {"'=HYPERLINK(1).dcm", "'\tTAB.dcm", "'@patient/\rstudy/x.png"}
    hyperlink = images["'=HYPERLINK(1).dcm"]
    assert (hyperlink["patient_id"], hyperlink["manufacturer"], hyperlink["station"]) == (
        "'=HYPERLINK(\"http://x\",\"y\")", "'+SUM(1,2)", "'@cmd")
    assert images["'\tTAB.dcm"]["patient_id"] == "'-2+3"
    assert images["'@patient/\rstudy/x.png"]["patient_id"] == "'@patient"  # the patient folder of an image file
    ids = [row["id"] for row in read_csv(os.path.join(formula_report, "assignments.csv"))]
    assert sorted(ids) == sorted(images)
    skipped = read_csv(os.path.join(formula_report, "skipped.csv"))
    assert [r["image_id"] for r in skipped] == ["'-notes.txt"]


# ---------------------------------------------------------------------------------------------------------------
# 2. file names that are not UTF-8


def test_latin1_file_names_are_read_and_written_with_escapes(trained_model, shared_data, tmp_path) -> None:
    # os.walk gives such names as str with surrogate escapes, which open() takes back to the original bytes
    archive = str(tmp_path / "archive")
    derived_dicom(shared_data, os.path.join(archive, os.fsdecode(b"caf\xe9.dcm")))
    noise_png(os.path.join(archive, os.fsdecode(b"Jos\xe9"), "20200101", "x.png"))
    assert os.path.exists(os.path.join(os.fsencode(archive), b"caf\xe9.dcm"))  # the name on disk is Latin-1
    output = str(tmp_path / "out")
    assert run_report(archive, output, trained_model) == 0
    manifest = {r["image_id"]: r for r in read_csv(os.path.join(output, "manifest.csv"))}
    assert set(manifest) == {"caf\\xe9.dcm", "Jos\\xe9/20200101/x.png"}
    assert {r["status"] for r in manifest.values()} == {"processed"}
    assert manifest["caf\\xe9.dcm"]["path"].endswith("archive/caf\\xe9.dcm")
    images = {r["image_id"]: r for r in read_csv(os.path.join(output, "strata_per_image.csv"))}
    assert images["Jos\\xe9/20200101/x.png"]["patient_id"] == "Jos\\xe9"
    with open(os.path.join(output, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["counts"]["processed"] == 2 and "Jos\\xe9" in {p["patient_id"] for p in report["patients"]}
    with open(os.path.join(output, "report.html"), encoding="utf-8") as f:
        assert "Jos\\xe9" in f.read()


def test_display_text_escapes_only_undecodable_bytes() -> None:
    assert display_text(os.fsdecode(b"caf\xe9/na\xefve.dcm")) == "caf\\xe9/na\\xefve.dcm"
    assert display_text("café ☃") == "café ☃"


# ---------------------------------------------------------------------------------------------------------------
# 3. PatientID missing, empty or multi-valued


@pytest.mark.parametrize("field", ["PatientID", "Manufacturer", "StationName", "ViewPosition", "BodyPartExamined"])
def test_multi_valued_header_fields_are_joined_as_dicom_writes_them(field) -> None:
    ds = pydicom.Dataset()
    setattr(ds, field, "A\\B")  # the DICOM value separator: pydicom reads two values
    assert isinstance(ds[field].value, pydicom.multival.MultiValue)
    assert header_fields(ds)[field] == "A\\B"


def test_images_without_patient_id_are_never_one_patient(trained_model, shared_data, tmp_path) -> None:
    archive = tmp_path / "archive"
    derived_dicom(shared_data, str(archive / "a.dcm"), PatientID=None, StudyInstanceUID="1.2.1")
    derived_dicom(shared_data, str(archive / "b.dcm"), PatientID="", StudyInstanceUID="1.2.2")
    derived_dicom(shared_data, str(archive / "c.dcm"), PatientID="  ", StudyInstanceUID="1.2.2")
    derived_dicom(shared_data, str(archive / "d.dcm"), PatientID=None, StudyInstanceUID=None)
    derived_dicom(shared_data, str(archive / "e.dcm"), PatientID="A\\B")
    output = str(tmp_path / "out")
    assert run_report(str(archive), output, trained_model) == 0
    images = {r["image_id"]: (r["patient_id"], r["patient_id_missing"])
              for r in read_csv(os.path.join(output, "strata_per_image.csv"))}
    assert images == {
        "a.dcm": ("(no PatientID) 1.2.1", "1"), "b.dcm": ("(no PatientID) 1.2.2", "1"),
        "c.dcm": ("(no PatientID) 1.2.2", "1"), "d.dcm": ("(no PatientID) d.dcm", "1"), "e.dcm": ("A\\B", "0"),
    }
    patients = {r["patient_id"]: r for r in read_csv(os.path.join(output, "strata_per_patient.csv"))}
    assert {p: (r["n_images"], r["patient_id_missing"]) for p, r in patients.items()} == {
        "(no PatientID) 1.2.1": ("1", "1"), "(no PatientID) 1.2.2": ("2", "1"), "(no PatientID) d.dcm": ("1", "1"),
        "A\\B": ("1", "0"),
    }


def test_pseudonymized_missing_patient_ids_stay_distinct_and_hide_the_study(trained_model, shared_data, tmp_path) -> None:
    archive = tmp_path / "archive"
    for name, study in (("a.dcm", "1.2.1"), ("b.dcm", "1.2.2")):
        derived_dicom(shared_data, str(archive / name), PatientID=None, StudyInstanceUID=study)
    output = str(tmp_path / "out")
    assert run_report(str(archive), output, trained_model, "--pseudonymize", "secret") == 0
    patients = [r["patient_id"] for r in read_csv(os.path.join(output, "strata_per_patient.csv"))]
    assert len(set(patients)) == 2 and all(p.startswith("(no PatientID) ") and "1.2." not in p for p in patients)


# ---------------------------------------------------------------------------------------------------------------
# 4. report folders inside the archive


def test_a_report_inside_its_archive_is_never_scanned(trained_model, shared_data, tmp_path) -> None:
    archive = tmp_path / "archive"
    derived_dicom(shared_data, str(archive / "P1" / "a.dcm"))
    output = str(archive / "report")
    assert run_report(str(archive), output, trained_model) == 0
    assert os.path.isfile(os.path.join(output, REPORT_MARKER))
    shutil.copytree(output, archive / "kept" / "old_report")  # a report moved elsewhere in the archive
    noise_png(str(archive / ".elsewhere.tmp-1234-host-0123" / "P9" / "x.png"))  # a killed run's staging folder
    assert run_report(str(archive), output, trained_model, "--overwrite") == 0
    manifest = read_csv(os.path.join(output, "manifest.csv"))
    assert [r["image_id"] for r in manifest] == [os.path.join("P1", "a.dcm")]


def test_scan_excludes_the_given_folders(shared_data, tmp_path) -> None:
    derived_dicom(shared_data, str(tmp_path / "a" / "x.dcm"))
    derived_dicom(shared_data, str(tmp_path / "b" / "y.dcm"))
    os.symlink(tmp_path / "b", tmp_path / "link")
    assert [e.image_id for e in scan_archive(str(tmp_path), exclude=[str(tmp_path / "link")], progress=False)] == [
        os.path.join("a", "x.dcm")]


# ---------------------------------------------------------------------------------------------------------------
# 5. staging folders


def test_stale_staging_is_removed_and_staging_is_private(trained_model, shared_data, tmp_path, monkeypatch) -> None:
    archive = tmp_path / "archive"
    derived_dicom(shared_data, str(archive / "a.dcm"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host, token = socket.gethostname(), "0" * 32
    stale = tmp_path / f".out.tmp-{dead.pid}-{host}-{token}"
    aside = tmp_path / f".out.tmp-{dead.pid}-{host}-{token}.old"
    running = tmp_path / f".out.tmp-{os.getpid()}-{host}-{token}"
    elsewhere = tmp_path / f".out.tmp-{dead.pid}-another-host-{token}"
    for folder in (stale, aside, running, elsewhere, tmp_path / "out"):  # "out": the report being replaced
        folder.mkdir()
        (folder / "manifest.csv").write_text("patient data")
    modes = []
    write_manifest = writer.write_manifest

    def recording_write_manifest(entries, path, include_paths=True):
        modes.append(os.stat(os.path.dirname(path)).st_mode & 0o777)
        write_manifest(entries, path, include_paths)

    monkeypatch.setattr(writer, "write_manifest", recording_write_manifest)
    assert run_report(str(archive), str(tmp_path / "out"), trained_model, "--overwrite") == 0
    assert not stale.exists() and not aside.exists() and running.exists() and elsewhere.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert modes == [0o700, 0o700]  # manifest.csv and skipped.csv, while the report is written
    assert os.stat(tmp_path / "out").st_mode & 0o777 == 0o777 & ~umask  # published with the usual rights


def test_the_old_report_moved_aside_is_kept_while_it_is_the_only_copy(trained_model, shared_data, tmp_path) -> None:
    archive = tmp_path / "archive"
    derived_dicom(shared_data, str(archive / "a.dcm"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = tmp_path / f".out.tmp-{dead.pid}-{socket.gethostname()}-{'0' * 32}.old"
    aside.mkdir()
    assert run_report(str(archive), str(tmp_path / "out"), trained_model) == 0
    assert aside.exists()  # "out" did not exist: a kill between the two renames of a replacement left it there


# ---------------------------------------------------------------------------------------------------------------
# 6. unusable model files


def _write_model(kind: str, path: str, trained: str) -> None:
    if kind == "truncated":
        with open(trained, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    elif kind == "random bytes":
        with open(path, "wb") as f:
            f.write(np.random.default_rng(0).bytes(5000))
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "text":
        with open(path, "w") as f:
            f.write("model weights are on the shared drive\n")
    else:
        torch.save({"list": [1, 2, 3], "tensor": torch.zeros(3), "pickled objects": {"a": np.zeros(3)},
                    "values not tensors": {"a": 1}, "another network": {"weight": torch.zeros(3)}}[kind], path)


@pytest.mark.parametrize(
    "kind", ["truncated", "random bytes", "empty", "text", "list", "tensor", "pickled objects", "values not tensors",
             "another network"],
)
def test_an_unusable_model_file_exits_2_with_a_message(trained_model, shared_data, tmp_path, capsys, kind) -> None:
    path = str(tmp_path / "model.pt")
    _write_model(kind, path, trained_model)
    assert run_report(os.path.join(shared_data, "dicom"), str(tmp_path / "out"), path) == 2
    err = capsys.readouterr().err
    assert f"{path} is not a monai_cae model" in err
    assert "weights_only" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# 7. a window of width 0, DICOM named .png


@pytest.mark.parametrize("source, function", [(NIH, None), (SIIM_MONO1, None), (NIH, "LINEAR_EXACT")])
def test_a_window_of_width_0_shows_the_full_range(shared_data, tmp_path, source, function) -> None:
    path = str(tmp_path / "w0.dcm")
    extra = {} if function is None else {"VOILUTFunction": function}
    derived_dicom(shared_data, path, source, WindowCenter=100, WindowWidth=0, **extra)
    np.testing.assert_array_equal(decode_dicom(path), decode_dicom(path, apply_voi=False))
    entry = scan_archive(str(tmp_path), progress=False)[0]
    assert CohortDataset([entry], 28)[0]["ok"]


def test_dicom_named_png_is_read_as_dicom(shared_data, tmp_path) -> None:
    shutil.copy(os.path.join(shared_data, "dicom", NIH), tmp_path / "scan.png")
    entry = scan_archive(str(tmp_path), progress=False)[0]
    assert (entry.status, entry.format, entry.PatientID) == ("selected", "dicom", "Covid0000")
    assert CohortDataset([entry], 28)[0]["ok"]


# ---------------------------------------------------------------------------------------------------------------
# 8. non-finite pixels


def _nifti(value: float):
    def write(path: str) -> None:
        pixels = np.random.default_rng(0).random((32, 24)).astype(np.float32)
        pixels[5, 7] = value
        os.makedirs(os.path.dirname(path), exist_ok=True)
        nibabel.save(nibabel.Nifti1Image(pixels, np.eye(4)), path)

    return write


@pytest.mark.parametrize(
    "name, write",
    [("nan.nii.gz", _nifti(np.nan)), ("inf.nii", _nifti(np.inf)), ("minus_inf.nii.gz", _nifti(-np.inf)),
     ("overflow.dcm", None)],
)
def test_non_finite_pixels_are_refused_with_their_reason(shared_data, tmp_path, name, write) -> None:
    path = str(tmp_path / name)
    if write is None:  # stored values up to 255 times 1e38 overflow float32
        derived_dicom(shared_data, path, RescaleSlope=1e38, RescaleIntercept=0)
    else:
        write(path)
    entry = scan_archive(str(tmp_path), progress=False)[0]
    assert entry.status == "selected"  # the header is fine: only the pixels tell
    item = CohortDataset([entry], 28)[0]
    assert (item["ok"], item["reason"]) == (False, "non_finite") and "non-finite" in item["detail"]
    assert "non_finite" in SKIP_REASONS


def test_a_non_finite_image_is_skipped_and_the_report_written(trained_model, shared_data, tmp_path) -> None:
    archive = tmp_path / "archive"
    derived_dicom(shared_data, str(archive / "good.dcm"))
    _nifti(np.nan)(str(archive / "P2" / "nan.nii.gz"))
    output = str(tmp_path / "out")
    assert run_report(str(archive), output, trained_model) == 0
    assert [(r["image_id"], r["reason"]) for r in read_csv(os.path.join(output, "skipped.csv"))] == [
        (os.path.join("P2", "nan.nii.gz"), "non_finite")]


# ---------------------------------------------------------------------------------------------------------------
# 9. the size guard and what no check foresaw


@pytest.mark.parametrize(
    "shape, max_pixels, refused",
    [((100, 100), 10_000, False), ((100, 101), 10_000, True), ((100, 100, 3), 29_999, True), ((1, 1), 1, False),
     ((16000, 16000), DEFAULT_MAX_PIXELS, True), ((8192, 8192), DEFAULT_MAX_PIXELS, False)],
)
def test_check_image_size_counts_every_axis(shape, max_pixels, refused) -> None:
    if not refused:
        check_image_size(shape, max_pixels)
        return
    with pytest.raises(UnusableImageError, match=f"{int(np.prod(shape)):,} pixels, above max_pixels") as caught:
        check_image_size(shape, max_pixels, "the header")
    assert caught.value.reason == "too_large" and " x ".join(map(str, shape)) in caught.value.detail


@pytest.mark.parametrize("max_pixels", [0, -5, 2.5, True, "many"])
def test_a_bad_max_pixels_is_refused_early(max_pixels, tmp_path) -> None:
    with pytest.raises((ValueError, TypeError), match="max_pixels"):
        scan_archive(str(tmp_path), progress=False, max_pixels=max_pixels)
    with pytest.raises((ValueError, TypeError), match="max_pixels"):
        cohort_transform(28, max_pixels=max_pixels)


def test_max_pixels_is_the_users_to_set(trained_model, shared_data, tmp_path) -> None:
    # the shared radiograph has 1024 x 1024 pixels; a 256 x 256 PNG of it passes a limit that the original does not
    archive = tmp_path / "archive"
    derived_dicom(shared_data, str(archive / "full.dcm"))
    small = np.asarray(Image.fromarray(decode_dicom(str(archive / "full.dcm")).astype(np.uint8)).resize((256, 256)))
    os.makedirs(archive / "P2")
    Image.fromarray(small).save(archive / "P2" / "small.png")
    output = str(tmp_path / "out")
    assert run_report(str(archive), output, trained_model, "--max-pixels", str(512 * 512)) == 0
    skipped = read_csv(os.path.join(output, "skipped.csv"))
    assert [(r["image_id"], r["reason"]) for r in skipped] == [("full.dcm", "too_large")]
    assert "1024 x 1024 x 1 = 1,048,576 pixels, above max_pixels = 262,144" in skipped[0]["detail"]
    assert run_report(str(archive), output, trained_model, "--overwrite") == 0
    assert read_csv(os.path.join(output, "skipped.csv")) == []


def test_an_unknown_transfer_syntax_has_no_decoder(shared_data, tmp_path) -> None:
    ds = pydicom.dcmread(os.path.join(shared_data, "dicom", NIH))
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9.9999.1"
    ds.save_as(tmp_path / "private.dcm", enforce_file_format=False, implicit_vr=True, little_endian=True)
    entry = scan_archive(str(tmp_path), progress=False)[0]
    assert (entry.reason, entry.detail) == ("no_decoder", "unknown transfer syntax 1.2.826.0.1.3680043.9.9999.1 "
                                                          "(private, or not DICOM's)")


def test_the_whole_copy_of_an_image_is_kept_over_a_truncated_one(shared_data, tmp_path) -> None:
    derived_dicom(shared_data, str(tmp_path / "b_whole.dcm"))
    whole = (tmp_path / "b_whole.dcm").read_bytes()
    (tmp_path / "a_cut.dcm").write_bytes(whole[: len(whole) // 2])  # sorts first, same SOPInstanceUID
    entries = {e.image_id: e for e in scan_archive(str(tmp_path), progress=False)}
    assert entries["b_whole.dcm"].status == "selected"
    assert entries["a_cut.dcm"].reason == "duplicate" and "b_whole.dcm" in entries["a_cut.dcm"].detail


def test_an_image_whose_latent_is_not_finite_is_named_and_the_report_goes_on(trained_model, shared_data,
                                                                            tmp_path) -> None:
    archive = tmp_path / "archive"
    for name in ("a.dcm", "b.dcm", "c.dcm"):
        derived_dicom(shared_data, str(archive / name))
    network = load_trained_model(trained_model)
    dataset = CohortDataset(scan_archive(str(archive), progress=False), network.encoder.img_size)
    assignment = assign_strata(network, CohortDataLoader(dataset, batch_size=3, num_workers=0), progress=False)
    assignment.embeddings[1] = np.nan  # what a model gives for an input no check foresaw
    assignment.similarities[1] = np.nan
    output = str(tmp_path / "out")
    report = writer.write_report(assignment, dataset, network, output)
    assert report["counts"]["processed"] == 2
    assert [(r["image_id"], r["reason"]) for r in read_csv(os.path.join(output, "skipped.csv"))] == [
        ("b.dcm", "non_finite")]
    assert sorted(r["image_id"] for r in read_csv(os.path.join(output, "strata_per_image.csv"))) == ["a.dcm", "c.dcm"]
