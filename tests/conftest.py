from __future__ import annotations

import os

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
