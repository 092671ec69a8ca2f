"""Names that a user gives strata after reading a report ("stratum 2 = portable AP films"), kept beside the model.

The names live in ``<model folder>/strata_names.json``::

    {"model": "model.pt", "model_sha256": "<sha256 of model.pt>", "names": {"2": "portable AP films"}}

keyed by stratum index. The checksum ties them to the model they were given for: a model retrained into the same
folder has other strata, and :func:`read_stratum_names` then ignores (with a warning) names that would mislabel them.
From the command line::

    monai-cae-report --model runs/models/model.pt --name-stratum 2 "portable AP films"

names a stratum without writing a report (an empty name removes it); every later report of that model shows it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping

import torch

from monai_cae.utils.io import atomic_write

__all__ = ["STRATA_NAMES_FILE", "read_stratum_names", "strata_names_path", "write_stratum_names"]

STRATA_NAMES_FILE = "strata_names.json"
MAX_NAME_LENGTH = 80  # a label, shown in table cells and headings


def strata_names_path(model_path: str) -> str:
    """The names file of a model: ``strata_names.json`` in the model's folder."""
    return os.path.join(os.path.dirname(os.path.abspath(model_path)), STRATA_NAMES_FILE)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _num_strata(model_path: str) -> int:
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, dict) else state
    prototypes = [v for k, v in state.items() if k.endswith("assignment.prototypes")]
    if not prototypes or not len(prototypes[0]):
        raise ValueError(f"{model_path} holds no prototypes (training stopped before prototype discovery).")
    return len(prototypes[0])


def _check_model(model_path: str) -> None:
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"model not found: {os.path.abspath(model_path)}.")


def read_stratum_names(model_path: str) -> dict[int, str]:
    """The names given to a model's strata.

    Args:
        model_path: the model file (``model.pt``).

    Returns:
        ``{stratum index: name}``; empty when no name was given, or when the names were given for another model
        (a different checksum: a warning says so).

    Raises:
        FileNotFoundError: when the model is missing.
        ValueError: when ``strata_names.json`` is not a names file (e.g. edited by hand into something else).
    """
    _check_model(model_path)
    path = strata_names_path(model_path)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        names = {int(k): str(v) for k, v in content["names"].items()}
        checksum = content["model_sha256"]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not a strata names file ({type(e).__name__}: {e}).") from e
    if checksum != _sha256(model_path):
        warnings.warn(
            f"{path} names the strata of another model ({content.get('model', '?')} with another checksum); "
            f"they are not shown for {os.path.basename(model_path)}. Name the strata again.",
            stacklevel=2,
        )
        return {}
    return names


def write_stratum_names(model_path: str, names: Mapping[int, str]) -> dict[int, str]:
    """Replace the names of a model's strata (to change one, update :func:`read_stratum_names`'s result).

    Args:
        model_path: the model file (``model.pt``); the names are written beside it.
        names: ``{stratum index: name}``; names are stripped, and an empty name leaves its stratum unnamed.

    Returns:
        The names written.

    Raises:
        FileNotFoundError: when the model is missing.
        ValueError: for an index that is not one of the model's strata, or a name that is not one line of at most
            :data:`MAX_NAME_LENGTH` characters.
    """
    _check_model(model_path)
    k = _num_strata(model_path)
    cleaned = {}
    for index, name in names.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < k:
            raise ValueError(f"stratum index must be one of the model's strata 0..{k - 1}, got {index!r}.")
        if not isinstance(name, str) or "\n" in name or "\r" in name or len(name.strip()) > MAX_NAME_LENGTH:
            raise ValueError(f"a stratum name must be one line of at most {MAX_NAME_LENGTH} characters, got {name!r}.")
        if name.strip():
            cleaned[index] = name.strip()
    content = {
        "model": os.path.basename(model_path), "model_sha256": _sha256(model_path),
        "names": {str(i): cleaned[i] for i in sorted(cleaned)},
    }
    atomic_write(strata_names_path(model_path), lambda f: json.dump(content, f, indent=1))
    return dict(sorted(cleaned.items()))
