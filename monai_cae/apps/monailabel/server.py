"""MONAI Label's own server application (``monailabel.app:app``), importable under pydicom 3.

``monailabel start_server`` imports its FastAPI application before it loads any app, so the pydicom 3 fix has to
come first: pass ``--uvicorn_app monai_cae.apps.monailabel.server:app`` (``monai-cae-label`` does).
"""

from __future__ import annotations

from monai_cae.apps.monailabel.compat import patch_pydicom_seg

patch_pydicom_seg()

from monailabel.app import app  # noqa: E402

__all__ = ["app"]
