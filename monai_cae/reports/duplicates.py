"""Pixel-identical copies of one film: a digest of every model input, taken while the cohort streams."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np
import torch

__all__ = ["DigestingLoader", "image_digest"]


def image_digest(image: np.ndarray | torch.Tensor) -> str:
    """A 128-bit BLAKE2b digest of an image's values, shape and type: equal exactly for identical model inputs."""
    array = np.ascontiguousarray(torch.as_tensor(image).detach().cpu().numpy())
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


class DigestingLoader:
    """Pass a loader's batches through unchanged, recording :func:`image_digest` of each image by dataset index.

    Hashing the preprocessed input costs far less than decoding it, and needs no second pass over the archive: wrap
    the loader given to :func:`~monai_cae.reports.assign_cohort`, then pass :attr:`digests` to
    :func:`~monai_cae.reports.write_report` as ``image_digests``.

    Args:
        loader: batches of ``{"image", "index", ...}``, e.g. a :class:`~monai_cae.data.CohortDataLoader`.
    """

    def __init__(self, loader: Iterable[dict]) -> None:
        self.loader = loader
        self.digests: dict[int, str] = {}

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            indices = torch.as_tensor(batch["index"]).reshape(-1).tolist()
            for index, image in zip(indices, batch["image"]):
                self.digests[int(index)] = image_digest(image)
            yield batch

    def __len__(self) -> int:
        return len(self.loader)
