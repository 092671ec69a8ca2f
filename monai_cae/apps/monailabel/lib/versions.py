"""Model versions trained from MONAI Label: one run folder each, and an atomic pointer to the current one.

A train task never writes into the bundle's shipped model (``models/model.pt``) or its main run
(``runs/train/``), which every other command uses. It trains into ``runs/label/<version>/`` (model, prototypes,
checkpoints and TensorBoard events together) and, only once training completed, points ``runs/label/current.json``
at it, written through a temporary file and a rename, so a reader sees the old pointer or the new one. A failed or
killed training leaves the pointer, hence the current model, as it was; every earlier version stays on disk.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass

from monai_cae.utils.io import atomic_write

__all__ = [
    "POINTER_NAME",
    "RUNS_FOLDER",
    "SHIPPED",
    "ModelVersion",
    "current_version",
    "new_version",
    "publish",
    "shipped_version",
]

RUNS_FOLDER = os.path.join("runs", "label")
"""Where the versions live, below the bundle folder."""

POINTER_NAME = "current.json"
"""The pointer in :data:`RUNS_FOLDER`: ``{"version": ..., "previous": ..., "published": ...}``."""

SHIPPED = "bundle"
"""The version name of the bundle's own model (``models/model.pt``, reference ``runs/train/prototypes``)."""

# a version is a folder name of new_version's making: nothing in the pointer can name a path elsewhere
_VERSION = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}")


@dataclass(frozen=True)
class ModelVersion:
    """One trained model of the bundle.

    Attributes:
        name: :data:`SHIPPED`, or the version's run folder name (``20261202-061500-1a2b3c4d``, UTC).
        folder: the run folder (the training's ``output_dir``): ``prototypes/``, ``checkpoints/``, ``tensorboard/``.
        model: its ``model.pt`` (``model.json`` and ``prototypes.npy`` beside it).
        reference_embeddings: the training images' latents, which calibrate the outlier threshold.
    """

    name: str
    folder: str
    model: str
    reference_embeddings: str

    @property
    def model_dir(self) -> str:
        """The training's ``model_dir``: the folder of :attr:`model`."""
        return os.path.dirname(self.model)


def shipped_version(bundle_path: str) -> ModelVersion:
    """The bundle's own model, trained by its command line."""
    run = os.path.join(bundle_path, "runs", "train")
    return ModelVersion(SHIPPED, run, os.path.join(bundle_path, "models", "model.pt"),
                        os.path.join(run, "prototypes", "embeddings.npy"))


def _run_version(bundle_path: str, name: str) -> ModelVersion:
    folder = os.path.join(bundle_path, RUNS_FOLDER, name)
    return ModelVersion(name, folder, os.path.join(folder, "models", "model.pt"),
                        os.path.join(folder, "prototypes", "embeddings.npy"))


def current_version(bundle_path: str) -> ModelVersion:
    """The version the pointer names; the shipped model before any training from MONAI Label completed.

    Args:
        bundle_path: the bundle folder.

    Raises:
        ValueError: when the pointer exists but does not name a version (edited by hand).
    """
    pointer = os.path.join(bundle_path, RUNS_FOLDER, POINTER_NAME)
    try:
        with open(pointer, encoding="utf-8") as f:
            name = json.load(f).get("version")
    except FileNotFoundError:
        return shipped_version(bundle_path)
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"the model pointer {pointer} cannot be read ({type(e).__name__}: {e}).") from e
    if not isinstance(name, str) or not _VERSION.fullmatch(name):
        raise ValueError(f"the model pointer {pointer} names no version of {RUNS_FOLDER} ({name!r}).")
    return _run_version(bundle_path, name)


def new_version(bundle_path: str) -> ModelVersion:
    """Create the run folder of a new version (not current until :func:`publish`).

    Args:
        bundle_path: the bundle folder.
    """
    name = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    version = _run_version(bundle_path, name)
    os.makedirs(version.folder)
    return version


def publish(bundle_path: str, version: ModelVersion, previous: ModelVersion) -> None:
    """Make ``version`` the current one, atomically.

    Args:
        bundle_path: the bundle folder.
        version: the version whose training completed.
        previous: the version it replaces (recorded, so that a user can point back to it).

    Raises:
        FileNotFoundError: when the version has no model file.
    """
    if not os.path.isfile(version.model):
        raise FileNotFoundError(f"training wrote no model at {version.model}: the current model stays {previous.name}.")
    record = {"version": version.name, "previous": previous.name,
              "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write(os.path.join(bundle_path, RUNS_FOLDER, POINTER_NAME), lambda f: json.dump(record, f, indent=2))
