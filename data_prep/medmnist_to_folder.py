"""Write MedMNIST / MNIST splits as PNG folders, the layout the image-folder preset reads.

    python data_prep/medmnist_to_folder.py --dataset pneumoniamnist --root ../shared/data/medmnist --output data/cxr_png

gives ``<output>/<split>/<class index>/<index>.png`` for the train, val and test splits, so the generic
``bundles/cae/configs/image_folder.json`` preset (``--dataset_dir <output>``) can be tried on known data.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from monai_cae.data import make_dataset

SPLITS = ("train", "val", "test")


def export(dataset: str, root: str, output: str, splits: tuple[str, ...] = SPLITS, limit: int | None = None) -> int:
    """Write the splits as PNG files and return how many were written.

    Args:
        dataset: ``"mnist"`` or a MedMNIST flag.
        root: folder with the source files.
        output: destination folder.
        splits: splits to export.
        limit: optional cap on images per split.

    Returns:
        Number of files written.
    """
    written = 0
    for split in splits:
        data = make_dataset(dataset, split, root)
        count = len(data) if limit is None else min(limit, len(data))
        for i in tqdm(range(count), desc=f"{dataset} {split}"):
            item = data[i]
            folder = os.path.join(output, split, str(int(item["label"])))
            os.makedirs(folder, exist_ok=True)
            pixels = (np.asarray(item["image"])[0] * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{int(item['index']):05d}.png"))
            written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--root", default="../shared/data/medmnist")
    parser.add_argument("--output", required=True)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    args = parser.parse_args()
    print(f"wrote {export(args.dataset, args.root, args.output, tuple(args.splits), args.limit)} images to {args.output}")


if __name__ == "__main__":
    main()
