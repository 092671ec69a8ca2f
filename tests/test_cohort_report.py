"""End-to-end strata reports: a generated multi-patient DICOM archive, a briefly trained bundle model, the bundle's
inference command and the ``monai-cae-report`` command, a corpus of every kind of bad input, atomic publishing
under SIGKILL, privacy, and the HTML page rendered by headless Chromium."""

from __future__ import annotations

import csv
import glob
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import nibabel
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.uid import GrayscaleSoftcopyPresentationStateStorage, MPEG4HP41, generate_uid
from sklearn.metrics import normalized_mutual_info_score

from monai_cae.data import (
    CohortDataLoader,
    CohortDataset,
    MedMNISTDataset,
    default_num_workers,
    pseudonymize,
    scan_archive,
)
from monai_cae.data.workers import available_cpus, threads_beside_workers
from monai_cae.engines import assign_strata, load_model
from monai_cae.evaluation import ClusterLabelMapping
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.reports import REPORT_FILES, generate_report, publish_folder
from monai_cae.reports.cli import main as report_main

from conftest import REPO_ROOT

CONFIGS = os.path.join("bundles", "cae", "configs")
# a brief real bundle training: 2 warm-up and 2 conditional epochs on the training split, with a one-epoch lr warm-up
# (the test split becomes the cohort); it takes seconds and already separates the classes better than chance
SHORT_TRAINING = {
    "max_epochs": 4, "warmup_epochs": 2, "lr_warmup_epochs": 1, "val_interval": 4,
    "k_values": "[2,3,4]", "progress": False,
}
LOSSLESS = {"Explicit VR Little Endian", "Implicit VR Little Endian", "Deflated Explicit VR Little Endian",
            "RLE Lossless", "JPEG 2000 Image Compression (Lossless Only)", "JPEG-LS Lossless Image Compression",
            "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])"}


def bundle(workflow: str, config: str, **overrides) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", os.path.join(CONFIGS, config)]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400)


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def folder_digest(folder: str) -> dict[str, str]:
    digests = {}
    for path in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                digests[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def model(tmp_path_factory, shared_data) -> str:
    root = tmp_path_factory.mktemp("model")
    result = bundle(
        "training", "train.json", dataset_dir=os.path.join(shared_data, "medmnist"), output_dir=root / "train",
        model_dir=root / "models", **SHORT_TRAINING,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return str(root / "models" / "model.pt")


@pytest.fixture(scope="module")
def network(model) -> ContrastiveAutoEncoder:
    return load_model(ContrastiveAutoEncoder(), model, "cpu")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, shared_data) -> dict:
    spec = importlib.util.spec_from_file_location(
        "make_dicom_cohort", os.path.join(REPO_ROOT, "data_prep", "make_dicom_cohort.py")
    )
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    data = MedMNISTDataset("pneumoniamnist", "test", os.path.join(shared_data, "medmnist"))
    images = (data.images[:, 0].numpy() * 255).round().astype(np.uint8)
    root = tmp_path_factory.mktemp("cohort")
    summary = generator.make_cohort(str(root), images, data.labels.numpy(), size=64, seed=0, progress=False)
    return {
        **summary, "root": str(root), "images_gt": read_csv(os.path.join(root, "ground_truth_images.csv")),
        "patients_gt": read_csv(os.path.join(root, "ground_truth_patients.csv")),
    }


@pytest.fixture(scope="module")
def report(model, cohort, tmp_path_factory) -> str:
    output = str(tmp_path_factory.mktemp("reports") / "cohort")
    result = bundle(
        "inference", "inference.json", ckpt_path=model, input_dir=cohort["archive"], output_dir=output,
        progress=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return output


# ---------------------------------------------------------------------------------------------------------------
# the generated cohort and the bundle's report


def test_generated_cohort_is_realistic(cohort) -> None:
    assert cohort["images"] == 624 and cohort["patients"] >= 200 and cohort["studies"] > cohort["patients"]
    assert len(cohort["syntaxes"]) >= 6, cohort["syntaxes"]  # explicit, implicit, deflated, RLE, J2K, JPEG...
    rows = cohort["images_gt"]
    assert {r["photometric"] for r in rows} == {"MONOCHROME1", "MONOCHROME2"}
    labels = {}
    for r in rows:  # every patient's images share a label
        assert labels.setdefault(r["PatientID"], r["label"]) == r["label"]
    first = pydicom.dcmread(os.path.join(cohort["archive"], rows[0]["path"]), force=True)
    assert first.SOPInstanceUID == rows[0]["SOPInstanceUID"] and first.BodyPartExamined == "CHEST"
    assert first.Modality in ("CR", "DX") and first.StudyDate == rows[0]["StudyDate"]


def test_report_holds_every_file(report, cohort) -> None:
    for name in REPORT_FILES:
        assert os.path.isfile(os.path.join(report, name)), name
    embeddings = np.load(os.path.join(report, "embeddings.npy"))
    assert embeddings.shape == (624, 128) and embeddings.dtype == np.float32
    assert len(read_csv(os.path.join(report, "assignments.csv"))) == 624
    images = read_csv(os.path.join(report, "strata_per_image.csv"))
    assert sorted(r["image_id"] for r in images) == sorted(r["path"] for r in cohort["images_gt"])
    skipped = read_csv(os.path.join(report, "skipped.csv"))
    assert sorted((os.path.basename(r["path"]), r["reason"]) for r in skipped) == [
        (".DS_Store", "not_image"), ("README.txt", "not_image")
    ]
    manifest = read_csv(os.path.join(report, "manifest.csv"))
    assert len(manifest) == 626 and sum(r["status"] == "processed" for r in manifest) == 624
    summary = json.load(open(os.path.join(report, "report.json")))
    k = summary["model"]["num_strata"]
    assert summary["status"] == "ok" and summary["counts"]["processed"] == 624 and 2 <= k <= 4
    probabilities = np.array([[float(r[f"prob_{j}"]) for j in range(k)] for r in images])
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-4)
    assert sum(s["n_images"] for s in summary["strata"]) == 624
    outliers = [r["outlier"] == "1" for r in images]
    below = [float(r["similarity"]) < summary["outlier"]["threshold"] for r in images]
    assert outliers == below and summary["outlier"]["source"] == "cohort"


def test_per_patient_grouping_matches_the_ground_truth(report, cohort) -> None:
    patients = {r["patient_id"]: r for r in read_csv(os.path.join(report, "strata_per_patient.csv"))}
    truth = {r["PatientID"]: r for r in cohort["patients_gt"]}
    assert patients.keys() == truth.keys()
    images = read_csv(os.path.join(report, "strata_per_image.csv"))
    timelines = {p["patient_id"]: p["studies"] for p in json.load(open(os.path.join(report, "report.json")))["patients"]}
    for pid, row in patients.items():
        assert (int(row["n_images"]), int(row["n_studies"])) == (int(truth[pid]["n_images"]), int(truth[pid]["n_studies"]))
        mine = [r for r in images if r["patient_id"] == pid]
        # each film once: a copy names the first image of its pixels
        films = list({r["duplicate_of"] or r["image_id"]: r for r in reversed(mine)}.values())
        assert int(row["n_duplicates"]) == len(mine) - len(films)
        studies = timelines[pid]
        assert [s["study_date"] for s in studies] == sorted(s["study_date"] for s in studies)
        for study in studies:  # a study's stratum is the majority of its films
            strata = [int(r["stratum"]) for r in films if r["study_uid"] == study["study_uid"]]
            assert len(strata) == study["n_images"] and strata.count(study["stratum"]) == max(map(strata.count, strata))
            assert study["disagreement"] == (len(set(strata)) > 1)
        assert int(row["studies_with_disagreement"]) == sum(s["disagreement"] for s in studies)
        assert row["study_strata"] == " ".join(f"{s['study_date']}:{s['stratum']}" for s in studies)
        assert (row["stratum_changed"] == "1") == (len({s["stratum"] for s in studies}) > 1)
        majority = int(row["majority_stratum"])
        share = sum(int(r["stratum"]) == majority for r in films) / len(films)
        assert float(row["majority_share"]) == pytest.approx(share)
        assert float(row["majority_probability"]) == pytest.approx(
            np.mean([float(r[f"prob_{majority}"]) for r in films]), abs=1e-5)


def test_patient_strata_recover_the_ground_truth_better_than_chance(report, cohort) -> None:
    patients = read_csv(os.path.join(report, "strata_per_patient.csv"))
    label = {r["PatientID"]: int(r["label"]) for r in cohort["patients_gt"]}
    y = np.array([label[p["patient_id"]] for p in patients])
    strata = np.array([int(p["majority_stratum"]) for p in patients])
    k = int(strata.max()) + 1

    def scores(labels: np.ndarray) -> tuple[float, float]:
        mapped = ClusterLabelMapping(k).fit(strata, labels).predict(strata)
        return normalized_mutual_info_score(labels, strata), float((mapped == labels).mean())

    nmi, accuracy = scores(y)
    rng = np.random.default_rng(0)
    shuffled = np.array([scores(rng.permutation(y)) for _ in range(200)])
    assert nmi > shuffled[:, 0].max() and accuracy > shuffled[:, 1].max(), (nmi, accuracy, shuffled.max(0))


def test_report_never_shows_names_birth_dates_or_other_header_fields(report, cohort) -> None:
    ds = pydicom.dcmread(os.path.join(cohort["archive"], cohort["images_gt"][0]["path"]), force=True)
    assert str(ds.PatientName).startswith("Synthetic^") and ds.PatientBirthDate and ds.PatientSex
    for path in glob.glob(os.path.join(report, "**", "*"), recursive=True):
        if os.path.isfile(path) and not path.endswith((".npy", ".png")):
            text = open(path, encoding="utf-8").read()
            # sex may be written (it explains a stratum); names, birth dates, institution and accession never
            for forbidden in ("Synthetic", "PatientName", "BirthDate", "AccessionNumber", "InstitutionName"):
                assert forbidden not in text, (forbidden, path)
    # no CSV cell holds any patient's birth date
    birth_dates = {pydicom.dcmread(os.path.join(cohort["archive"], r["path"]), stop_before_pixels=True,
                                   force=True).PatientBirthDate for r in cohort["images_gt"][:50]}
    for name in ("strata_per_image.csv", "strata_per_patient.csv", "manifest.csv"):
        for row in read_csv(os.path.join(report, name)):
            assert not birth_dates & set(row.values())


def test_nifti_copy_gives_the_same_strata(network, cohort, report, tmp_path) -> None:
    summary = generate_report(network, cohort["nifti"], str(tmp_path / "nifti"), progress=False)
    assert summary["counts"] == {**summary["counts"], "processed": 624, "skipped": 0, "patients": cohort["patients"]}
    nifti = {os.path.basename(r["image_id"])[: -len(".nii.gz")]: r for r in
             read_csv(str(tmp_path / "nifti" / "strata_per_image.csv"))}
    dicom = {r["sop_uid"]: r for r in read_csv(os.path.join(report, "strata_per_image.csv"))}
    syntax = {r["SOPInstanceUID"]: r["transfer_syntax"] for r in cohort["images_gt"]}
    lossless = [sop for sop in dicom if syntax[sop] in LOSSLESS]
    assert len(lossless) > 400
    for sop in lossless:  # the same display values give the same model input, whatever the container
        assert (nifti[sop]["stratum"], nifti[sop]["patient_id"]) == (dicom[sop]["stratum"], dicom[sop]["patient_id"])
        assert float(nifti[sop]["similarity"]) == pytest.approx(float(dicom[sop]["similarity"]), abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# privacy, overwrite protection, atomic publishing


def test_pseudonymized_report_holds_no_identifier(model, cohort, tmp_path) -> None:
    output = str(tmp_path / "pseudo")
    args = [cohort["archive"], output, "--model", model, "--pseudonymize", "hospital-secret", "--no-thumbnails",
            "--quiet"]
    assert report_main(args) == 0
    patients = read_csv(os.path.join(output, "strata_per_patient.csv"))
    expected = sorted(pseudonymize(r["PatientID"], "hospital-secret", prefix="P-") for r in cohort["patients_gt"])
    assert sorted(p["patient_id"] for p in patients) == expected
    originals = [r["SOPInstanceUID"] for r in cohort["images_gt"][:20]] + [r["StudyInstanceUID"] for r in
                                                                             cohort["images_gt"][:20]]
    for path in glob.glob(os.path.join(output, "**", "*"), recursive=True):
        if os.path.isfile(path) and not path.endswith((".npy", ".png")):
            text = open(path, encoding="utf-8").read()
            # the archive's folder names hold PatientID and accession numbers: paths are left out too
            assert "PAT0" not in text and "ACC0" not in text and cohort["archive"] not in text, path
            assert not any(uid in text for uid in originals), path
    html = open(os.path.join(output, "report.html"), encoding="utf-8").read()
    summary = json.load(open(os.path.join(output, "report.json")))
    # the page shows prototypes (in the overview and in each stratum's section) and the map but no patient image
    k, filled = summary["model"]["num_strata"], summary["counts"]["strata_non_empty"]
    assert html.count("<img") == k + filled + 1 and summary["options"]["pseudonymized"]


def test_an_existing_report_is_kept_without_overwrite(model, report, shared_data, tmp_path, capsys) -> None:
    before = folder_digest(report)
    archive = os.path.join(shared_data, "dicom")
    assert report_main([archive, report, "--model", model, "--quiet"]) == 2
    assert "already holds a report" in capsys.readouterr().err and folder_digest(report) == before
    copy = str(tmp_path / "copy")
    shutil.copytree(report, copy)
    assert report_main([archive, copy, "--model", model, "--quiet", "--overwrite"]) == 0
    replaced = json.load(open(os.path.join(copy, "report.json")))
    assert replaced["counts"]["processed"] == 2 and not glob.glob(str(tmp_path / ".copy.tmp-*"))


def test_publish_swaps_folders_atomically(tmp_path) -> None:
    old, new = tmp_path / "out", tmp_path / "staging"
    old.mkdir(), new.mkdir()
    (old / "report.json").write_text("old")
    (new / "report.json").write_text("new")
    with pytest.raises(FileExistsError):
        publish_folder(str(new), str(old))
    publish_folder(str(new), str(old), overwrite=True)
    assert (old / "report.json").read_text() == "new" and not new.exists()


def test_a_killed_run_leaves_the_old_report_or_the_new_one(model, cohort, report, tmp_path) -> None:
    output = str(tmp_path / "out")
    shutil.copytree(report, output)
    before = folder_digest(output)
    process = subprocess.Popen(
        [sys.executable, "-m", "monai_cae.reports.cli", cohort["archive"], output, "--model", model, "--overwrite",
         "--quiet"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while process.poll() is None and time.time() < deadline and not glob.glob(str(tmp_path / ".out.tmp-*")):
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)  # while the new report is being written, when the timing allows
    process.wait()
    after = folder_digest(output)
    if after != before:  # then the run had finished: the new report is complete
        assert set(REPORT_FILES) <= set(after)
        assert json.load(open(os.path.join(output, "report.json")))["counts"]["processed"] == 624


# ---------------------------------------------------------------------------------------------------------------
# bad input


def _derived(source: str, path: str, change=None) -> bytes:
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # not a duplicate
    if change is not None:
        change(ds)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds.save_as(path)
    with open(path, "rb") as f:
        return f.read()


def make_bad_corpus(root: str, shared_data: str, with_good: bool = True) -> dict[str, str]:
    """Every kind of bad input, built from real files; returns {relative path: expected reason}."""
    nih = os.path.join(shared_data, "dicom", "nih_cxr_covid0000.dcm")
    siim = os.path.join(shared_data, "dicom", "siim_cr_jpeg_baseline.dcm")
    expected: dict[str, str] = {}

    def put(relative: str, reason: str, data: bytes | None = None) -> str:
        path = os.path.join(root, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if data is not None:
            with open(path, "wb") as f:
                f.write(data)
        expected[relative] = reason
        return path

    raw_nih, raw_siim = open(nih, "rb").read(), open(siim, "rb").read()
    if with_good:
        put("a_good/nih.dcm", "", raw_nih)
        put("a_good/siim", "", raw_siim)  # no extension
        put("z_duplicate/nih_copy.dcm", "duplicate", raw_nih)
        shutil.copy(os.path.join(shared_data, "dicom", "siim_cr_jpeg_baseline_monochrome1.dcm"),
                    put("z_duplicate/siim_twin", "duplicate"))
    for name, source, keep in (("pixels.dcm", nih, 0.6), ("jpeg.dcm", siim, 0.5), ("header.dcm", nih, 0.0007)):
        whole = _derived(source, put(f"truncated/{name}", "corrupt"))
        put(f"truncated/{name}", "corrupt", whole[: int(len(whole) * keep)])
    put("corrupt/garbage.dcm", "corrupt", b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(4000))
    put("corrupt/empty.dcm", "corrupt", b"")
    put("corrupt/fake.png", "corrupt", b"this is not a PNG")
    put("other/notes.txt", "not_image", b"scanner export log\n")
    put("other/random.bin", "not_image", np.random.default_rng(1).bytes(3000))
    shutil.copy(get_testdata_file("reportsi.dcm"), put("no_pixels/report_sr.dcm", "no_pixel_data"))
    state = pydicom.Dataset()
    state.file_meta = pydicom.dataset.FileMetaDataset()
    state.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    state.SOPClassUID = state.file_meta.MediaStorageSOPClassUID = GrayscaleSoftcopyPresentationStateStorage
    state.SOPInstanceUID = state.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    state.Modality, state.PatientID, state.ContentLabel = "PR", "Covid0000", "GSPS"
    state.save_as(put("no_pixels/presentation_state.dcm", "no_pixel_data"), enforce_file_format=True)
    _derived(siim, put("no_decoder/mpeg4.dcm", "no_decoder"),
             lambda ds: setattr(ds.file_meta, "TransferSyntaxUID", MPEG4HP41))
    shutil.copy(get_testdata_file("emri_small.dcm"), put("volume/mr_multiframe.dcm", "volume_3d"))

    def two_frames(ds):
        ds.NumberOfFrames, ds.PixelData = 2, ds.PixelData * 2

    _derived(nih, put("volume/dx_two_frames.dcm", "volume_3d"), two_frames)
    nibabel.save(nibabel.Nifti1Image(np.ones((16, 16, 8), np.float32), np.eye(4)), put("volume/ct.nii.gz", "volume_3d"))

    def zero_sized(ds):
        ds.Rows, ds.PixelData = 0, b""

    _derived(nih, put("empty/zero_rows.dcm", "empty_image"), zero_sized)

    def constant(ds):
        ds.PixelData = np.full((ds.Rows, ds.Columns), 77, np.uint8).tobytes()

    _derived(nih, put("constant/flat.dcm", "constant_image"), constant)
    os.symlink(os.path.join(root, "does-not-exist.dcm"), put("unreadable/broken_link.dcm", "unreadable"))
    os.mkfifo(put("unreadable/fifo", "unreadable"))
    shutil.copy(get_testdata_file("CT_small.dcm"), put("other/ct_slice.dcm", "modality"))
    return expected


def test_every_bad_input_is_listed_with_its_reason_and_the_run_goes_on(model, shared_data, tmp_path) -> None:
    archive = str(tmp_path / "archive")
    expected = make_bad_corpus(archive, shared_data)
    assert report_main([archive, str(tmp_path / "out"), "--model", model, "--quiet"]) == 0
    skipped = {os.path.relpath(r["path"], archive): r for r in read_csv(str(tmp_path / "out" / "skipped.csv"))}
    reasons = {path: row["reason"] for path, row in skipped.items()}
    assert reasons == {path: reason for path, reason in expected.items() if reason}
    assert all(row["detail"] for row in skipped.values())
    assert "MPEG-4" in skipped["no_decoder/mpeg4.dcm"]["detail"] and "frames" in skipped["volume/dx_two_frames.dcm"][
        "detail"]
    processed = [r["image_id"] for r in read_csv(str(tmp_path / "out" / "strata_per_image.csv"))]
    assert sorted(processed) == ["a_good/nih.dcm", "a_good/siim"]


@pytest.mark.parametrize("num_workers", [2, None])
def test_parallel_decoding_gives_the_in_process_result(network, shared_data, tmp_path, num_workers) -> None:
    archive = str(tmp_path / "archive")
    expected = make_bad_corpus(archive, shared_data)
    manifest = scan_archive(archive, progress=False)
    results = {}
    for workers in (0, num_workers):
        loader = CohortDataLoader(CohortDataset(manifest, 28), batch_size=2, num_workers=workers)
        assignment = assign_strata(network, loader, "cpu", progress=False)
        results[workers] = (assignment, sorted(loader.skipped))
    (serial, serial_skipped), (parallel, parallel_skipped) = results[0], results[num_workers]
    assert parallel.ids == serial.ids and len(serial.ids) == 2
    np.testing.assert_array_equal(parallel.embeddings, serial.embeddings)
    assert parallel_skipped == serial_skipped
    # the files that pass the header scan but fail to decode (truncated pixels, a constant image) are skipped
    # with the same reasons in both
    assert {reason for _, reason, _ in serial_skipped} >= {"corrupt", "constant_image"}
    assert {reason for _, reason, _ in serial_skipped} <= set(expected.values())


def test_default_workers_share_the_cpus_among_local_ranks(monkeypatch) -> None:
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_num_workers() == (cpus if cpus > 1 else 0)
    assert default_num_workers(batches=1) == 0  # one batch: decoding in-process beats starting a worker
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cpus))
    assert default_num_workers() == 0
    with pytest.raises(ValueError, match="num_workers"):
        CohortDataLoader(CohortDataset([], 28), num_workers=-1)


@pytest.mark.parametrize("workers, device", [(0, "cpu"), (1, "cpu"), (2, "cpu"), (64, "cpu"), (2, "cuda")])
def test_the_model_threads_take_the_cpus_the_workers_leave(workers, device) -> None:
    threads = torch.get_num_threads()
    expected = max(1, min(threads, available_cpus() - workers)) if workers and device == "cpu" else threads
    with pytest.raises(RuntimeError, match="inside"):
        with threads_beside_workers(workers, device):
            assert torch.get_num_threads() == expected
            raise RuntimeError("inside")
    assert torch.get_num_threads() == threads  # restored, also after an error


def test_nothing_processable_exits_non_zero_and_lists_why(model, shared_data, tmp_path, capsys) -> None:
    archive = str(tmp_path / "archive")
    expected = make_bad_corpus(archive, shared_data, with_good=False)
    assert report_main([archive, str(tmp_path / "out"), "--model", model, "--quiet"]) == 1
    assert "no image could be processed" in capsys.readouterr().err
    assert len(read_csv(str(tmp_path / "out" / "skipped.csv"))) == len(expected)
    assert json.load(open(tmp_path / "out" / "report.json"))["status"] == "failed"


@pytest.mark.parametrize("problem", ["missing model", "output is a file", "missing archive"])
def test_unusable_model_archive_or_output_fails_before_writing(model, shared_data, tmp_path, capsys, problem) -> None:
    output, archive, ckpt = tmp_path / "out", os.path.join(shared_data, "dicom"), model
    if problem == "missing model":
        ckpt = str(tmp_path / "missing.pt")
    elif problem == "output is a file":
        output.write_text("")
    else:
        archive = str(tmp_path / "nowhere")
    assert report_main([archive, str(output), "--model", ckpt, "--quiet"]) == 2
    assert capsys.readouterr().err.strip()
    assert not output.is_dir()


# ---------------------------------------------------------------------------------------------------------------
# the page in a real browser


def test_html_report_renders_offline_in_chromium(report, tmp_path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium chromium-driver); .ci/run installs it")
    page = "file://" + os.path.join(report, "report.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    dom = subprocess.run(
        [browser, *flags, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", page],
        capture_output=True, text=True, timeout=120,
    ).stdout
    summary = json.load(open(os.path.join(report, "report.json")))
    k = summary["model"]["num_strata"]
    assert "<title>Cohort strata report</title>" in dom
    sections = ("summary", "strata", "strata-table", "latent-map", "transitions", "transition-table", "outliers",
                "outlier-gallery", "changed", "disagreement", "patients", "skipped")
    for section in sections + tuple(f"stratum-{s['stratum']}" for s in summary["strata"]):
        assert f'id="{section}"' in dom, section
    sources = [part.split('"')[0] for part in dom.split('src="')[1:]]
    filled = [s for s in summary["strata"] if not s["empty"]]
    shown = sum(len(s["exemplars"]) + len(s["least_typical"]) for s in filled) + len(summary["outlier"]["gallery"])
    assert len(sources) == k + len(filled) + shown + 1  # prototypes twice for filled strata, galleries, the map
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert summary["outlier"]["gallery"] and all(len(s["exemplars"]) == 6 for s in filled)
    assert "<script" not in dom and "http://" not in dom and "https://" not in dom and "<link" not in dom
    assert f"<b>{summary['counts']['patients']}</b>patients" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, *flags, f"--user-data-dir={tmp_path / 'profile-shot'}", "--window-size=1400,3000",
         f"--screenshot={shot}", page], capture_output=True, timeout=120,
    )
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (3000, 1400) and pixels.std() > 20  # text, tables and images, not a blank page
