"""Evaluate a trained contrastive autoencoder end to end: embed, score, and draw the paper's figures."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from monai.data import DataLoader, Dataset

from monai_cae.inference.embedding import embed_dataset
from monai_cae.inference.sampling import ClusterGaussianSampler
from monai_cae.visualize import plot_cluster_montage, plot_cluster_samples, plot_latent_tsne, plot_reconstructions

from .baselines import prototype_assigner
from .protocol import evaluate_representation, write_results

__all__ = ["embed_splits", "evaluate_model"]


def embed_splits(
    network: torch.nn.Module, datasets: Mapping[str, Dataset], device: str | torch.device = "cpu",
    batch_size: int = 512, progress: bool = True,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Latents, labels and images of every split, in dataset order.

    Args:
        network: trained network with an ``encode`` method.
        datasets: split name to dataset of ``{"image", "label"}`` items.
        device: device to embed on.
        batch_size: batch size.
        progress: show progress bars.

    Returns:
        Split name to ``(features, labels, images)``.
    """
    network.eval()
    return {
        name: embed_dataset(
            network.encode, DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0), device,
            progress=progress, desc=f"Embedding {name}", return_images=True,
        )
        for name, dataset in datasets.items()
    }


def evaluate_model(
    network: torch.nn.Module,
    datasets: Mapping[str, Dataset],
    output_dir: str,
    device: str | torch.device = "cpu",
    labelled_fraction: float = 0.2,
    k_neighbors: int = 5,
    linear_epochs: int = 200,
    seed: int = 0,
    figures: bool = True,
    progress: bool = True,
) -> dict:
    """Score a trained model with the published protocol and write results and figures.

    The clusters are the model's own strata (nearest prototype by cosine similarity), the soft assignment gives the
    stat approach its AUC. Writes ``results.json`` / ``results.md`` and, with ``figures``, ``tsne_<split>.png``
    (Ferrante et al. 2022, Fig. 3/4), ``reconstructions.png``, ``cluster_montage.png`` and ``cluster_samples.png``.

    Args:
        network: trained :class:`~monai_cae.networks.nets.ContrastiveAutoEncoder` with prototypes.
        datasets: must hold ``"train"`` plus the splits to score (e.g. ``"val"``, ``"test"``).
        output_dir: destination folder.
        device: device to run on.
        labelled_fraction: share of training labels for stat and linear.
        k_neighbors: ``k`` of the kNN approach.
        linear_epochs: epochs of the linear probe.
        seed: seed of the labelled subset, the probe and the figures.
        figures: draw the figures.
        progress: show progress bars.

    Returns:
        The results of :func:`evaluate_representation`.

    Raises:
        ValueError: without a ``"train"`` split or without prototypes.
    """
    if "train" not in datasets:
        raise ValueError(f"datasets must include 'train', got {sorted(datasets)}.")
    if network.num_prototypes == 0:
        raise ValueError("the network has no prototypes: evaluate a model trained past prototype discovery.")
    splits = embed_splits(network, datasets, device, progress=progress)
    assign = prototype_assigner(network)

    train_features, train_labels, _ = splits["train"]
    eval_sets = {name: (f, l) for name, (f, l, _) in splits.items() if name != "train"}
    results = evaluate_representation(
        train_features, train_labels, eval_sets, assign, network.num_prototypes, k_neighbors, labelled_fraction,
        linear_epochs, seed=seed,
    )
    write_results(results, output_dir)
    if figures:
        _draw_figures(network, splits, assign, results, output_dir, device, seed)
    return results


@torch.no_grad()
def _draw_figures(network, splits, assign, results, output_dir, device, seed) -> None:
    mapping = np.asarray(results["_meta"]["cluster_to_label"])
    k = network.num_prototypes
    prototypes = network.prototypes.detach()
    one_hot = torch.eye(k, device=device)
    prototype_images = network.decode_conditional(prototypes, one_hot).clamp(0, 1).cpu().numpy()
    for name, (features, labels, images) in splits.items():
        if name == "train":
            continue
        clusters, _ = assign(features)
        plot_latent_tsne(
            features, labels, clusters, mapping[clusters], os.path.join(output_dir, f"tsne_{name}.png"),
            prototypes=prototypes.cpu().numpy(), prototype_images=prototype_images, seed=seed,
        )
    name = "test" if "test" in splits else next(n for n in splits if n != "train")
    features, _, images = splits[name]
    clusters, _ = assign(features)
    reconstructions = network.decode_conditional(torch.from_numpy(features[:8]).to(device)).clamp(0, 1).cpu().numpy()
    plot_reconstructions(images[:8], reconstructions, os.path.join(output_dir, "reconstructions.png"))
    plot_cluster_montage(images, clusters, os.path.join(output_dir, "cluster_montage.png"), seed=seed)
    train_features = splits["train"][0]
    train_clusters, _ = assign(train_features)
    sampler = ClusterGaussianSampler().fit(train_features, train_clusters)
    samples = {}
    for cluster in sorted(sampler.means):
        h = sampler.sample(cluster, 8, seed=seed).to(device)
        assignment = one_hot[cluster].expand(len(h), k)
        samples[cluster] = network.decode_conditional(h, assignment).clamp(0, 1).cpu().numpy()
    plot_cluster_samples(samples, os.path.join(output_dir, "cluster_samples.png"))
