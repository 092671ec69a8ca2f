"""The MONAI Label app against the real MONAI Label server, over HTTP, on real DICOM radiographs."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import REPO_ROOT

pytest.importorskip(
    "monailabel", reason="MONAI Label is not installed: pip install -e '.[label]' && "
    "pip install --no-deps monailabel==0.8.5 pydicom-seg==0.4.1 (setup.sh does both)"
)

from monai.bundle import ConfigParser  # noqa: E402

from monai_cae.apps.monailabel import APP_DIR, UVICORN_APP  # noqa: E402
from monai_cae.data import CohortDataLoader, CohortDataset, load_medmnist, probe_file  # noqa: E402
from monai_cae.engines import assign_strata  # noqa: E402
from monai_cae.reports import nearest_similarity, outlier_threshold  # noqa: E402

pytestmark = pytest.mark.slow

DICOM_FILES = ("nih_cxr_covid0000.dcm", "siim_cr_jpeg_baseline.dcm", "siim_cr_jpeg_baseline_monochrome1.dcm")
TRAINING = {"train#trainer#max_epochs": 2, "warmup_epochs": 1, "k_values": "[2,3]", "progress": False}


def request(method: str, url: str, body: dict | None = None, timeout: float = 120) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


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
    """Three real DICOM radiographs, a truncated copy of one, and eight PNG radiographs (PneumoniaMNIST)."""
    folder = tmp_path_factory.mktemp("label") / "studies"
    folder.mkdir()
    for name in DICOM_FILES:
        shutil.copy(os.path.join(shared_data, "dicom", name), folder / name)
    whole = (folder / DICOM_FILES[0]).read_bytes()
    (folder / "truncated.dcm").write_bytes(whole[: len(whole) // 3])
    from PIL import Image

    images, _ = load_medmnist("pneumoniamnist", "test", os.path.join(shared_data, "medmnist"))
    for i in range(8):
        Image.fromarray(np.asarray(images[i]).squeeze()).save(folder / f"pneumonia_{i}.png")
    return str(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(bundle, studies, tmp_path_factory):
    """The real MONAI Label server on 127.0.0.1 serving the app, stopped at the end."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("label") / "server.log", "w")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]),
           "MONAI_LABEL_SESSIONS": "false"}
    command = [sys.executable, "-m", "monailabel.main", "start_server", "--app", APP_DIR, "--studies", studies,
               "--conf", "bundle_path", bundle, "--host", "127.0.0.1", "--port", str(port),
               "--uvicorn_app", UVICORN_APP]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            assert process.poll() is None, open(log.name).read()[-5000:]
            assert time.perf_counter() - start < 180, "the server did not answer within 180 s"
            try:
                if request("GET", f"{url}/info/", timeout=5)[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        started = time.perf_counter() - start
        print(f"\nMONAI Label server start (process start to first /info/ answer): {started:.2f} s")
        yield {"url": url, "log": log.name, "bundle": bundle, "studies": studies, "process": process}
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def expected_strata(bundle: str, studies: str) -> dict[str, dict]:
    # the cohort pipeline on the same files, in this process: what monai-cae-report would say
    parser = ConfigParser()
    parser.read_config(os.path.join(bundle, "configs", "inference.json"))
    parser.update({"bundle_root": bundle, "device": "cpu"})
    network = parser.get_parsed_content("network")
    # one file at a time, as the server sees them (an archive scan would drop the MONOCHROME1 copy as duplicate)
    entries = [probe_file(os.path.join(studies, name)) for name in sorted(os.listdir(studies))
               if name.endswith((".dcm", ".png"))]
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


def test_info_lists_the_classification_task(server) -> None:
    status, info = request("GET", f"{server['url']}/info/")
    assert status == 200
    model = info["models"]["cae"]
    assert model["type"] == "classification"
    k = len(np.load(os.path.join(server["bundle"], "models", "prototypes.npy")))
    assert model["labels"] == {f"stratum {j}": j for j in range(k)}
    assert "cae" in info["trainers"] and info["trainers"]["cae"]["config"]["run_id"] == "run"
    assert {"least_typical", "random"} <= set(info["strategies"])
    assert info["datastore"]["total"] == len(DICOM_FILES) + 1 + 8


def test_infer_returns_strata_scores_similarity_and_outlier_flag(server) -> None:
    expected = expected_strata(server["bundle"], server["studies"])
    latencies = []
    for name in DICOM_FILES:
        image_id = os.path.splitext(name)[0]
        start = time.perf_counter()
        status, result = request("POST", f"{server['url']}/infer/cae?image={image_id}")
        latencies.append(time.perf_counter() - start)
        assert status == 200, result
        truth = expected[image_id]
        k = len(truth["scores"])
        assert result["image"] == image_id
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


def test_missing_and_corrupt_images_are_clear_errors(server) -> None:
    status, answer = request("POST", f"{server['url']}/infer/cae?image=no_such_image")
    assert status == 404 and "no_such_image" in answer["detail"] and "not in the datastore" in answer["detail"]
    status, answer = request("POST", f"{server['url']}/infer/cae?image=truncated")
    assert status == 422 and "'truncated' is unusable: corrupt" in answer["detail"], answer
    assert request("GET", f"{server['url']}/info/")[0] == 200
    assert server["process"].poll() is None


def test_least_typical_strategy_offers_the_farthest_image_first(server) -> None:
    similarities = {}
    for image_id in [os.path.splitext(n)[0] for n in DICOM_FILES] + [f"pneumonia_{i}" for i in range(8)]:
        status, result = request("POST", f"{server['url']}/infer/cae?image={image_id}")
        assert status == 200, result
        similarities[image_id] = result["similarity"]
    offered = []
    for _ in range(2):
        status, sample = request("POST", f"{server['url']}/activelearning/least_typical")
        assert status == 200 and sample["candidates"] == len(similarities)  # the truncated file is passed over
        offered.append(sample["id"])
    assert offered == sorted(similarities, key=similarities.get)[:2]


def test_training_from_monai_label_replaces_the_model(server) -> None:
    model_path = os.path.join(server["bundle"], "models", "model.pt")
    before = os.stat(model_path).st_mtime_ns
    params = {"max_epochs": 2, "warmup_epochs": 1, "dataset": "datastore", "pretrained": False, "device": "cpu"}
    status, task = request("POST", f"{server['url']}/train/cae", params)
    assert status == 200, task
    deadline = time.time() + 300
    while time.time() < deadline:
        status, task = request("GET", f"{server['url']}/train/")
        if task.get("status") not in ("SUBMITTED", "RUNNING"):
            break
        time.sleep(1)
    assert task["status"] == "DONE", "\n".join(task.get("details", [])) + open(server["log"]).read()[-4000:]
    assert os.stat(model_path).st_mtime_ns != before
    status, result = request("POST", f"{server['url']}/infer/cae?image={os.path.splitext(DICOM_FILES[0])[0]}")
    k = len(np.load(os.path.join(server["bundle"], "models", "prototypes.npy")))
    assert status == 200 and len(result["scores"]) == k
