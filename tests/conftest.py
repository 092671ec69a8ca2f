from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from threadpoolctl import threadpool_limits

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("MONAI_CAE_SHARED_DATA", os.path.join(REPO_ROOT, "..", "shared", "data"))


@pytest.fixture(scope="session")
def shared_data() -> str:
    """The project's shared real data (``../shared/data`` beside the checkout, or ``$MONAI_CAE_SHARED_DATA``)."""
    if not os.path.isdir(SHARED_DATA):
        pytest.fail(f"shared data not found at {os.path.abspath(SHARED_DATA)}; set MONAI_CAE_SHARED_DATA.")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """One thread for torch and OpenMP (sklearn): the CPUs are shared, and on a busy machine two threads run these
    tiny problems 10-50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


BRIEF_TRAINING = {
    "max_epochs": 2, "warmup_epochs": 1, "lr_warmup_epochs": 1, "val_interval": 2, "k_values": "[2,3]",
    "progress": False,
}
"""The shortest real bundle training that discovers prototypes: one warm-up epoch, one conditional epoch."""


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, shared_data) -> str:
    """``model.pt`` of a brief real training of the bundle on PneumoniaMNIST (its command line, one thread)."""
    root = tmp_path_factory.mktemp("trained")
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
