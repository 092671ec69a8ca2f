"""Pixel-identical copies of one film: a digest of every model input, taken while the cohort streams."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from monai_cae.inference import image_digest

__all__ = ["DigestingLoader", "image_digest"]


class DigestingLoader:
    """Pass a loader's batches through unchanged, recording :func:`image_digest` of each image by dataset index.

    Hashing the preprocessed input costs far less than decoding it, and needs no second pass over the archive: wrap
    a loader given to :func:`~monai_cae.engines.assign_strata`, then pass :attr:`digests` to
    :func:`~monai_cae.reports.write_report` as ``image_digests`` (the report pipeline takes them in its
    :class:`~monai_cae.engines.StrataEvaluator` instead, ``digests=True``).

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
