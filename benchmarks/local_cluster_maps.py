"""Demonstration of the local discriminative branch on real chest X-rays: train the contrastive autoencoder with the
branch (phase 1, no labels) on PneumoniaMNIST and draw the pixel cluster maps of test images over them.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/local_cluster_maps.py --epochs 10 --output docs/figures
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from monai_cae.data import MedMNISTDataset
from monai_cae.engines import CAETrainer
from monai_cae.losses import CAELoss, LocalDiscriminationLoss
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.transforms import BatchPositivePair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", default=os.path.join("..", "shared", "data", "medmnist"))
    parser.add_argument("--output", default=os.path.join("docs", "figures"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--clusters", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--num_images", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(args.seed)
    train = MedMNISTDataset("pneumoniamnist", "train", args.dataset_dir)
    test = MedMNISTDataset("pneumoniamnist", "test", args.dataset_dir)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True)
    network = ContrastiveAutoEncoder(local_branch=True, local_clusters=args.clusters)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-6)
    trainer = CAETrainer(
        "cpu", args.epochs, loader, network, optimizer, CAELoss(alpha=1.0), BatchPositivePair(seed=args.seed),
        warmup_epochs=args.epochs, local_loss=LocalDiscriminationLoss(),
    )
    start = time.time()
    trainer.run()
    seconds = time.time() - start

    images = test.images[: args.num_images]
    labels = test.labels[: args.num_images].reshape(-1)
    network.eval()
    with torch.no_grad():
        maps = network.cluster_map(images).numpy()
        all_maps = network.cluster_map(test.images).numpy()
    colours = np.asarray(matplotlib.colormaps["tab10"].colors)
    columns = 8
    rows = 2 * int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.4, rows * 1.5), dpi=110)
    for i, (image, cluster_map) in enumerate(zip(images, maps)):
        r, c = 2 * (i // columns), i % columns
        grey = image[0].numpy()
        axes[r, c].imshow(grey, cmap="gray", vmin=0, vmax=1)
        axes[r, c].set_title("pneumonia" if int(labels[i]) else "normal", fontsize=7)
        axes[r + 1, c].imshow(np.clip(0.55 * grey[..., None].repeat(3, 2) + 0.45 * colours[cluster_map % 10], 0, 1))
    for axis in axes.flat:
        axis.axis("off")
    figure.suptitle(f"Pixel clusters of the local branch (K={args.clusters}), PneumoniaMNIST test images", fontsize=9)
    figure.tight_layout()
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "local_cluster_maps.png")
    figure.savefig(path)
    plt.close(figure)

    # where each cluster lies on average: a map of the share of test images whose pixel is in cluster k
    frequency = np.stack([(all_maps == k).mean(0) for k in range(args.clusters)])
    figure, axes = plt.subplots(1, args.clusters + 1, figsize=(1.6 * (args.clusters + 1), 1.9), dpi=110)
    axes[0].imshow(test.images.mean(0)[0].numpy(), cmap="gray")
    axes[0].set_title("mean image", fontsize=7)
    for k in range(args.clusters):
        axes[k + 1].imshow(frequency[k], cmap="magma", vmin=0, vmax=1)
        axes[k + 1].set_title(f"cluster {k}: {(all_maps == k).mean():.0%}", fontsize=7, color=colours[k % 10])
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    frequency_path = os.path.join(args.output, "local_cluster_frequency.png")
    figure.savefig(frequency_path)
    plt.close(figure)
    summary = {"epochs": args.epochs, "train_seconds": round(seconds, 1), "clusters": args.clusters,
               "pixel_share": [float((all_maps == k).mean()) for k in range(args.clusters)],
               "last_losses": {k: trainer.state.output[k] for k in ("loss", "contrastive", "reconstruction", "local")},
               "figures": [path, frequency_path]}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
