"""Ignite/MONAI trainer for the two training phases of the contrastive autoencoder."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.engines import SupervisedTrainer
from monai.utils import CommonKeys as Keys
from torch.optim import Optimizer

from monai_cae.losses import CAELoss
from monai_cae.networks.nets import ContrastiveAutoEncoder

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

    Raises:
        ValueError: for ``warmup_epochs`` outside ``[0, max_epochs]``.
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
    ) -> None:
        if not 0 <= warmup_epochs <= max_epochs:
            raise ValueError(f"warmup_epochs must be in [0, max_epochs={max_epochs}], got {warmup_epochs}.")
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
            decollate=False,
            optim_set_to_none=True,
        )
        self.pair_augmentation = pair_augmentation
        self.warmup_epochs = warmup_epochs
        self.image_key = image_key

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
        with torch.no_grad():
            view1, view2 = self.pair_augmentation(images)
        network.train()
        if phase == 2:
            # the frozen encoder must keep producing the latents the prototypes were found in (normalisation stats)
            network.encoder.eval()
        engine.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=torch.device(engine.state.device).type, enabled=engine.amp):
            if phase == 1:
                h1, z1, y1 = network(view1)
                h2, z2, y2 = network(view2)
                parts = engine.loss_function(z1, z2, view1, y1, view2, y2)
            else:
                with torch.no_grad():
                    h1, h2 = network.encode(view1), network.encode(view2)
                y1, y2 = network.decode_conditional(h1), network.decode_conditional(h2)
                reconstruction = F.mse_loss(y1.float(), view1) + F.mse_loss(y2.float(), view2)
                parts = {"reconstruction": reconstruction, "total": reconstruction}
        if engine.amp and engine.scaler is not None:
            engine.scaler.scale(parts["total"]).backward()
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            parts["total"].backward()
            engine.optimizer.step()
        output: dict[str, Any] = {
            Keys.IMAGE: images,
            "view": view1.detach(),
            Keys.PRED: y1.detach(),
            Keys.LOSS: float(parts["total"].detach()),
            "reconstruction": float(parts["reconstruction"].detach()),
            "lr": float(engine.optimizer.param_groups[0]["lr"]),
            "phase": phase,
        }
        if "contrastive" in parts:
            output["contrastive"] = float(parts["contrastive"].detach())
        return output
