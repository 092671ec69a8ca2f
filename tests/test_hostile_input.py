"""Hostile archives and model files (issue 13): formula cells, file names that are not UTF-8, images without
PatientID, report folders inside the archive, staging folders of killed runs, unusable model files, broken windows,
misnamed DICOM and non-finite pixels. Every file is real: generated with pydicom, numpy, nibabel and PIL from the
shared radiographs; the model is a brief real bundle training."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from monai_cae.reports.cli import main as report_main

from conftest import REPO_ROOT

NIH = "nih_cxr_covid0000.dcm"
# the shortest real bundle training that discovers prototypes: one warm-up epoch, one conditional epoch
BRIEF_TRAINING = {
    "train#trainer#max_epochs": 2, "warmup_epochs": 1, "lr_warmup_epochs": 1, "val_interval": 2, "k_values": "[2,3]",
    "progress": False,
}


@pytest.fixture(scope="module")
def model(tmp_path_factory, shared_data) -> str:
    root = tmp_path_factory.mktemp("model")
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
               os.path.join("bundles", "cae", "configs", "train.json"),
               "--dataset_dir", os.path.join(shared_data, "medmnist"), "--output_dir", str(root / "train"),
               "--model_dir", str(root / "models")]
    for key, value in BRIEF_TRAINING.items():
        command += [f"--{key}", str(value)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return str(root / "models" / "model.pt")


def run_report(archive: str, output: str, model: str, *options: str) -> int:
    return report_main([archive, output, "--model", model, "--quiet", "--device", "cpu", "--num-workers", "0",
                        *options])


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
def test_an_unusable_model_file_exits_2_with_a_message(model, shared_data, tmp_path, capsys, kind) -> None:
    path = str(tmp_path / "model.pt")
    _write_model(kind, path, model)
    assert run_report(os.path.join(shared_data, "dicom"), str(tmp_path / "out"), path) == 2
    err = capsys.readouterr().err
    assert f"{path} is not a monai_cae model" in err
    assert "weights_only" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
