"""The comparison baselines of Ferrante et al. 2022 (Table 1), scored by the same protocol as the CAE.

Table 1 of the paper compares the contrastive autoencoder with two baselines: a supervised ResNet-18 (transfer
learning from ImageNet with everything before the average pooling frozen) and "feature extraction + KMeans" (the last
feature layer of that ResNet-18, clustered with the elbow method and mapped to labels). This module adds a third,
label-free sanity floor: KMeans on a PCA of the raw pixels. Every representation is turned into an
:data:`~monai_cae.evaluation.protocol.Assigner` (:func:`kmeans_assigner` for KMeans, :func:`prototype_assigner` for
the CAE's own prototypes) so that all rows of the table go through
:func:`~monai_cae.evaluation.protocol.evaluate_representation` identically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet18
from sklearn.decomposition import PCA
from torch import nn
from tqdm.auto import tqdm

from monai_cae.clustering import ClusteringResult, ElbowResult
from monai_cae.inference.embedding import embed_dataset

from .protocol import Assigner

__all__ = [
    "kmeans_assigner",
    "pca_features",
    "prototype_assigner",
    "resnet_features",
    "resnet_predict",
    "train_supervised_resnet18",
]

FROM_SCRATCH_LR = 1e-3
"""Adam learning rate of the ResNet-18 trained from scratch."""
TRANSFER_LR = 1e-4
"""Adam learning rate of the transfer-learning variant, as published (Ferrante et al. 2022, Sec. 3)."""


def pca_features(train: np.ndarray, *others: np.ndarray, n_components: int = 32, seed: int = 0) -> list[np.ndarray]:
    """Raw pixels projected on their principal components: the label-free sanity floor of the comparison.

    Any representation learned by the CAE should beat KMeans on a linear projection of the pixels; this baseline is
    not in Ferrante et al. 2022 but makes the gain of the learned latent space measurable. PCA is fitted on the
    training images only, so that no evaluation split leaks into the representation.

    Args:
        train: ``(N, ...)`` training images, e.g. ``(N, C, H, W)``; everything after the first axis is flattened.
        *others: further image sets (validation, test) with the same per-image shape, transformed by the same fit.
        n_components: number of principal components, at most ``min(N, number of pixels)``.
        seed: random state of PCA (used by its randomized SVD solver on large inputs).

    Returns:
        ``[train_features, *other_features]``, each ``(n, n_components)`` float32.

    Raises:
        ValueError: when an array has fewer than two dimensions, a per-image shape differs from the training one, or
            ``n_components`` is not in ``[1, min(N, number of pixels)]``.
    """
    arrays = [np.asarray(train)] + [np.asarray(o) for o in others]
    for index, array in enumerate(arrays):
        if array.ndim < 2:
            raise ValueError(f"image set {index} must be (N, ...) with at least 2 dimensions, got shape {array.shape}.")
        if array.shape[1:] != arrays[0].shape[1:]:
            raise ValueError(
                f"image set {index} has per-image shape {array.shape[1:]}, the training set {arrays[0].shape[1:]}."
            )
    flat = [a.reshape(len(a), -1).astype(np.float32) for a in arrays]
    limit = min(flat[0].shape)
    if not 1 <= n_components <= limit:
        raise ValueError(
            f"n_components must be in [1, min(N, pixels)] = [1, {limit}] for training data {flat[0].shape}, "
            f"got {n_components}."
        )
    pca = PCA(n_components=n_components, random_state=seed).fit(flat[0])
    return [pca.transform(f).astype(np.float32) for f in flat]


def _check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"{name} must be (N, 1, H, W), got shape {tuple(images.shape)}.")
    return images.float()


def _read_state_dict(weights_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from disk, also when wrapped as ``{"state_dict": ...}`` (as checkpoints often are)."""
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{weights_path} must hold a state dict, got {type(state).__name__}.")
    return dict(state)


def _load_backbone_weights(model: nn.Module, state: dict[str, torch.Tensor], weights_path: str | os.PathLike) -> None:
    """Copy a ResNet-18 state dict into ``model``, adapting a 3-channel first convolution to 1 channel.

    The classification layer ``fc`` is skipped when its shape differs (ImageNet has 1000 classes): it is the layer
    that is retrained, as in the paper.
    """
    own = model.state_dict()
    state = dict(state)
    conv = state.get("conv1.weight")
    target = own["conv1.weight"]
    if conv is not None and conv.shape != target.shape:
        if conv.shape[0] == target.shape[0] and conv.shape[2:] == target.shape[2:] and conv.shape[1] == 3:
            # ImageNet weights see RGB; a grey image is R = G = B, and a conv applied to three equal channels equals a
            # one-channel conv with the channel-summed kernel. The mean (sum / 3) keeps the activation scale of an
            # image in [0, 1] close to that of one RGB channel, which the pretrained batch norms expect.
            state["conv1.weight"] = conv.mean(dim=1, keepdim=True)
        else:
            raise ValueError(
                f"the first convolution of {weights_path} has shape {tuple(conv.shape)}, which cannot be adapted to "
                f"{tuple(target.shape)} (only a 3-channel conv with the same kernel is averaged to 1 channel)."
            )
    for key in [k for k in state if k.startswith("fc.") and k in own and state[k].shape != own[k].shape]:
        del state[key]
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if mismatched:
        raise ValueError(
            f"{weights_path} does not fit a 2D ResNet-18: shape mismatch for {mismatched[:5]}"
            f"{' ...' if len(mismatched) > 5 else ''}."
        )
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("fc.")]
    if missing:
        raise ValueError(
            f"{weights_path} lacks {len(missing)} backbone entries of a 2D ResNet-18, e.g. {missing[:5]}; "
            f"is it a ResNet-18 state dict?"
        )


def _freeze_backbone(model: nn.Module) -> None:
    """Freeze every parameter but those of ``fc``: "all parameters before the avgpool layer" (the pooling has none)."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.startswith("fc.")


def _set_train_mode(model: nn.Module, frozen_backbone: bool) -> None:
    model.train()
    if frozen_backbone:
        # a frozen backbone is a fixed feature extractor: keep its batch-norm running statistics too, otherwise the
        # features would still drift with the training data although no weight is updated
        for name, module in model.named_children():
            if name != "fc":
                module.eval()


@torch.no_grad()
def _recalibrate_batch_norm(
    model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device | str
) -> None:
    """Re-estimate every batch-norm running statistic on ``images`` with the final weights ("precise BN").

    The exponential moving average of the running statistics lags behind the weights; over short schedules (a few
    hundred steps or fewer) the eval-mode network can then be far worse than the train-mode one. A cumulative average
    over one pass of the training data with the final weights removes the lag.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: cumulative moving average, i.e. the plain mean over the batches of the pass
    model.train()
    try:
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size].to(device))
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum


def train_supervised_resnet18(
    images: torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    weights_path: str | os.PathLike | None = None,
    progress: bool = True,
    num_classes: int | None = None,
) -> nn.Module:
    """Train the supervised ResNet-18 baseline of Ferrante et al. 2022 (Table 1, "Resnet18").

    The network is MONAI's ``resnet18(spatial_dims=2, n_input_channels=1, num_classes=C)``, optimised with Adam on
    the cross-entropy. Two variants:

    - **from scratch** (``weights_path=None``): every layer is trained, default learning rate ``1e-3``. This is the
      variant available offline, where ImageNet weights cannot be downloaded. After the last epoch the batch-norm
      running statistics are re-estimated over the training images with the final weights, because their moving
      average lags behind the weights on short schedules and the eval-mode network would otherwise underperform.
    - **transfer learning** (``weights_path`` given): the paper's setting, "a ResNet-18 architecture pretrained on
      ImageNet [...] trained while freezing all parameters before the avgpool layer (number of epochs: 100, Adam
      optimizer, learning rate=1e-4)" (Sec. 3). The local state dict is loaded first (``strict=False``: a 1000-class ``fc`` is skipped and re-initialised for ``C``
      classes); a 3-channel first convolution (ImageNet) is averaged over its input channels into a 1-channel one,
      the standard trick for grey images; then every parameter but ``fc`` is frozen and the backbone's batch norms
      are kept in eval mode. A torchvision checkpoint has no bias on the shortcut convolutions, so the network is
      built with ``bias_downsample=False`` when the state dict has none. Note that MONAI's ResNet keeps full
      resolution in its first convolution (stride 1, suited to 28 x 28 images), unlike torchvision's (stride 2).

    Training is deterministic for a seed on CPU: the initialisation and the batch order come from ``seed`` through a
    forked random state, so the caller's global random state is left untouched.

    Args:
        images: ``(N, 1, H, W)`` float images.
        labels: ``(N,)`` integer class labels in ``[0, C)``.
        epochs: passes over the data (the paper trained 100).
        batch_size: mini-batch size.
        lr: Adam learning rate; ``None`` picks ``1e-3`` from scratch and the published ``1e-4`` for transfer.
        seed: seed of the initialisation and the shuffling.
        device: training device.
        weights_path: optional local ResNet-18 state dict for the transfer-learning variant.
        progress: show a progress bar over epochs.
        num_classes: number of classes ``C``; defaults to ``max(labels) + 1``.

    Returns:
        The trained network, in eval mode, on ``device``.

    Raises:
        ValueError: for images that are not ``(N, 1, H, W)``, labels of another length or outside ``[0, C)``, fewer
            than two classes, a non-positive ``epochs``, ``batch_size`` or ``lr``, or weights that do not fit.
    """
    images = _check_images(images)
    labels = torch.as_tensor(np.asarray(labels)).reshape(-1).long()
    if len(labels) != len(images):
        raise ValueError(f"labels must hold one label per image ({len(images)}), got {len(labels)}.")
    if len(labels) == 0:
        raise ValueError("images must hold at least one image, got 0.")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if num_classes < 2 or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in [0, num_classes) with num_classes >= 2, got range [{int(labels.min())}, "
            f"{int(labels.max())}] and num_classes={num_classes}."
        )
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}.")
    transfer = weights_path is not None
    lr = (TRANSFER_LR if transfer else FROM_SCRATCH_LR) if lr is None else float(lr)
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}.")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = _read_state_dict(weights_path) if transfer else None
        # MONAI's shortcut convolutions have a bias, torchvision's (ImageNet weights) have none: follow the weights
        bias_downsample = state is None or any(k.endswith("downsample.0.bias") for k in state)
        model = resnet18(spatial_dims=2, n_input_channels=1, num_classes=num_classes, bias_downsample=bias_downsample)
        if state is not None:
            _load_backbone_weights(model, state, weights_path)
            _freeze_backbone(model)
        # a dedicated generator: the batch order depends on the seed only, not on what else draws random numbers
        generator = torch.Generator().manual_seed(seed)

    model = model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    bar = tqdm(range(epochs), desc="ResNet-18 epochs", disable=not progress)
    for _ in bar:
        _set_train_mode(model, transfer)
        order = torch.randperm(len(images), generator=generator)
        total, seen = 0.0, 0
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2 and len(order) > 1:
                # batch norm cannot train on a single sample; dropping a trailing singleton loses nothing in expectation
                continue
            x, y = images[index].to(device), labels[index].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        bar.set_postfix(loss=f"{total / max(seen, 1):.4f}")
    if not transfer:
        _recalibrate_batch_norm(model, images, batch_size, device)
    return model.eval()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the duration of the block, restoring each module's previous mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


def _device_of(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def resnet_features(
    model: nn.Module, images: torch.Tensor, batch_size: int = 512, device: torch.device | str | None = None
) -> np.ndarray:
    """Penultimate features of a ResNet: the pooled 512-d input of ``fc`` ("feature extraction + KMeans" baseline).

    Ferrante et al. 2022 "extracted features from the last layer of ResNet18 and performed a KMeans search for optimal
    number of clusters". The features are captured with a forward pre-hook on ``fc`` that is removed afterwards, so
    the caller's model keeps its layers, and its train/eval modes are restored.

    Args:
        model: a MONAI ResNet (``fc`` may be ``None``, in which case the output already is the pooled feature).
        images: ``(N, 1, H, W)`` images.
        batch_size: inference batch size.
        device: device to run on; defaults to the model's. The model must already be on it.

    Returns:
        ``(N, F)`` float32 features (``F = 512`` for ResNet-18).

    Raises:
        ValueError: for images that are not ``(N, 1, H, W)`` or a non-positive ``batch_size``.
    """
    images = _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    device = _device_of(model, device)
    fc = getattr(model, "fc", None)
    pooled: list[torch.Tensor] = []

    def encode(batch: torch.Tensor) -> torch.Tensor:
        output = model(batch)
        # with ``fc``, the feature is its input, which the pre-hook saw during this forward pass
        return (output if fc is None else pooled.pop()).flatten(1)

    handle = None if fc is None else fc.register_forward_pre_hook(lambda _module, args: pooled.append(args[0]))
    batches = ({"image": images[start : start + batch_size]} for start in range(0, len(images), batch_size))
    try:
        with _eval_mode(model):
            features, _ = embed_dataset(encode, batches, device, label_key=None, progress=False)
    finally:
        if handle is not None:
            handle.remove()
    return features


@torch.no_grad()
def resnet_predict(
    model: nn.Module, images: torch.Tensor, batch_size: int = 512, device: torch.device | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class predictions of the supervised baseline (Ferrante et al. 2022, Table 1, "Resnet18" row).

    Args:
        model: a trained classifier such as the output of :func:`train_supervised_resnet18`.
        images: ``(N, 1, H, W)`` images.
        batch_size: inference batch size.
        device: device to run on; defaults to the model's.

    Returns:
        ``(predictions, probabilities)``: ``(N,)`` int64 classes and ``(N, C)`` float32 softmax probabilities.

    Raises:
        ValueError: for images that are not ``(N, 1, H, W)`` or a non-positive ``batch_size``.
    """
    images = _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    device = _device_of(model, device)
    chunks = []
    with _eval_mode(model):
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size].to(device)).float()
            chunks.append(torch.softmax(logits, dim=1).cpu())
    probabilities = torch.cat(chunks).numpy()
    return probabilities.argmax(1).astype(np.int64), probabilities


def kmeans_assigner(result: ElbowResult | ClusteringResult) -> Assigner:
    """A fitted clustering as an :data:`Assigner` for ``evaluate_representation``.

    Used for the "feature extraction + KMeans" row of Ferrante et al. 2022 (Table 1) and for the PCA floor: KMeans
    with the elbow method, applied with the same normalisation as its fit. It serves any clusterer of
    :func:`~monai_cae.clustering.cluster_latent` as well, whose ``predict`` is the nearest cosine prototype.

    Args:
        result: the output of :func:`~monai_cae.clustering.elbow.elbow_kmeans` or of
            :func:`~monai_cae.clustering.cluster_latent`.

    Returns:
        A function from ``(N, D)`` features to ``(clusters, None)``: KMeans has no soft assignment, so the stat
        approach gets no probability scores.
    """

    def assign(features: np.ndarray) -> tuple[np.ndarray, None]:
        return np.asarray(result.predict(features), dtype=np.int64), None

    return assign


def prototype_assigner(network: Any) -> Assigner:
    """The CAE's own clustering: cosine assignment of latents to its prototypes (Ferrante et al. 2022, Sec. 2).

    Args:
        network: a :class:`~monai_cae.networks.nets.ContrastiveAutoEncoder` (or anything with ``assign(h)`` returning
            ``(probabilities, similarities)``) whose prototypes are set.

    Returns:
        A function from ``(N, D)`` latents to ``(clusters, probabilities)``, the cluster being the most similar
        prototype and the probabilities the temperature-scaled softmax the conditional decoder uses.
    """

    @torch.no_grad()
    def assign(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        prototypes = getattr(network, "prototypes", None)
        if isinstance(prototypes, torch.Tensor):
            # the latents come from numpy on the CPU; compare them where the prototypes live
            h = h.to(device=prototypes.device, dtype=prototypes.dtype)
        probabilities, similarities = network.assign(h)
        return similarities.argmax(1).cpu().numpy().astype(np.int64), probabilities.float().cpu().numpy()

    return assign
