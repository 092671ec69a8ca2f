"""The model card that travels with a trained model: its architecture, input size, preprocessing and outlier scale.

A ``model.pt`` alone does not say at which size it reads images: loaded into a network of the wrong size it fails
with a list of mismatched layer shapes. ``model.json`` beside it records what a reader needs, so every command
builds the right network from the model file alone.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from monai_cae._version import __version__
from monai_cae.data.cohort import PREPROCESSING
from monai_cae.networks.nets import ContrastiveAutoEncoder, encoder_channels

from monai_cae.utils.io import atomic_write

from monai_cae.inference import load_model

__all__ = [
    "MODEL_CARD_NAME",
    "REFERENCE_PERCENTILES",
    "load_trained_model",
    "model_card_path",
    "read_model_card",
    "training_similarity_percentile",
    "write_model_card",
]

MODEL_CARD_NAME = "model.json"
REFERENCE_PERCENTILES = (0.5, 1.0, 2.0, 5.0)
"""Percentiles of the training images' similarity to their nearest prototype kept in the card (outlier scale)."""


def model_card_path(ckpt_path: str) -> str:
    """Where the card of ``ckpt_path`` lives: ``model.json`` in the same folder."""
    return os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), MODEL_CARD_NAME)


def read_model_card(ckpt_path: str) -> dict[str, Any]:
    """The card beside a model file.

    Args:
        ckpt_path: path of ``model.pt``.

    Returns:
        The card, or an empty dict when the model has none (models trained before cards existed).

    Raises:
        ValueError: when the card exists but is not a JSON object with a ``network`` entry.
    """
    path = model_card_path(ckpt_path)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            card = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"the model card {path} cannot be read ({type(e).__name__}: {e}).") from e
    if not isinstance(card, dict) or not isinstance(card.get("network"), dict):
        raise ValueError(f"the model card {path} has no 'network' entry: it was not written by monai_cae.")
    return card


def training_similarity_percentile(card: dict[str, Any], percentile: float) -> float | None:
    """The training images' similarity to their nearest prototype at ``percentile``, as the card keeps it.

    Args:
        card: a model card (:func:`read_model_card`).
        percentile: one of :data:`REFERENCE_PERCENTILES`.

    Returns:
        The similarity, or ``None`` when the card has no such percentile (then a report falls back to the cohort).
    """
    return card.get("training_similarity", {}).get("percentiles", {}).get(f"{percentile:g}")


def write_model_card(
    ckpt_path: str, network: ContrastiveAutoEncoder, training_embeddings: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Write ``model.json`` beside a trained model.

    Args:
        ckpt_path: path of the trained ``model.pt``.
        network: the trained network (its constructor arguments and prototypes).
        training_embeddings: the training images' latents (``prototypes/embeddings.npy`` of the run); their
            similarity to the nearest prototype gives the outlier scale of later reports (percentiles
            :data:`REFERENCE_PERCENTILES` and the count).
        extra: further JSON entries (for example the training data's description).

    Returns:
        The card written.

    Raises:
        ValueError: when the network has no prototypes yet.
    """
    if network.num_prototypes == 0:
        raise ValueError("the network has no prototypes: write the model card after prototype discovery.")
    card: dict[str, Any] = {
        "monai_cae_version": __version__,
        "network": network.init_args,
        "img_size": network.init_args["img_size"],
        "num_strata": network.num_prototypes,
        "preprocessing": PREPROCESSING,
        **extra,
    }
    if training_embeddings is not None and os.path.isfile(training_embeddings):
        latents = torch.from_numpy(np.load(training_embeddings)).to(network.prototypes.device)
        with torch.no_grad():
            similarity = network.assign(latents)[1].max(1).values.float().cpu().numpy()
        card["training_similarity"] = {
            "count": int(similarity.size),
            "percentiles": {f"{p:g}": float(np.percentile(similarity, p)) for p in REFERENCE_PERCENTILES},
        }
    # formatted as the model-zoo's JSON hook leaves it (4 spaces, final newline), so the shipped card is kept as is
    atomic_write(model_card_path(ckpt_path), lambda f: f.write(json.dumps(card, indent=4) + "\n"))
    return card


def load_trained_model(
    ckpt_path: str, device: torch.device | str = "cpu", **network_args: Any
) -> ContrastiveAutoEncoder:
    """Build the network a model file was trained as, from its card, and load the weights.

    Args:
        ckpt_path: path of ``model.pt``.
        device: device to load on.
        network_args: :class:`~monai_cae.networks.nets.ContrastiveAutoEncoder` arguments for a model without card
            (for example ``img_size``); where the card gives one it wins, since it describes the weights.

    Returns:
        The trained network in eval mode.

    Raises:
        FileNotFoundError: when the model is missing.
        ValueError: when the weights do not fit the network (the message names the input size to pass), or have no
            prototypes.
    """
    card = read_model_card(ckpt_path)
    args = {**network_args, **card.get("network", {})}
    # the depth that training derives from the input size (bundle id ``channels``)
    args.setdefault("channels", encoder_channels(args.get("img_size", 28)))
    try:
        return load_model(ContrastiveAutoEncoder(**args), ckpt_path, device)
    except RuntimeError as e:
        if card or "size mismatch" not in str(e):
            raise
        raise ValueError(
            f"{ckpt_path} does not fit a network of input size {args.get('img_size', 28)} and channels "
            f"{args['channels']}: it was trained at another size and has no {MODEL_CARD_NAME} "
            "beside it. Pass the training's input size (--img-size) or keep its model.json with it."
        ) from None
