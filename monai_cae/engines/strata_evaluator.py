"""Stratum assignment as a MONAI evaluator: embeddings, soft and hard strata, similarities of a whole loader."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator
from monai.inferers import Inferer, SimpleInferer
from monai.utils import CommonKeys as Keys
from tqdm.auto import tqdm

from monai_cae.data.workers import threads_beside_workers
from monai_cae.networks.nets import ContrastiveAutoEncoder

from monai_cae.inference import StrataAssignment, StrataStore, image_digest

__all__ = ["StrataEvaluator", "assign_strata"]


class _Unsized:
    """A loader seen without its length."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator:
        return iter(self.loader)


class StrataEvaluator(SupervisedEvaluator):
    """Embed every image of a loader with ``inferer(image, network)`` (the latent ``h``) and assign it to the
    network's prototypes; after :meth:`run`, :attr:`assignment` holds the result in loader order.

    Each iteration's ``engine.state.output`` holds the MONAI keys (``image``, ``label``, ``pred`` = ``h``) and
    ``probabilities`` / ``similarities`` (``(B, K)``), so stock MONAI handlers given as ``val_handlers`` see them.
    The epoch ends when the loader does: a :class:`~monai_cae.data.CohortDataLoader` drops batches whose every image
    failed, so its length is only an upper bound, and a loader may yield nothing at all (the assignment then has
    zero rows).

    Args:
        device: device to run on.
        val_data_loader: loader of ``{"image", "index", "id", "label"}`` batches, not shuffled (``index``, ``id`` and
            ``label`` may be missing: ``-1``, ``""`` and ``-1`` are recorded).
        network: trained network with prototypes (:meth:`~ContrastiveAutoEncoder.assign` must work).
        inferer: computes ``h`` from a batch; :class:`monai.inferers.SimpleInferer` (the network's forward) when
            ``None``.
        progress: show a progress bar over the batches.
        store: where each batch's rows go as it is assigned, so that the run's memory does not grow with the
            dataset; :attr:`assignment` then stays empty. ``None`` keeps them in :attr:`assignment`.
        digests: also take :func:`~monai_cae.inference.image_digest` of every model input (pixel-identical copies).
        val_handlers: handlers to attach.
        kwargs: other :class:`monai.engines.SupervisedEvaluator` arguments.
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable,
        network: ContrastiveAutoEncoder,
        inferer: Inferer | None = None,
        progress: bool = True,
        store: StrataStore | None = None,
        digests: bool = False,
        val_handlers: Sequence | None = None,
        **kwargs: Any,
    ) -> None:
        length = len(val_data_loader) if hasattr(val_data_loader, "__len__") else None
        super().__init__(
            device=torch.device(device),
            # without a length, Ignite ends the epoch at the loader's end; with one it restarts a loader that yields
            # fewer batches than its length, embedding its images again
            val_data_loader=_Unsized(val_data_loader),  # type: ignore[arg-type]
            network=network,
            epoch_length=length or 1,
            inferer=SimpleInferer() if inferer is None else inferer,
            val_handlers=val_handlers,
            decollate=False,
            **kwargs,
        )
        self.length, self.progress, self.store, self.digests = length, progress, store, digests
        self.loader_workers = int(getattr(val_data_loader, "num_workers", 0))
        self.assignment = self._collect([])
        self.add_event_handler(Events.EPOCH_STARTED, self._start)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._finish)

    def run(self, global_epoch: int = 1) -> None:
        self.state.epoch_length = None  # found again at the loader's end, which may differ from the last run's
        with threads_beside_workers(self.loader_workers, self.state.device):
            super().run(global_epoch)

    def _start(self, _: Any) -> None:
        self._parts: list[StrataAssignment] = []
        self._bar = tqdm(total=self.length, desc="Assigning strata", disable=not self.progress)

    def _iteration(self, engine: Any, batchdata: dict[str, Any]) -> dict:
        output = super()._iteration(engine, batchdata)
        h = output[Keys.PRED]
        with torch.no_grad():
            output["probabilities"], output["similarities"] = self.network.assign(h)
            maps = None
            if self.network.local_branch is not None:
                # uint8: one byte per pixel keeps a cohort's maps small (at most 255 clusters)
                maps = self.network.cluster_map(output[Keys.IMAGE]).cpu().numpy().astype(np.uint8)
        n = len(h)

        def column(key: str, missing: int) -> np.ndarray:
            return np.asarray(torch.as_tensor(batchdata.get(key, torch.full((n,), missing)))).reshape(-1)

        part = StrataAssignment(
            embeddings=h.float().cpu().numpy(), probabilities=output["probabilities"].float().cpu().numpy(),
            similarities=output["similarities"].float().cpu().numpy(),
            ids=[str(i) for i in batchdata.get("id", [""] * n)], indices=column("index", -1).astype(np.int64),
            labels=column("label", -1).astype(np.int64), cluster_maps=maps,
            digests=[image_digest(image) for image in output[Keys.IMAGE]] if self.digests else None,
        )
        if self.store is not None:
            self.store.append(part)
        else:
            self._parts.append(part)
        self._bar.update()
        return output

    def _finish(self, _: Any) -> None:
        self._bar.close()
        self.assignment = self._collect(self._parts)
        self._parts = []

    def _collect(self, parts: list[StrataAssignment]) -> StrataAssignment:
        k, d = self.network.prototypes.shape
        return StrataAssignment.concatenate(parts, d, k)


def assign_strata(
    network: ContrastiveAutoEncoder,
    data_loader: Iterable[dict],
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> StrataAssignment:
    """Embed a dataset and assign every image to the prototypes (a :class:`StrataEvaluator` run).

    Args:
        network: trained network with prototypes.
        data_loader: loader of ``{"image", "index", "id", "label"}`` batches, not shuffled; it may yield nothing
            (every image of a cohort failed).
        device: device to run on.
        progress: show a progress bar.

    Returns:
        A :class:`StrataAssignment`, with the pixel cluster maps when the network has a local branch, and zero rows
        when the loader yielded nothing.
    """
    evaluator = StrataEvaluator(device, data_loader, network, progress=progress)
    evaluator.run()
    return evaluator.assignment
