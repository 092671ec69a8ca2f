from __future__ import annotations

import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("MONAI_CAE_SHARED_DATA", os.path.join(REPO_ROOT, "..", "shared", "data"))


@pytest.fixture(scope="session")
def shared_data() -> str:
    """The project's shared real data (``../shared/data`` beside the checkout, or ``$MONAI_CAE_SHARED_DATA``)."""
    if not os.path.isdir(SHARED_DATA):
        pytest.fail(f"shared data not found at {os.path.abspath(SHARED_DATA)}; set MONAI_CAE_SHARED_DATA.")
    return SHARED_DATA
