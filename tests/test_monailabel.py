"""The MONAI Label app against the real MONAI Label server, over HTTP, on real DICOM radiographs."""

from __future__ import annotations

import base64
import glob
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest

from conftest import REPO_ROOT

pytest.importorskip(
    "monailabel", reason="MONAI Label is not installed: pip install -e '.[label]' && "
    "pip install --no-deps monailabel==0.8.5 pydicom-seg==0.4.1 (setup.sh does both)"
)

from label_server import datastore_id, start_server  # noqa: E402
from monai.bundle import ConfigParser  # noqa: E402

from monai_cae.apps.monailabel.cli import server_arguments  # noqa: E402
from monai_cae.data import CohortDataLoader, CohortDataset, load_medmnist, probe_file  # noqa: E402
from monai_cae.engines import assign_strata  # noqa: E402
from monai_cae.reports import nearest_similarity, outlier_threshold  # noqa: E402

pytestmark = pytest.mark.slow

DICOM_FILES = ("nih_cxr_covid0000.dcm", "siim_cr_jpeg_baseline.dcm", "siim_cr_jpeg_baseline_monochrome1.dcm")
TRAINING = {"max_epochs": 2, "warmup_epochs": 1, "k_values": "[2,3]", "progress": False}

NESTED = "2021/DX"
"""A year/modality folder of the studies, as archives are laid out."""

NON_UTF8 = os.fsdecode(b"caf\xe9.dcm")
"""A Latin-1 file name from an old file server (not UTF-8): a copy of the second DICOM file."""

USABLE = {
    **{os.path.splitext(n)[0]: n for n in DICOM_FILES},
    **{f"pneumonia_{i}": f"pneumonia_{i}.png" for i in range(4)},
    **{f"{NESTED}/pneumonia_{i}": f"{NESTED}/pneumonia_{i}.png" for i in range(4, 8)},
    f"{NESTED}/IM0001": f"{NESTED}/IM0001",  # DICOM without extension
    "caf\\xe9": NON_UTF8,
    "inside_link": "inside_link.png",  # a link to an image of the studies
    "dicom_named_png": "dicom_named_png.png",  # a DICOM file with a lying extension
}
"""Datastore id -> file of each image the server stratifies."""

UNUSABLE = {"truncated": "corrupt", "bad/nan": "non_finite", "empty": "corrupt", "text_named_png": "corrupt"}
"""Datastore id -> reason code of each listed image the cohort pipeline refuses (answered 422)."""

NOT_OFFERED = ("outside", "loop", "pipe", "folder", "notes")
"""Files of the studies that are no image of the datastore: a link out of the studies, a link loop, a FIFO, a
folder named like an image, a text file."""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, shared_data) -> str:
    """A bundle folder with the repository's configs and a tiny model trained through the bundle's command line."""
    root = tmp_path_factory.mktemp("label") / "bundle"
    shutil.copytree(os.path.join(REPO_ROOT, "bundles", "cae", "configs"), root / "configs")
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
               os.path.join("bundles", "cae", "configs", "train.json"),
               "--dataset_dir", os.path.join(shared_data, "medmnist"),
               "--output_dir", str(root / "runs" / "train"), "--model_dir", str(root / "models")]
    for key, value in TRAINING.items():
        command += [f"--{key}", str(value)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return str(root)


@pytest.fixture(scope="module")
def studies(tmp_path_factory, shared_data) -> str:
    """A nested studies folder: real DICOM radiographs (one without extension, one with a name that is not UTF-8,
    one named .png), PNG radiographs (PneumoniaMNIST) at the top and in a year/modality folder, unusable images
    (truncated DICOM, a float NIfTI with a NaN, an empty .dcm, text named .png) and files that are no image of the
    studies (a link out of it, a link loop, a FIFO, a folder named .dcm, a text file)."""
    import nibabel
    from PIL import Image

    base = tmp_path_factory.mktemp("label")
    folder = base / "studies"
    (folder / NESTED).mkdir(parents=True)
    dicom = os.path.join(shared_data, "dicom")
    for name in DICOM_FILES:
        shutil.copy(os.path.join(dicom, name), folder / name)
    shutil.copy(os.path.join(dicom, DICOM_FILES[0]), folder / NESTED / "IM0001")
    shutil.copy(os.path.join(dicom, DICOM_FILES[1]), os.path.join(os.fsencode(folder), os.fsencode(NON_UTF8)))
    shutil.copy(os.path.join(dicom, DICOM_FILES[2]), folder / "dicom_named_png.png")
    images, _ = load_medmnist("pneumoniamnist", "test", os.path.join(shared_data, "medmnist"))
    for i in range(8):
        image = Image.fromarray(np.asarray(images[i]).squeeze())
        image.save(folder / (NESTED if i >= 4 else "") / f"pneumonia_{i}.png")
    (folder / "inside_link.png").symlink_to("pneumonia_0.png")
    whole = (folder / DICOM_FILES[0]).read_bytes()
    (folder / "truncated.dcm").write_bytes(whole[: len(whole) // 3])
    (folder / "bad").mkdir()
    nan = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    nan[3, 4] = np.nan
    nibabel.save(nibabel.Nifti1Image(nan, np.eye(4)), folder / "bad" / "nan.nii.gz")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "text_named_png.png").write_text("not an image\n")
    shutil.copy(os.path.join(dicom, DICOM_FILES[0]), base / "outside.dcm")
    (folder / "outside.dcm").symlink_to(base / "outside.dcm")
    (folder / "loop.dcm").symlink_to("loop.dcm")
    os.mkfifo(folder / "pipe.dcm")
    (folder / "folder.dcm").mkdir()
    (folder / "notes.txt").write_text("=HYPERLINK(\"x\")\n")
    return str(folder)


@pytest.fixture(scope="module")
def server(bundle, studies, tmp_path_factory):
    """The real MONAI Label server, started by ``monai-cae-label`` without ``--host``, stopped at the end."""
    # its own temporary folder, where MONAI Label puts each upload: what it leaves there is seen
    server_tmp = str(tmp_path_factory.mktemp("server_tmp"))
    with start_server(studies, bundle, str(tmp_path_factory.mktemp("label") / "server.log"),
                      env={"TMPDIR": server_tmp}) as running:
        running.tmp = server_tmp
        print(f"\nMONAI Label server start (process start to first /info/ answer): {running.start_s:.2f} s")
        yield running


def expected_strata(bundle: str, studies: str) -> dict[str, dict]:
    # the cohort pipeline on the same files, in this process: what monai-cae-report would say
    parser = ConfigParser()
    parser.read_config(os.path.join(bundle, "configs", "inference.json"))
    parser.update({"bundle_root": bundle, "device": "cpu"})
    network = parser.get_parsed_content("network")
    # one file at a time, as the server sees them (an archive scan would drop the MONOCHROME1 copy as duplicate)
    entries = [probe_file(os.path.join(studies, name)) for name in DICOM_FILES]
    dataset = CohortDataset(entries, parser.get_parsed_content("img_size"))
    result = assign_strata(network, CohortDataLoader(dataset, batch_size=8), progress=False)
    reference = np.load(os.path.join(bundle, "runs", "train", "prototypes", "embeddings.npy"))
    prototypes = network.prototypes.numpy()
    threshold = outlier_threshold(np.zeros(0), None, 1.0, nearest_similarity(reference, prototypes)).value
    return {
        os.path.splitext(image_id)[0]: {"stratum": int(result.clusters[i]), "scores": result.probabilities[i],
                                        "similarity": float(result.nearest_similarity[i]), "threshold": threshold}
        for i, image_id in enumerate(result.ids)
    }


def test_start_server_listens_on_localhost_unless_told() -> None:
    assert server_arguments(["start_server", "--studies", "s"])[-2:] == ["--host", "127.0.0.1"]
    for given in (["--host", "0.0.0.0"], ["--host=0.0.0.0"], ["-i", "0.0.0.0"], ["-i0.0.0.0"], ["--ho", "0.0.0.0"]):
        args = server_arguments(["start_server", "--studies", "s", *given])
        assert "127.0.0.1" not in args and args[3:3 + len(given)] == given
    assert server_arguments(["apps"]) == ["apps"]


def test_info_lists_the_classification_task(server) -> None:
    # started without --host: listening on the loopback interface only
    assert f"Uvicorn running on {server.url}" in server.log_text()
    status, info = server.request("GET", "/info/")
    assert status == 200
    model = info["models"]["cae"]
    assert model["type"] == "classification"
    k = len(np.load(os.path.join(server.bundle, "models", "prototypes.npy")))
    assert model["labels"] == {f"stratum {j}": j for j in range(k)}
    assert "cae" in info["trainers"] and info["trainers"]["cae"]["config"]["run_id"] == "run"
    assert {"least_typical", "random"} <= set(info["strategies"])
    assert info["datastore"]["total"] == len(USABLE) + len(UNUSABLE)


def test_datastore_lists_nested_extensionless_and_non_utf8_images(server) -> None:
    # every image below the studies, by id; nothing else, and nothing of MONAI Label's own files
    assert server.images() == sorted([*USABLE, *UNUSABLE])
    assert {datastore_id(name) for name in USABLE.values()} == set(USABLE)
    status, answer = server.request("GET", "/datastore/image/info?image=caf%5Cxe9")
    assert status == 200 and answer["path"].endswith("caf\\xe9.dcm"), answer


def test_infer_returns_strata_scores_similarity_and_outlier_flag(server) -> None:
    expected = expected_strata(server.bundle, server.studies)
    latencies = []
    for name in DICOM_FILES:
        image_id = os.path.splitext(name)[0]
        start = time.perf_counter()
        status, result = server.infer(image_id)
        latencies.append(time.perf_counter() - start)
        assert status == 200, result
        truth = expected[image_id]
        k = len(truth["scores"])
        assert result["image"] == image_id and result["model_version"] == "bundle"
        assert result["stratum"] == truth["stratum"] and result["prediction"] == f"stratum {truth['stratum']}"
        scores = np.array([result["scores"][f"stratum {j}"] for j in range(k)])
        np.testing.assert_allclose(scores, truth["scores"], atol=1e-5)
        assert scores.sum() == pytest.approx(1.0, abs=1e-5) and scores.argmax() == result["stratum"]
        assert result["similarity"] == pytest.approx(truth["similarity"], abs=1e-5)
        assert result["similarity"] == pytest.approx(max(result["similarities"].values()))
        assert result["outlier_source"] == "reference"
        assert result["outlier_threshold"] == pytest.approx(truth["threshold"], abs=1e-6)
        assert result["outlier"] == (result["similarity"] < result["outlier_threshold"])
        from PIL import Image

        prototype = Image.open(io.BytesIO(base64.b64decode(result["prototype_png"])))
        assert prototype.format == "PNG" and prototype.size == (28 * 4, 28 * 4)
    # the MONOCHROME1 copy is the same picture inverted: a different image to the model
    assert not np.allclose(expected[os.path.splitext(DICOM_FILES[1])[0]]["scores"],
                           expected[os.path.splitext(DICOM_FILES[2])[0]]["scores"])
    print(f"\ninfer latency per request (1024 x 1024 DICOM, over HTTP): first {latencies[0] * 1000:.0f} ms, "
          f"median {np.median(latencies) * 1000:.0f} ms")


def test_every_image_of_the_studies_is_stratified(server) -> None:
    # nested, extensionless, non-UTF-8, linked and misnamed images as their originals
    results = {}
    for image_id in USABLE:
        status, results[image_id] = server.infer(image_id)
        assert status == 200 and results[image_id]["image"] == image_id, (image_id, results[image_id])
    for copy, original in ((f"{NESTED}/IM0001", "nih_cxr_covid0000"), ("caf\\xe9", "siim_cr_jpeg_baseline"),
                           ("inside_link", "pneumonia_0"), ("dicom_named_png", "siim_cr_jpeg_baseline_monochrome1")):
        assert results[copy]["scores"] == results[original]["scores"], copy


def test_only_images_of_the_datastore_are_served(server, tmp_path) -> None:
    secret = tmp_path / "secret.dcm"
    shutil.copy(os.path.join(server.studies, DICOM_FILES[0]), secret)
    requested = [
        str(secret), str(tmp_path / "missing.dcm"),  # an image outside the studies, and a missing one
        "/etc/passwd", "/etc/no_such_file", "/proc/self/environ",
        os.path.join(server.studies, DICOM_FILES[0]),  # a path, even inside the studies, is no id
        os.path.relpath(secret, REPO_ROOT), f"../{os.path.basename(tmp_path)}/secret.dcm", "../../../etc/passwd",
        server.studies, "/",  # folders are never scanned
        *NOT_OFFERED, "no_such_image", "labels/final", "datastore_v2.json",
    ]
    start = time.perf_counter()
    for image_id in requested:
        status, answer = server.infer(image_id, timeout=30)
        # one answer, whether the file exists or not
        assert status == 404 and answer["detail"] == f"image {image_id!r} is not in the datastore.", image_id
        status, _ = server.request("GET", f"/datastore/image?image={urllib.parse.quote(image_id, safe='')}")
        assert status == 404, image_id
    assert time.perf_counter() - start < 30
    assert server.process.poll() is None


def test_the_studies_are_never_written_nor_deleted_through_the_server(server) -> None:
    outside = os.path.join(os.path.dirname(server.studies), "planted")
    body = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n"
            + open(os.path.join(server.studies, "pneumonia_0.png"), "rb").read() + b"\r\n--b--\r\n")
    req = urllib.request.Request(f"{server.url}/datastore/image?image=../planted", data=body, method="PUT",
                                 headers={"Content-Type": "multipart/form-data; boundary=b"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code == 403 and not glob.glob(outside + "*")
    body = body.replace(b'name="file"', b'name="label"')
    req = urllib.request.Request(f"{server.url}/datastore/label?image=pneumonia_0&tag=../../planted", data=body,
                                 method="PUT", headers={"Content-Type": "multipart/form-data; boundary=b"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code == 403 and not glob.glob(outside + "*")
    status, _ = server.request("DELETE", "/datastore/image?id=pneumonia_0")
    assert status == 403 and os.path.isfile(os.path.join(server.studies, "pneumonia_0.png"))
    assert "pneumonia_0" in server.images()
    uploaded = open(os.path.join(server.studies, "pneumonia_0.png"), "rb").read()
    left = [name for name in os.listdir(server.tmp) if open(os.path.join(server.tmp, name), "rb").read() == uploaded]
    assert not left, "a refused upload (an image of a patient) stayed in the temporary folder"


def test_unusable_images_are_422_with_their_reason(server) -> None:
    for image_id, reason in UNUSABLE.items():
        status, answer = server.infer(image_id)
        assert status == 422 and f"{image_id!r} is unusable: {reason}" in answer["detail"], (image_id, answer)
    assert server.request("GET", "/info/")[0] == 200
    assert server.process.poll() is None


def test_least_typical_strategy_offers_the_farthest_image_first(server) -> None:
    similarities = {}
    for image_id in USABLE:
        status, result = server.infer(image_id)
        assert status == 200, result
        similarities[image_id] = result["similarity"]
    offered = []
    for _ in range(2):
        status, sample = server.request("POST", "/activelearning/least_typical")
        assert status == 200 and sample["candidates"] == len(similarities)  # the unusable ones are passed over
        offered.append(sample["id"])
    ranked = sorted(similarities, key=lambda i: (similarities[i], i))
    assert offered == ranked[:2]


def _digest(folder: str) -> dict[str, str]:
    return {os.path.relpath(p, folder): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)) if os.path.isfile(p)}


def _train(server, params: dict, timeout: float = 300) -> dict:
    status, task = server.request("POST", "/train/cae", params)
    assert status == 200, task
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, task = server.request("GET", "/train/")
        if task.get("status") not in ("SUBMITTED", "RUNNING"):
            return task
        time.sleep(0.5)
    raise AssertionError(f"training did not end within {timeout} s")


def _pointer(bundle: str) -> dict:
    with open(os.path.join(bundle, "runs", "label", "current.json"), encoding="utf-8") as f:
        return json.load(f)


def test_training_from_monai_label_makes_a_new_model_version(server) -> None:
    bundle = server.bundle
    shipped = {"models": _digest(os.path.join(bundle, "models")), "runs/train": _digest(os.path.join(bundle, "runs",
                                                                                                     "train"))}
    params = {"max_epochs": 2, "warmup_epochs": 1, "dataset": "datastore", "pretrained": False, "device": "cpu"}
    task = _train(server, params)
    assert task["status"] == "DONE", "\n".join(task.get("details", [])) + server.log_text()[-4000:]
    first = _pointer(bundle)
    run = os.path.join(bundle, "runs", "label", first["version"])
    assert first["previous"] == "bundle"
    for part in ("models/model.pt", "models/model.json", "models/prototypes.npy", "prototypes/embeddings.npy"):
        assert os.path.isfile(os.path.join(run, part)), part
    assert glob.glob(os.path.join(run, "checkpoints", "*.pt")) and glob.glob(os.path.join(run, "tensorboard", "*"))
    # the bundle's own model and main run are untouched
    assert shipped == {"models": _digest(os.path.join(bundle, "models")),
                       "runs/train": _digest(os.path.join(bundle, "runs", "train"))}

    # from the next request on: the new version, with its own strata and its own reference embeddings
    status, result = server.infer(os.path.splitext(DICOM_FILES[0])[0])
    prototypes = np.load(os.path.join(run, "models", "prototypes.npy"))
    reference = np.load(os.path.join(run, "prototypes", "embeddings.npy"))
    threshold = outlier_threshold(np.zeros(0), None, 1.0, nearest_similarity(reference, prototypes)).value
    assert status == 200 and result["model_version"] == first["version"], result
    assert len(result["scores"]) == len(prototypes)
    assert result["outlier_source"] == "reference" and result["outlier_threshold"] == pytest.approx(threshold)

    # pretrained: from the current version's weights, with prototypes discovered again
    task = _train(server, {**params, "pretrained": True})
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    second = _pointer(bundle)
    assert second["previous"] == first["version"] and second["version"] != first["version"]
    second_run = os.path.join(bundle, "runs", "label", second["version"])
    assert os.path.isfile(os.path.join(second_run, "prototypes", "embeddings.npy"))
    assert os.path.isfile(os.path.join(run, "models", "model.pt"))  # the previous version stays available
    assert server.infer(os.path.splitext(DICOM_FILES[0])[0])[1]["model_version"] == second["version"]

    # a training killed half-way leaves the current version in place
    before = set(os.listdir(os.path.join(bundle, "runs", "label")))
    status, _ = server.request("POST", "/train/cae", {**params, "max_epochs": 500, "warmup_epochs": 400})
    assert status == 200
    deadline = time.time() + 120
    while not glob.glob(os.path.join(bundle, "runs", "label", "*", "checkpoints", "*.pt")
                        ) or set(os.listdir(os.path.join(bundle, "runs", "label"))) == before:
        assert time.time() < deadline, server.log_text()[-4000:]
        time.sleep(0.2)
    killed = (set(os.listdir(os.path.join(bundle, "runs", "label"))) - before).pop()
    while not glob.glob(os.path.join(bundle, "runs", "label", killed, "checkpoints", "*.pt")):
        assert time.time() < deadline, server.log_text()[-4000:]
        time.sleep(0.2)
    status, task = server.request("DELETE", "/train/")
    assert status == 200 and task["status"] == "STOPPED", task
    assert _pointer(bundle) == second
    assert server.infer(os.path.splitext(DICOM_FILES[0])[0])[1]["model_version"] == second["version"]


def _listed_within(server, image_id: str, listed: bool, seconds: float = 20) -> bool:
    deadline = time.time() + seconds
    while (image_id in server.images()) != listed:
        if time.time() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_images_copied_into_a_sub_folder_are_listed_while_the_server_runs(server) -> None:
    new = os.path.join(server.studies, "2022", "CR", "new.png")
    os.makedirs(os.path.dirname(new))
    shutil.copy(os.path.join(server.studies, "pneumonia_0.png"), new)
    assert _listed_within(server, "2022/CR/new", True)
    assert server.infer("2022/CR/new")[0] == 200
    os.remove(new)
    assert _listed_within(server, "2022/CR/new", False)


def test_a_studies_folder_without_images_is_a_warning(bundle, tmp_path) -> None:
    studies = tmp_path / "empty_studies"
    (studies / "2020" / "CR").mkdir(parents=True)
    (studies / "2020" / "CR" / "notes.txt").write_text("no image here\n")
    with start_server(str(studies), bundle, str(tmp_path / "server.log")) as server:
        assert server.images() == []
        assert "no images in the studies folder" in server.log_text()


def test_a_datastore_file_an_earlier_server_broke_is_written_again(bundle, studies, tmp_path) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    shutil.copy(os.path.join(studies, "pneumonia_0.png"), folder / "pneumonia_0.png")
    # what MONAI Label's own datastore wrote for a Latin-1 file name: a lone surrogate, which no JSON reader loads
    broken = {"name": "new-dataset", "description": "New Dataset", "images_dir": ".", "labels_dir": "labels",
              "objects": {"caf\udce9": {"image": {"ext": ".dcm", "info": {"name": "caf\udce9.dcm"}}, "labels": {}}}}
    (folder / "datastore_v2.json").write_text(json.dumps(broken))
    with start_server(str(folder), bundle, str(tmp_path / "server.log")) as server:
        assert server.images() == ["pneumonia_0"]
    with open(folder / "datastore_v2.json", encoding="utf-8") as f:
        assert list(json.load(f)["objects"]) == ["pneumonia_0"]
