"""Loading a trained model for inference."""

from __future__ import annotations

import os
import pickle

import torch

from monai_cae.networks.nets import ContrastiveAutoEncoder

__all__ = ["load_model"]


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
