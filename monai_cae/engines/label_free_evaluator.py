"""Validation without labels: held-out loss, alignment, uniformity and strata stability, as a MONAI evaluator."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Events
from ignite.metrics import Metric
from monai.engines import Evaluator
from monai.utils import CommonKeys as Keys
from sklearn.metrics import adjusted_rand_score
from torch import nn

from monai_cae.networks.nets import ContrastiveAutoEncoder

__all__ = ["LabelFreeEvaluator"]

# the temperature t of Wang & Isola's uniformity, log E exp(-t ||u - v||^2); t = 2 is the value of their paper
_UNIFORMITY_T: float = 2.0
# the key of the iteration output that holds the per-batch quantities the metrics accumulate
_METRIC_INPUTS: str = "label_free"


def _lower_is_better(current: float, previous: float) -> bool:
    """MONAI's ``metric_cmp_fn`` for a loss: the current value is a new best when it is lower."""
    return current < previous


class _WeightedMean(Metric):
    """Weighted mean of per-batch values: ``sum(value * weight) / sum(weight)``, NaN when no weight was seen.

    The output transform yields ``(value, weight)`` floats; a batch with weight 0 contributes nothing (its value may
    be NaN).
    """

    def __init__(self, output_transform: Callable) -> None:
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._total = 0.0
        self._weight = 0.0

    def update(self, output: Sequence[float]) -> None:
        value, weight = output
        if weight > 0:
            self._total += float(value) * float(weight)
            self._weight += float(weight)

    def compute(self) -> float:
        return self._total / self._weight if self._weight > 0 else math.nan


class _Uniformity(Metric):
    """Wang & Isola's uniformity, pooled over the within-batch pairs of the whole validation set.

    The output transform yields ``(sum_view1, sum_view2, pairs)``: the sums of ``exp(-t ||u_i - u_j||^2)`` over the
    distinct pairs ``i < j`` of each view's normalised projections in one batch, and the number of such pairs.
    """

    def __init__(self, output_transform: Callable) -> None:
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._sums = [0.0, 0.0]
        self._pairs = 0

    def update(self, output: Sequence[float]) -> None:
        sum1, sum2, pairs = output
        self._sums[0] += float(sum1)
        self._sums[1] += float(sum2)
        self._pairs += int(pairs)

    def compute(self) -> float:
        if self._pairs == 0:
            return math.nan
        return sum(math.log(s / self._pairs) for s in self._sums) / 2.0


class _StrataStability(Metric):
    """Adjusted Rand index between this validation's hard strata and those of the previous validation with strata.

    The output transform yields ``(indices, strata)`` int64 CPU tensors for one batch, or ``None`` when the network
    has no prototypes. Images are matched by index across validations; the first occurrence of a repeated index
    counts. :meth:`compute` is idempotent within one run: it compares and shifts the current strata into
    :attr:`previous` only once.
    """

    def __init__(self, output_transform: Callable) -> None:
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._indices: list[torch.Tensor] = []
        self._strata: list[torch.Tensor] = []
        self._result: float | None = None

    def update(self, output: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        if output is not None:
            self._indices.append(output[0])
            self._strata.append(output[1])

    def compute(self) -> float:
        if self._result is not None:
            return self._result
        self._result = math.nan
        if not self._strata:  # no prototypes during this run: nothing to compare, and the last strata stay
            return self._result
        indices, first = np.unique(torch.cat(self._indices).numpy(), return_index=True)
        current = (torch.from_numpy(indices), torch.cat(self._strata)[torch.from_numpy(first)])
        if self.previous is not None:
            previous_indices, previous_strata = (t.numpy() for t in self.previous)
            _, now, before = np.intersect1d(indices, previous_indices, assume_unique=True, return_indices=True)
            if len(now) < len(indices) or len(before) < len(previous_indices):
                warnings.warn(
                    f"strata_stability: {len(indices)} images now, {len(previous_indices)} at the previous validation, "
                    f"{len(now)} in common; only those are compared.",
                    stacklevel=2,
                )
            if len(now) >= 2:
                self._result = float(adjusted_rand_score(previous_strata[before], current[1].numpy()[now]))
        self.previous = current
        return self._result


class LabelFreeEvaluator(Evaluator):
    """Validation of a contrastive autoencoder on an unlabelled split: held-out loss, representation quality and
    stability of the strata, with no labels read at all (``label`` may be -1 or absent).

    Every batch is turned into two views by a private copy of the training augmentation; with the network in eval
    mode and without gradients, ``h = encode(view)``, ``z = project(h)`` and ``y = decode(h)``. Over the validation
    set, :attr:`engine.state.metrics` then holds:

    - ``val_loss``, ``val_contrastive``, ``val_reconstruction``: the ``CAELoss`` parts (``total``, ``contrastive``,
      ``reconstruction``) on the views, averaged over batches weighted by batch size. NT-Xent depends on the batch
      size (the number of negatives), so compare values from the same loader only; batches of one image have no
      negatives and are left out of these three. The decoder is the warm-up one (``decode``), so in phase 2, when
      encoder, projector and decoder are frozen, these stay constant.
    - ``alignment``: ``E ||u1 - u2||^2`` over all images, ``u = z / ||z||`` (Wang & Isola 2020, "Understanding
      contrastive representation learning through alignment and uniformity on the hypersphere", Eq. 4, alpha = 2);
      0 for identical views, 4 at most. Lower is better.
    - ``uniformity``: ``log E exp(-2 ||u_i - u_j||^2)`` over distinct pairs ``i != j`` within one view (Wang & Isola
      2020, Eq. 5, t = 2), the mean of the two views' values as in their reference code. Pairs come from within
      batches (across batches would cost a full similarity matrix); the expectation pools all within-batch pairs of
      the validation set, so every pair weighs the same and the log is taken once, at the end. In ``[-4, 0]``, lower
      is more uniform. Without any pair (all batches of one image), NaN.
    - ``strata_stability`` (needs prototypes, ``network.num_prototypes > 0`` and not all zero): every image's hard
      stratum, the argmax of the cosine similarities of ``encode(image)`` (the un-augmented image) to the
      prototypes, is kept; from the second validation with prototypes on, this is the adjusted Rand index between
      the current and the previous validation's strata (1 for the same partition, whatever the stratum numbering;
      about 0 for unrelated ones). Images are matched by ``index_key`` when the batches hold it (so a shuffled loader
      works), else by position in the loader. NaN before a previous assignment exists and in runs without
      prototypes (those keep the last assignment). The previous assignment is part of :meth:`state_dict`, so add the
      evaluator to the checkpointed objects to keep the metric continuous over a resume.

    The key metric is ``val_loss``, compared with "lower is better" so that MONAI's ``best_metric`` and
    checkpoint-by-key-metric handlers keep the lowest loss. The iteration output also holds ``image``, the first
    ``view`` and its reconstruction ``pred`` for image handlers.

    Randomness: the views are made by a deep copy of ``pair_augmentation`` taken at construction, reseeded with
    ``seed`` (when it has ``set_random_state``, as :class:`~monai_cae.transforms.BatchPositivePair` does) and copied
    afresh at the start of every run. Every validation thus sees the same views for the same images, so changes of
    the metrics come from the network, and the training augmentation's generator is never drawn from, so a run with
    validation augments its training batches exactly like one without. A copy is chosen over saving and restoring
    the training generator's state because it works for any deep-copyable callable, whatever generators it holds.
    An augmentation drawing from torch's global generator still draws from it; ``BatchPositivePair`` does not.

    Likewise the loss is a deep copy of ``loss_function`` in eval mode, with any NT-Xent queue emptied and
    distributed gathering switched off: the training queue's negatives would make ``val_loss`` depend on recent
    training batches, validation must not enqueue its projections into the training queue, and the evaluator runs on
    each process by itself.

    Args:
        device: device to compute on.
        val_data_loader: loader of dictionary batches holding ``image_key`` (labels are not read).
        network: the contrastive autoencoder being trained.
        loss_function: the trainer's loss, a :class:`~monai_cae.losses.CAELoss` or any module called as
            ``loss(z1, z2, x1, y1, x2, y2)`` that returns ``{"contrastive", "reconstruction", "total"}``.
        pair_augmentation: callable from an image batch to its two views, e.g.
            :class:`~monai_cae.transforms.BatchPositivePair`; it is copied, never called.
        image_key: key of the images in a batch.
        val_handlers: handlers to attach (e.g. ``StatsHandler``, ``TensorBoardStatsHandler``).
        seed: seed of the validation augmentation, non-negative.
        index_key: key of the images' dataset indices in a batch, used to match images across validations for
            ``strata_stability`` when present; ``None`` always matches by position.
        epoch_length: iterations per validation; the loader's length when omitted.
        non_blocking: non-blocking host-to-device copies.

    Raises:
        ValueError: for a negative or non-integer ``seed``.
        TypeError: when ``pair_augmentation`` or ``loss_function`` is not callable.
    """

    def __init__(
        self,
        device: str | torch.device,
        val_data_loader: Iterable,
        network: ContrastiveAutoEncoder,
        loss_function: Callable[..., Mapping[str, torch.Tensor]],
        pair_augmentation: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        image_key: str = Keys.IMAGE,
        val_handlers: Sequence | None = None,
        seed: int = 0,
        index_key: str | None = "index",
        epoch_length: int | None = None,
        non_blocking: bool = False,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
        if not callable(pair_augmentation):
            raise TypeError(f"pair_augmentation must be callable, got {type(pair_augmentation).__name__}.")
        if not callable(loss_function):
            raise TypeError(f"loss_function must be callable, got {type(loss_function).__name__}.")

        def inputs(name: str) -> Callable[[dict[str, Any]], Any]:
            return lambda output: output[_METRIC_INPUTS][name]

        self.strata_metric = _StrataStability(inputs("strata"))
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            key_val_metric={"val_loss": _WeightedMean(inputs("total"))},
            additional_metrics={
                "val_contrastive": _WeightedMean(inputs("contrastive")),
                "val_reconstruction": _WeightedMean(inputs("reconstruction")),
                "alignment": _WeightedMean(inputs("alignment")),
                "uniformity": _Uniformity(inputs("uniformity")),
                "strata_stability": self.strata_metric,
            },
            metric_cmp_fn=_lower_is_better,
            val_handlers=val_handlers,
            decollate=False,
        )
        self.network = network
        self.image_key = image_key
        self.index_key = index_key
        self.seed = seed
        self.loss_function = copy.deepcopy(loss_function)
        if isinstance(self.loss_function, nn.Module):
            self.loss_function.eval()
            for module in self.loss_function.modules():
                if hasattr(module, "reset_queue"):
                    module.reset_queue()
                if hasattr(module, "gather_distributed"):
                    module.gather_distributed = False
        self._augmentation_template = copy.deepcopy(pair_augmentation)
        if hasattr(self._augmentation_template, "set_random_state"):
            self._augmentation_template.set_random_state(seed)
        self.augmentation = copy.deepcopy(self._augmentation_template)
        self._position = 0
        self.add_event_handler(Events.EPOCH_STARTED, self._start_run)

    def _start_run(self, engine: LabelFreeEvaluator) -> None:
        # a fresh copy per run: the same views at every validation, whatever the previous run drew
        self.augmentation = copy.deepcopy(self._augmentation_template)
        self._position = 0

    def _has_prototypes(self) -> bool:
        # a model built with num_prototypes > 0 for export holds a zero matrix until real prototypes are installed
        return self.network.num_prototypes > 0 and bool(self.network.prototypes.any())

    def _iteration(  # type: ignore[override]
        self, engine: LabelFreeEvaluator, batchdata: dict[str, Any]
    ) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images = torch.as_tensor(batchdata[self.image_key]).to(engine.state.device, non_blocking=engine.non_blocking)
        n = images.shape[0]
        network = self.network
        # restore every module's own flag afterwards: in phase 2 the trainer keeps the frozen encoder in eval mode
        modes = [(module, module.training) for module in network.modules()]
        network.eval()
        try:
            with torch.no_grad():
                view1, view2 = self.augmentation(images)
                h1, h2 = network.encode(view1), network.encode(view2)
                z1, z2 = network.project(h1), network.project(h2)
                y1, y2 = network.decode(h1), network.decode(h2)
                strata = network.assign(network.encode(images))[1].argmax(dim=1) if self._has_prototypes() else None
        finally:
            for module, mode in modes:
                module.training = mode

        if n >= 2:  # NT-Xent needs a negative
            with torch.no_grad():
                parts = self.loss_function(z1, z2, view1, y1, view2, y2)
            losses = {name: (float(parts[name]), n) for name in ("total", "contrastive", "reconstruction")}
        else:
            losses = {name: (math.nan, 0) for name in ("total", "contrastive", "reconstruction")}
        # float64 so the exponentials of the uniformity sum stay exact to well below the metric's resolution
        u1, u2 = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
        alignment = (u1 - u2).pow(2).sum(dim=1).mean().item()
        pair_sums = [torch.pdist(u).pow(2).mul(-_UNIFORMITY_T).exp().sum().item() for u in (u1, u2)]

        inputs: dict[str, Any] = {
            **losses,
            "alignment": (alignment, n),
            "uniformity": (pair_sums[0], pair_sums[1], n * (n - 1) // 2),
            "strata": None,
        }
        if strata is not None:
            if self.index_key is not None and self.index_key in batchdata:
                indices = torch.as_tensor(batchdata[self.index_key]).reshape(-1).long().cpu()
            else:
                indices = torch.arange(self._position, self._position + n)
            inputs["strata"] = (indices, strata.long().cpu())
        self._position += n
        return {Keys.IMAGE: images, "view": view1, Keys.PRED: y1, _METRIC_INPUTS: inputs}

    def state_dict(self) -> dict[str, Any]:
        """The engine's state (Ignite's keys) plus ``previous_strata``, the last validation's strata.

        Returns:
            A dictionary of plain values and tensors (loadable with ``torch.load(weights_only=True)``); the previous
            strata are ``{"index", "strata"}`` int64 tensors, empty when there are none yet.
        """
        state = dict(super().state_dict())
        previous = self.strata_metric.previous
        empty = torch.zeros(0, dtype=torch.long)
        state["previous_strata"] = {
            "index": empty if previous is None else previous[0].clone(),
            "strata": empty if previous is None else previous[1].clone(),
        }
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Args:
            state_dict: a dictionary from :meth:`state_dict`; one without ``previous_strata`` (Ignite's own) leaves
                the previous strata as they are.

        Raises:
            ValueError: when the previous strata's index and strata tensors differ in length.
        """
        state = dict(state_dict)
        previous = state.pop("previous_strata", None)
        super().load_state_dict(state)
        if previous is None:
            return
        index = torch.as_tensor(previous["index"]).long().cpu()
        strata = torch.as_tensor(previous["strata"]).long().cpu()
        if index.shape != strata.shape:
            raise ValueError(f"previous strata: {len(index)} indices for {len(strata)} strata.")
        self.strata_metric.previous = None if index.numel() == 0 else (index, strata)
