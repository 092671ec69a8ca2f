"""The bundle's ``local_branch`` option through MONAI's real command line: training logs the ``local`` loss,
inference writes the pixel cluster maps and their overlays, and the cohort report shows them."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from monai_cae.data import MedMNISTDataset

from test_bundle import SHORT_RUN, run_bundle

LOCAL = {"local_branch": True, "local_clusters": 3}


@pytest.fixture(scope="module")
def trained_local(tmp_path_factory, shared_data) -> dict:
    root = tmp_path_factory.mktemp("local_bundle")
    paths = {"output_dir": str(root / "train"), "model_dir": str(root / "models")}
    dataset_dir = os.path.join(shared_data, "medmnist")
    result = run_bundle("training", "train.json", dataset_dir=dataset_dir, **paths, **SHORT_RUN, **LOCAL)
    return {**paths, "root": root, "dataset_dir": dataset_dir, "log": result.stdout + result.stderr}


def test_training_logs_the_local_loss(trained_local: dict) -> None:
    assert "local:" in trained_local["log"]
    assert os.path.isfile(os.path.join(trained_local["model_dir"], "model.pt"))


def test_inference_writes_cluster_maps_and_overlays(trained_local: dict, tmp_path) -> None:
    run_bundle(
        "inference", "inference.json", ckpt_path=os.path.join(trained_local["model_dir"], "model.pt"),
        dataset_dir=trained_local["dataset_dir"], split="test", output_dir=str(tmp_path), progress=False, **LOCAL,
    )
    maps = np.load(tmp_path / "cluster_maps.npy")
    n = len(MedMNISTDataset("pneumoniamnist", "test", trained_local["dataset_dir"]))
    assert maps.shape == (n, 28, 28) and maps.dtype == np.uint8 and maps.max() < 3
    overlays = sorted(os.listdir(tmp_path / "cluster_overlays"))
    assert len(overlays) == n
    assert Image.open(tmp_path / "cluster_overlays" / "0.png").size == (4 * (2 * 28 + 1), 4 * 28)


def test_cohort_report_shows_the_overlays(trained_local: dict, tmp_path) -> None:
    archive = tmp_path / "archive" / "patient1"
    archive.mkdir(parents=True)
    images = MedMNISTDataset("pneumoniamnist", "test", trained_local["dataset_dir"]).images[:5]
    for i, image in enumerate(images):
        Image.fromarray((image[0].numpy() * 255).astype(np.uint8)).save(archive / f"{i}.png")
    out = tmp_path / "report"
    run_bundle(
        "inference", "inference.json", ckpt_path=os.path.join(trained_local["model_dir"], "model.pt"),
        input_dir=str(tmp_path / "archive"), output_dir=str(out), progress=False, **LOCAL,
    )
    assert np.load(out / "cluster_maps.npy").shape == (5, 28, 28)
    html = (out / "report.html").read_text()
    assert 'id="pixel-clusters"' in html
    section = html.split('id="cluster-overlays"')[1].split("</div>")[0]
    assert section.count("data:image/png;base64,") == 5
    assert len([f for f in os.listdir(out / "figures") if f.startswith("cluster_overlay_")]) == 5
