"""Forward + backward throughput of the default contrastive autoencoder (augmented pairs per second).

Times one phase-1 training step (two views through encoder, projector and decoder, CAE loss, backward, LARS step)
on a fixed batch, so it measures the network alone; the bundle's whole loop is benchmarked separately.

    python benchmarks/network_throughput.py --batch-size 256 --img-size 28 --repeats 20
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from monai_cae.losses import CAELoss
from monai_cae.networks.nets import ContrastiveAutoEncoder
from monai_cae.optimizers import LARS, lars_param_groups

from common import environment, save_json


def measure(batch_size: int, img_size: int, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    network = ContrastiveAutoEncoder(img_size=img_size).to(device)
    loss = CAELoss()
    optimizer = LARS(lars_param_groups(network, 1e-6), lr=0.25)
    view1 = torch.rand(batch_size, 1, img_size, img_size, device=device)
    view2 = torch.rand(batch_size, 1, img_size, img_size, device=device)

    def step() -> None:
        _, z1, y1 = network(view1)
        _, z2, y2 = network(view2)
        optimizer.zero_grad(set_to_none=True)
        loss(z1, z2, view1, y1, view2, y2)["total"].backward()
        optimizer.step()

    for _ in range(3):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "pairs_per_second": batch_size * repeats / seconds,
        "seconds_per_step": seconds / repeats,
        "batch_size": batch_size,
        "img_size": img_size,
        "device": device,
        **environment(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--img-size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", default="benchmarks/results/network_throughput.json")
    args = parser.parse_args()
    result = measure(args.batch_size, args.img_size, args.repeats, args.device)
    print(json.dumps(result, indent=2))
    save_json(result, args.output)


if __name__ == "__main__":
    main()
