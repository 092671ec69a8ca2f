"""The per-image result of stratum assignment, the loading of a trained model and the writing of results."""

from __future__ import annotations

import csv
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.utils.io import atomic_write

__all__ = ["StrataAssignment", "load_model", "write_assignments"]


@dataclass
class StrataAssignment:
    """Per-image results of :func:`assign_strata`, in dataset order.

    Attributes:
        embeddings: ``(N, D)`` float32 latents ``h``.
        probabilities: ``(N, K)`` soft assignment to the prototypes.
        similarities: ``(N, K)`` cosine similarity to each prototype.
        ids: identifier of each image.
        indices: dataset index of each image.
        labels: labels where the dataset has them (``-1`` otherwise).
        cluster_maps: ``(N, *img_size)`` uint8 pixel cluster of the model's local branch, ``None`` without one.
    """

    embeddings: np.ndarray
    probabilities: np.ndarray
    similarities: np.ndarray
    ids: list[str]
    indices: np.ndarray
    labels: np.ndarray
    cluster_maps: np.ndarray | None = None

    @property
    def clusters(self) -> np.ndarray:
        """Hard stratum of each image: its most similar prototype."""
        return self.similarities.argmax(1)

    @property
    def nearest_similarity(self) -> np.ndarray:
        """Cosine similarity to the nearest prototype."""
        return self.similarities.max(1)


def load_model(network: ContrastiveAutoEncoder, ckpt_path: str, device: torch.device | str) -> ContrastiveAutoEncoder:
    """Load a trained model (state dict with prototypes) into ``network``.

    Args:
        network: an untrained network of the same architecture.
        ckpt_path: path of ``model.pt``, or of its TorchScript export ``model.ts`` (``monai.bundle ckpt_export``).
        device: device to move the network to.

    Returns:
        The network, in eval mode.

    Raises:
        FileNotFoundError: when the checkpoint is missing.
        ValueError: when the file is not a monai_cae model (not a PyTorch file, truncated, pickled objects other than
            tensors, no state dict of this network), when it holds no prototypes (training stopped before prototype
            discovery), or when the model was trained with a local branch and ``network`` has none, or the other way
            round.
    """
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(
            f"no trained model at {os.path.abspath(ckpt_path)}: run the training workflow first or pass --ckpt_path."
        )
    not_a_model = f"{ckpt_path} is not a monai_cae model"
    try:
        # on the CPU: a file that cannot be read is then never confused with a device that cannot be used
        if ckpt_path.endswith(".ts"):
            # a TorchScript export keeps no Python properties (num_prototypes, latent_size, ...): its weights go
            # into the eager network, which the report and the sampler use
            state = dict(torch.jit.load(ckpt_path, map_location="cpu").state_dict())
        else:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip, storage and read errors of a cut or foreign file, in many types
        # torch's own messages advise weights_only=False, which would run whatever code the file holds: never shown
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in str(e):
            kind = ("it holds pickled Python objects, not only tensors (a whole saved network or another program's "
                    "file), and only plain weights are loaded")
        else:
            kind = f"it is not a PyTorch file, or it is truncated or damaged ({type(e).__name__})"
        raise ValueError(f"{not_a_model}: {kind}. Use the model.pt that monai_cae training wrote.") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{not_a_model}: it holds a {type(state).__name__}, not a state dict of tensors.")
    if state.keys().isdisjoint(network.state_dict()):
        raise ValueError(f"{not_a_model}: its weights are another network's (none of the names of this one).")
    trained_with_branch = any(key.startswith("local_branch.") for key in state)
    if trained_with_branch != (network.local_branch is not None):
        # the strict load would only list unexpected or missing keys; name the option that differs instead
        raise ValueError(
            f"{ckpt_path} was trained {'with' if trained_with_branch else 'without'} the local pixel-level branch: "
            f"pass --local_branch {trained_with_branch} (and the training's --local_clusters, --local_embedding_dim)."
        )
    network.load_state_dict(state)
    if network.num_prototypes == 0:
        raise ValueError(f"{ckpt_path} holds no prototypes: training ended before prototype discovery.")
    return network.to(device).eval()


def write_assignments(result: StrataAssignment, output_dir: str) -> dict[str, str]:
    """Write ``embeddings.npy`` (N x D float32, dataset order) and ``assignments.csv`` (one row per image), and
    ``cluster_maps.npy`` (``(N, *img_size)`` uint8 pixel clusters, dataset order) when the model has a local branch.

    ``assignments.csv`` columns: ``index``, ``id``, ``label``, ``cluster``, ``prob_0 .. prob_{K-1}`` and
    ``similarity`` (cosine similarity to the nearest prototype).

    Args:
        result: output of :func:`assign_strata`.
        output_dir: destination folder.

    Returns:
        The written paths.
    """
    paths = {"embeddings": os.path.join(output_dir, "embeddings.npy"),
             "assignments": os.path.join(output_dir, "assignments.csv")}
    atomic_write(paths["embeddings"], lambda f: np.save(f, result.embeddings), mode="wb")
    if result.cluster_maps is not None:
        paths["cluster_maps"] = os.path.join(output_dir, "cluster_maps.npy")
        atomic_write(paths["cluster_maps"], lambda f: np.save(f, result.cluster_maps), mode="wb")
    k = result.probabilities.shape[1]

    def write_csv(f) -> None:
        writer = csv.writer(f)
        writer.writerow(["index", "id", "label", "cluster", *[f"prob_{j}" for j in range(k)], "similarity"])
        # the properties compute over every image: once, not once per row
        clusters, similarity = result.clusters, result.nearest_similarity
        for i in range(len(result.ids)):
            writer.writerow(
                [int(result.indices[i]), result.ids[i], int(result.labels[i]), int(clusters[i])]
                + [f"{p:.6f}" for p in result.probabilities[i]]
                + [f"{similarity[i]:.6f}"]
            )

    atomic_write(paths["assignments"], write_csv)
    return paths
