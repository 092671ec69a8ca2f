"""Ignite/MONAI trainer for the two training phases of the contrastive autoencoder."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.engines import IterationEvents, SupervisedTrainer
from monai.inferers import Inferer
from monai.utils import CommonKeys as Keys
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer

from monai_cae.handlers.pseudo_classes import PseudoClassHandler
from monai_cae.losses import CAELoss, LocalDiscriminationLoss
from monai_cae.networks.nets import ContrastiveAutoEncoder

from .step import CAEStep

__all__ = ["CAETrainer"]


class CAETrainer(SupervisedTrainer):
    """Trains a :class:`ContrastiveAutoEncoder` through both phases of Ferrante et al. 2022, Algorithm 1.

    - Epochs ``1..warmup_epochs`` (phase 1): every batch is turned into two augmented views on its device,
      encoder, projector and decoder are trained on ``NT-Xent(z1, z2) + alpha * (MSE(x1, y1) + MSE(x2, y2))``.
    - Later epochs (phase 2): the encoder is frozen (run without gradients), and only the conditional decoder
      learns ``MSE(x1, y1) + MSE(x2, y2)`` given ``h`` and its soft prototype assignment. The prototypes must be in
      place before the first phase-2 iteration; :class:`~monai_cae.handlers.PrototypeDiscoveryHandler` does that.

    One optimizer holds all parameters: gradients are reset to ``None`` every iteration, so parameters outside the
    current phase's graph receive no update at all (no momentum, no weight decay). The iteration output is a
    dictionary with the loss parts as floats (``loss``, ``reconstruction`` and, in phase 1, ``contrastive``), the learning rate
    ``lr``, the ``phase``, and the batch ``image``, first ``view`` and its reconstruction ``pred`` for image logging.

    Distributed data-parallel training (``torchrun``, one process per device) passes a
    ``DistributedDataParallel(CAEStep(network), find_unused_parameters=True)`` as ``step_module``, a loader with a
    ``DistributedSampler`` and a ``CAELoss(gather_distributed=True)``: ``network`` itself stays unwrapped for the
    handlers and checkpoints, gradients are averaged over the ranks, and the logged loss parts are averaged over
    the ranks too, so they are the global batch's (``bundles/cae/configs/multi_gpu_train.json`` does all this).

    Args:
        device: device to train on.
        max_epochs: total epochs of both phases.
        train_data_loader: loader of dictionary batches holding ``image_key`` (and optionally ``label``).
        network: the contrastive autoencoder.
        optimizer: optimizer over all of ``network``'s parameters.
        loss_function: the phase-1 loss.
        pair_augmentation: callable from an image batch to its two views, e.g.
            :class:`~monai_cae.transforms.BatchPositivePair`.
        warmup_epochs: number of phase-1 epochs.
        image_key: key of the images in a batch.
        train_handlers: Ignite/MONAI handlers to attach.
        amp: use automatic mixed precision (CUDA).
        epoch_length: iterations per epoch; the loader's length when omitted.
        non_blocking: non-blocking host-to-device copies.
        step_module: the module computing an iteration's outputs, :class:`CAEStep` over ``network`` when omitted;
            a ``DistributedDataParallel`` around a :class:`CAEStep` of the same ``network`` for distributed runs.
        pseudo_classes: for cluster-aware negatives, a :class:`~monai_cae.handlers.PseudoClassHandler` over the
            training set; the trainer attaches it and passes the pseudo-classes of each phase-1 batch's images
            (looked up by ``index_key``) to ``loss_function`` as ``pseudo_labels``.
        index_key: key of the images' dataset indices in a batch, read only with ``pseudo_classes``.
        local_loss: for a network with a local branch, the loss of its pixel embeddings and clusters, computed in
            phase 1 on the un-augmented batch, added to the total as ``local_weight * local`` and logged as
            ``local`` (see :class:`~monai_cae.losses.LocalEmbeddingLoss` for why not on the views).
        local_weight: weight of the local loss.
        inferer: runs ``step_module`` on the first view (the second view, the phase and the local branch's
            images follow as arguments); MONAI's ``SimpleInferer`` when omitted.

    Raises:
        ValueError: for ``warmup_epochs`` outside ``[0, max_epochs]``, a loader that yields no batch, or a
            :class:`CAEStep` ``step_module`` over another network.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: ContrastiveAutoEncoder,
        optimizer: Optimizer,
        loss_function: CAELoss,
        pair_augmentation: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        warmup_epochs: int,
        image_key: str = Keys.IMAGE,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        step_module: nn.Module | None = None,
        pseudo_classes: PseudoClassHandler | None = None,
        index_key: str = "index",
        local_loss: LocalDiscriminationLoss | None = None,
        local_weight: float = 1.0,
        inferer: Inferer | None = None,
    ) -> None:
        if not 0 <= warmup_epochs <= max_epochs:
            raise ValueError(f"warmup_epochs must be in [0, max_epochs={max_epochs}], got {warmup_epochs}.")
        dataset = getattr(train_data_loader, "dataset", None)
        if epoch_length is None and dataset is not None and len(train_data_loader) == 0:
            # a drop_last loader over fewer images than one batch: Ignite would stop with an unclear message
            raise ValueError(
                f"the training loader yields no batch: {len(dataset)} images for batch_size "
                f"{train_data_loader.batch_size} with drop_last; lower --batch_size."
            )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            train_handlers=train_handlers,
            amp=amp,
            inferer=inferer,
            decollate=False,
            optim_set_to_none=True,
        )
        self.pair_augmentation = pair_augmentation
        self.warmup_epochs = warmup_epochs
        self.image_key = image_key
        step_module = CAEStep(network) if step_module is None else step_module
        inner = getattr(step_module, "module", step_module)  # DDP keeps the wrapped module there
        if isinstance(inner, CAEStep) and inner.network is not network:
            raise ValueError("step_module computes with another network than the trainer's: wrap CAEStep(network).")
        self.step_module = step_module
        self.pseudo_classes = pseudo_classes
        self.index_key = index_key
        if local_loss is not None and network.local_branch is None:
            raise ValueError("local_loss needs a network with a local branch (local_branch=True).")
        if local_weight < 0:
            raise ValueError(f"local_weight must be non-negative, got {local_weight}.")
        self.local_loss = local_loss
        self.local_weight = float(local_weight)
        if pseudo_classes is not None:
            pseudo_classes.attach(self)

    def phase(self, epoch: int) -> int:
        """Training phase (1 or 2) of a 1-based epoch number."""
        return 1 if epoch <= self.warmup_epochs else 2

    def _iteration(self, engine: CAETrainer, batchdata: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        images = torch.as_tensor(batchdata[self.image_key]).to(engine.state.device, non_blocking=engine.non_blocking)
        network: ContrastiveAutoEncoder = engine.network
        phase = self.phase(engine.state.epoch)
        if phase == 2 and network.num_prototypes == 0:
            raise RuntimeError(
                "phase 2 needs cluster prototypes: attach a PrototypeDiscoveryHandler or call set_prototypes()."
            )
        loss_options: dict[str, torch.Tensor] = {}
        if phase == 1 and self.pseudo_classes is not None:
            labels = self.pseudo_classes.lookup(batchdata[self.index_key])
            loss_options["pseudo_labels"] = labels.to(engine.state.device, non_blocking=engine.non_blocking)
        with torch.no_grad():
            view1, view2 = self.pair_augmentation(images)
        network.train()
        if phase == 2:
            # the frozen encoder must keep producing the latents the prototypes were found in (normalisation stats)
            network.encoder.eval()
        engine.optimizer.zero_grad(set_to_none=True)
        # the iteration events and the growing state.output are those of SupervisedTrainer, for stock handlers
        engine.state.output = {Keys.IMAGE: images}
        with torch.autocast(device_type=torch.device(engine.state.device).type, enabled=engine.amp):
            local = phase == 1 and self.local_loss is not None
            z1, z2, y1, y2, *pixels = engine.inferer(view1, self.step_module, view2, phase, images if local else None)
            engine.state.output[Keys.PRED] = y1
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            if phase == 1:
                parts = engine.loss_function(z1, z2, view1, y1, view2, y2, **loss_options)
            else:
                reconstruction = F.mse_loss(y1.float(), view1) + F.mse_loss(y2.float(), view2)
                parts = {"reconstruction": reconstruction, "total": reconstruction}
            if local:
                parts["local"] = self.local_loss(*pixels)["total"]
                parts["total"] = parts["total"] + self.local_weight * parts["local"]
            engine.state.output[Keys.LOSS] = parts["total"]
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if engine.amp and engine.scaler is not None:
            engine.scaler.scale(parts["total"]).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            parts["total"].backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        logged = self._mean_over_ranks({name: value.detach() for name, value in parts.items()})
        output: dict[str, Any] = {
            Keys.IMAGE: images,
            "view": view1.detach(),
            Keys.PRED: y1.detach(),
            Keys.LOSS: logged["total"],
            "reconstruction": logged["reconstruction"],
            "lr": float(engine.optimizer.param_groups[0]["lr"]),
            "phase": phase,
        }
        for name in ("contrastive", "local"):
            if name in logged:
                output[name] = logged[name]
        return output

    def _mean_over_ranks(self, parts: dict[str, torch.Tensor]) -> dict[str, float]:
        """Loss parts as floats; averaged over the ranks under DDP, which with equal local batches (and gathered
        NT-Xent negatives) is the global batch's loss, not one rank's."""
        values = torch.stack([value.float() for value in parts.values()])
        if isinstance(self.step_module, DistributedDataParallel):
            group = self.step_module.process_group
            dist.all_reduce(values, group=group)
            values = values / dist.get_world_size(group)
        return dict(zip(parts, values.tolist()))
