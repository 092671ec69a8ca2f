"""Training from a hospital's own archive: patient split, cache, skipped files, clinical sizes, the one command."""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import nibabel
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from monai_cae.apps.stratify import main as stratify_main
from monai_cae.reports.cli import main as report_main
from monai_cae.data import ArchiveDataset, ImageFolderDataset, ManifestEntry, make_dataset, patient_key, split_patients
from monai_cae.engines import load_trained_model, read_model_card
from monai_cae.evaluation import permutation_nmi
from monai_cae.networks.nets import ContrastiveAutoEncoder, encoder_channels

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLACEHOLDER_NAME, PLACEHOLDER_BIRTH_DATE = "Public^Cohort", "19700101"  # in every real_cxr header
SHORT = {"k_values": [2, 3], "lr_warmup_epochs": 1, "progress": False}


@pytest.fixture(scope="module")
def real_archive(shared_data: str) -> str:
    return os.path.join(shared_data, "real_cxr", "archive")


def copy_subset(archive: str, destination: str, patients: int) -> list[str]:
    """Copy the files of the first ``patients`` patients of the real archive, keeping its folder layout."""
    chosen = sorted({os.path.relpath(p, archive).split(os.sep)[1] for p in glob.glob(f"{archive}/*/*")})[:patients]
    copied = []
    for path in sorted(glob.glob(f"{archive}/*/*/*/*.dcm")):
        relative = os.path.relpath(path, archive)
        if relative.split(os.sep)[1] in chosen:
            os.makedirs(os.path.join(destination, os.path.dirname(relative)), exist_ok=True)
            shutil.copy2(path, os.path.join(destination, relative))
            copied.append(relative)
    return copied


@pytest.mark.parametrize("val_fraction,expected", [(0.0, 0), (0.1, 1), (0.3, 3), (0.5, 5), (0.01, 1)])
def test_split_patients_counts(val_fraction: float, expected: int) -> None:
    patients = [f"p{i}" for i in range(10)]
    held_out = split_patients(patients, val_fraction, seed=0)
    assert len(held_out) == expected and held_out <= set(patients)
    # reproducible and independent of the order the patients come in
    assert split_patients(patients[::-1], val_fraction, seed=0) == held_out


def test_split_patients_seed_and_validation() -> None:
    patients = [f"p{i}" for i in range(40)]
    assert split_patients(patients, 0.25, seed=0) != split_patients(patients, 0.25, seed=1)
    # a patient added later moves at most one patient (the count is the same) out of validation
    grown = split_patients([*patients, "new"], 0.25, seed=0)
    assert len(split_patients(patients, 0.25, seed=0) - grown) <= 1
    with pytest.raises(ValueError, match="val_fraction"):
        split_patients(patients, 1.0)


@pytest.mark.parametrize(
    "fields,expected",
    [({"PatientID": "P1", "StudyInstanceUID": "S"}, "patient:P1"), ({"StudyInstanceUID": "S"}, "study:S"),
     ({}, "file:a/b.dcm")],
)
def test_patient_key_never_merges_anonymous_images(fields: dict, expected: str) -> None:
    assert patient_key(ManifestEntry(path="/x/a/b.dcm", image_id="a/b.dcm", **fields)) == expected


def test_archive_split_is_by_patient_and_recorded(real_archive: str, tmp_path) -> None:
    train = make_dataset("archive", "train", real_archive, 28, val_fraction=0.2, record_dir=str(tmp_path / "a"),
                         progress=False)
    val = make_dataset("archive", "val", real_archive, 28, val_fraction=0.2, record_dir=str(tmp_path / "b"),
                       progress=False)
    assert isinstance(train, ArchiveDataset)
    assert len(train) + len(val) == 110 and not set(train.patients) & set(val.patients)
    assert len(val.patients) == round(0.2 * 64)
    with open(tmp_path / "a" / "split.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 110 and {r["split"] for r in rows} == {"train", "val"}
    assert {r["image_id"] for r in rows if r["split"] == "val"} == {val[i]["id"] for i in range(len(val))}
    # every patient's images fall in one split, and the record is the same from either split's dataset
    assert all(len({r["split"] for r in rows if r["patient"] == p}) == 1 for p in {r["patient"] for r in rows})
    assert (tmp_path / "a" / "split.csv").read_bytes() == (tmp_path / "b" / "split.csv").read_bytes()
    item = train[0]
    assert tuple(item["image"].shape) == (1, 28, 28) and int(item["label"]) == -1 and item["index"] == 0


def test_archive_options_only_for_archives(shared_data: str) -> None:
    with pytest.raises(ValueError, match="apply to dataset 'archive' only"):
        make_dataset("pneumoniamnist", "train", os.path.join(shared_data, "medmnist"), cache_dir="/tmp/x")


def test_cache_serves_later_epochs_and_a_changed_file_is_decoded_again(real_archive: str, tmp_path) -> None:
    archive, cache = tmp_path / "archive", str(tmp_path / "cache")
    copied = copy_subset(real_archive, str(archive), patients=4)
    first = ArchiveDataset(str(archive), "all", 64, cache_dir=cache, num_workers=0, progress=False)
    images = {first[i]["id"]: first[i]["image"].clone() for i in range(len(first))}
    assert len(images) == len(copied)
    # the next epoch reads the cache only: with the archive gone, every image still comes back, identical
    shutil.move(str(archive), str(tmp_path / "moved"))
    for i in range(len(first)):
        torch.testing.assert_close(first[i]["image"], images[first[i]["id"]], rtol=0, atol=0)
    shutil.move(str(tmp_path / "moved"), str(archive))
    # a file replaced by another radiograph is decoded again, the unchanged ones are not
    changed, donor = copied[0], next(c for c in copied if c != copied[0])
    shutil.copyfile(archive / donor, archive / changed)
    ds = pydicom.dcmread(archive / changed)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()  # not a duplicate of the donor
    ds.save_as(archive / changed)
    second = ArchiveDataset(str(archive), "all", 64, cache_dir=cache, num_workers=0, progress=False)
    reloaded = {second[i]["id"]: second[i]["image"] for i in range(len(second))}
    torch.testing.assert_close(reloaded[changed], images[donor], rtol=0, atol=0)
    assert not torch.equal(reloaded[changed], images[changed])
    for image_id in set(copied) - {changed}:
        torch.testing.assert_close(reloaded[image_id], images[image_id], rtol=0, atol=0)


def test_unusable_files_are_skipped_with_the_report_reasons(real_archive: str, tmp_path) -> None:
    archive = tmp_path / "archive"
    copied = copy_subset(real_archive, str(archive), patients=3)
    good = archive / copied[0]
    truncated = pydicom.dcmread(good)
    truncated.SOPInstanceUID = pydicom.uid.generate_uid()
    truncated.save_as(archive / "truncated.dcm")
    (archive / "truncated.dcm").write_bytes((archive / "truncated.dcm").read_bytes()[:2000])
    (archive / "notes.txt").write_text("not an image")
    leg = pydicom.dcmread(good)
    leg.BodyPartExamined, leg.SOPInstanceUID = "LEG", pydicom.uid.generate_uid()
    leg.save_as(archive / "leg.dcm")
    # decodes in the header scan but not its pixels: dropped by the decoding pass, with the loader's reason
    broken = pydicom.dcmread(good)
    broken.SOPInstanceUID, broken.Rows = pydicom.uid.generate_uid(), broken.Rows * 4
    broken.save_as(archive / "short_pixels.dcm")
    dataset = ArchiveDataset(str(archive), "all", 28, num_workers=0, record_dir=str(tmp_path / "rec"), progress=False)
    reasons = {image_id: reason for image_id, reason, _ in dataset.skipped}
    assert reasons == {"truncated.dcm": "corrupt", "notes.txt": "not_image", "leg.dcm": "body_part",
                       "short_pixels.dcm": "corrupt"}
    assert sorted(dataset[i]["id"] for i in range(len(dataset))) == sorted(copied)
    with open(tmp_path / "rec" / "skipped_all.csv") as f:
        assert {r["image_id"]: r["reason"] for r in csv.DictReader(f)} == reasons


def test_image_folder_reads_nifti_and_dicom(real_archive: str, tmp_path) -> None:
    pixels = np.zeros((20, 28), np.uint8)
    pixels[:5] = 255  # a bright top band: rows must stay rows
    Image.fromarray(pixels).save(tmp_path / "top.png")
    # NIfTI stores x (columns) first
    nibabel.save(nibabel.Nifti1Image(pixels.T.astype(np.float32)[..., None], np.eye(4)), tmp_path / "top.nii.gz")
    shutil.copyfile(glob.glob(f"{real_archive}/*/*/*/*.dcm")[0], tmp_path / "radiograph.dcm")
    copy = pydicom.dcmread(tmp_path / "radiograph.dcm")
    copy.SOPInstanceUID = pydicom.uid.generate_uid()  # the same SOP instance twice is a duplicate
    copy.save_as(tmp_path / "no_extension")
    ds = ImageFolderDataset(str(tmp_path))
    items = {ds[i]["id"]: ds[i]["image"] for i in range(len(ds))}
    assert set(items) == {"top.png", "top.nii.gz", "radiograph.dcm", "no_extension"}
    torch.testing.assert_close(items["top.nii.gz"], items["top.png"])
    torch.testing.assert_close(items["no_extension"], items["radiograph.dcm"])
    assert float(items["top.png"][0, 4:8].mean()) == 1.0


@pytest.mark.parametrize("img_size", [28, 64, 128, 256])
def test_bundle_trains_on_an_archive_at_clinical_sizes(real_archive: str, tmp_path, img_size: int) -> None:
    archive = tmp_path / "archive"
    copy_subset(real_archive, str(archive), patients=6 if img_size < 256 else 4)
    run = tmp_path / "run"
    code = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
         str([os.path.join(REPO_ROOT, "bundles/cae/configs", f) for f in ("train.json", "archive.json")]),
         "--bundle_root", os.path.join(REPO_ROOT, "bundles/cae"), "--dataset_dir", str(archive),
         "--output_dir", str(run / "train"), "--model_dir", str(run / "model"), "--img_size", str(img_size),
         "--max_epochs", "2", "--warmup_epochs", "1", "--val_interval", "1", "--batch_size", "4", "--val_fraction",
         "0.34", "--k_values", "[2,3]", "--lr_warmup_epochs", "1", "--progress", "False"],
        cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert code.returncode == 0, code.stderr[-3000:]
    card = read_model_card(str(run / "model" / "model.pt"))
    assert card["img_size"] == img_size and card["network"]["channels"] == encoder_channels(img_size)
    assert card["training_similarity"]["count"] > 0
    network = load_trained_model(str(run / "model" / "model.pt"))  # no size given: the card says it
    assert network.encoder.img_size == [img_size, img_size] and network.num_prototypes in (2, 3)
    assert network.encoder.feature_shapes[-1] == ((3, 3) if img_size == 28 else (4, 4))
    # validation without labels ran: the label-free measures are logged, no kNN probe
    assert "alignment" in code.stderr + code.stdout and "knn_accuracy" not in code.stderr + code.stdout
    # the report needs no --img-size: the model says it, and its training images set the outlier scale
    assert report_main([str(archive), str(run / "report"), "--model", str(run / "model" / "model.pt"), "--quiet",
                        "--num-workers", "0"]) == 0
    with open(run / "report" / "report.json") as f:
        assert json.load(f)["outlier"]["source"] == "training"


def test_a_model_without_card_at_another_size_is_named(tmp_path) -> None:
    network = ContrastiveAutoEncoder(img_size=64, channels=encoder_channels(64))
    network.set_prototypes(torch.randn(3, 128))
    torch.save(network.state_dict(), tmp_path / "model.pt")
    with pytest.raises(ValueError, match="--img-size"):
        load_trained_model(str(tmp_path / "model.pt"))
    assert load_trained_model(str(tmp_path / "model.pt"), img_size=64).num_prototypes == 3


def test_one_command_from_archive_to_report_on_the_real_cohort(real_archive: str, shared_data: str, tmp_path) -> None:
    out = tmp_path / "out"
    # 24 epochs: the view signal of these 110 images is weak and varies with the schedule (README: p = 0.04 at 8
    # epochs, 0.36 at 16, 0.01 at 24, 0.02 with the preset's 60)
    code = stratify_main([real_archive, str(out), "--img-size", "128", "--epochs", "24", "--quiet",
                          "--num-workers", "0"])
    assert code == 0
    with open(out / "report" / "strata_per_image.csv") as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(shared_data, "real_cxr", "labels.csv")) as f:
        truth = {r["path"]: r for r in csv.DictReader(f)}
    assert sorted(r["image_id"] for r in rows) == sorted(truth)  # every radiograph, once
    for path in glob.glob(f"{out}/**/*", recursive=True):
        if os.path.isfile(path) and not path.endswith((".pt", ".npy", ".pkl")) and "cache" not in path:
            content = open(path, "rb").read()
            assert PLACEHOLDER_NAME.encode() not in content and PLACEHOLDER_BIRTH_DATE.encode() not in content, path
    strata = np.array([int(r["stratum"]) for r in rows])
    against_view = permutation_nmi([truth[r["image_id"]]["view"] for r in rows], strata)
    assert against_view["p_value"] < 0.05, f"strata look like chance on the view: {against_view}"


@pytest.mark.parametrize("permutations", [50, 200])
def test_permutation_nmi_separates_structure_from_chance(permutations: int) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    linked = permutation_nmi(labels, (labels + (rng.random(120) < 0.2)) % 3, permutations)
    unrelated = permutation_nmi(labels, rng.integers(0, 3, 120), permutations)
    assert linked["p_value"] == pytest.approx(1 / (permutations + 1)) and linked["nmi"] > linked["chance_p95"]
    assert unrelated["p_value"] > 0.05 and unrelated["chance_mean"] > 0  # small samples have NMI > 0 by chance
    with pytest.raises(ValueError, match="labels but"):
        permutation_nmi(labels, labels[:-1])


def test_resume_continues_a_killed_run(real_archive: str, tmp_path) -> None:
    archive, out = tmp_path / "archive", tmp_path / "out"
    copy_subset(real_archive, str(archive), patients=8)
    command = [sys.executable, "-m", "monai_cae.apps.stratify", str(archive), str(out), "--img-size", "28",
               "--epochs", "40", "--batch-size", "8", "--quiet", "--num-workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = out / "train" / "checkpoints"
    try:
        deadline = time.monotonic() + 240
        # two checkpoints: the older one is complete, whatever the kill interrupts
        while len(glob.glob(str(checkpoints / "checkpoint_epoch=*.pt"))) < 2 and time.monotonic() < deadline:
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert not (out / "model" / "model.json").exists() and not (out / "report").exists()
    # without --resume the run is not overwritten
    assert stratify_main(command[3:]) == 2
    done = subprocess.run([*command, "--resume"], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Restored all variables from" in done.stderr + done.stdout
    assert (checkpoints / "checkpoint_epoch=40.pt").exists() and (out / "report" / "report.html").exists()
    assert read_model_card(str(out / "model" / "model.pt"))["img_size"] == 28
