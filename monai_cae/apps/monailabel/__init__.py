"""The MONAI Label app of monai_cae: stratum, scores, prototype and outlier flag of the radiograph on screen.

This folder is a MONAI Label app (``main.py`` with a ``MONAILabelApp`` subclass, ``lib/configs``, ``lib/infers``,
``lib/trainers``, ``lib/activelearning``). Importing this package does not import MONAI Label, which is an optional
extra (``pip install -e ".[label]"`` then ``pip install --no-deps monailabel==0.8.5 pydicom-seg==0.4.1``).
"""

from __future__ import annotations

import os

from monai_cae.apps.bundle import bundle_dir

__all__ = ["APP_DIR", "DEFAULT_BUNDLE_PATH", "UVICORN_APP"]

APP_DIR = os.path.dirname(os.path.abspath(__file__))
"""The app folder to pass to ``monailabel start_server --app``."""

DEFAULT_BUNDLE_PATH = bundle_dir()
"""The installed bundle, with its shipped model (``bundles/cae`` of a source checkout); ``--conf bundle_path``
overrides it."""

UVICORN_APP = "monai_cae.apps.monailabel.server:app"
"""MONAI Label's server application behind the pydicom 3 fix (``start_server --uvicorn_app``)."""
