"""The "lin" evaluation: a linear classifier trained on frozen features with few labels."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LinearProbe"]


class LinearProbe:
    """A single linear layer on frozen features, trained with Adam and cross-entropy (Ferrante et al., eval (c)).

    The paper trains it "for 200 epochs using the Adam optimizer with a learning rate of 3e-4 over ... 20% of the
    training set". Features are standardised with the training statistics first, so that the fixed learning rate
    suits any feature scale.

    Args:
        epochs: passes over the labelled features.
        lr: Adam learning rate.
        batch_size: mini-batch size.
        seed: initialisation seed.
        device: device to train on.
    """

    def __init__(
        self,
        epochs: int = 200,
        lr: float = 3e-4,
        batch_size: int = 64,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if epochs < 1 or lr <= 0 or batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive and lr > 0, got {epochs}, {batch_size}, {lr}.")
        self.epochs, self.lr, self.batch_size, self.seed = epochs, lr, batch_size, seed
        self.device = torch.device(device)
        self.layer: torch.nn.Linear | None = None
        self.mean = self.std = None

    def fit(self, features: np.ndarray, labels: np.ndarray) -> LinearProbe:
        """Train the probe.

        Args:
            features: ``(N, D)`` features.
            labels: ``(N,)`` integer labels.

        Returns:
            This probe.

        Raises:
            ValueError: for mismatched shapes.
        """
        x = torch.as_tensor(np.asarray(features), dtype=torch.float32, device=self.device)
        y = torch.as_tensor(np.asarray(labels).reshape(-1), dtype=torch.long, device=self.device)
        if x.ndim != 2 or len(x) != len(y):
            raise ValueError(f"features must be (N, D) with N={len(y)}, got {tuple(x.shape)}.")
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
        x = (x - self.mean) / self.std
        generator = torch.Generator().manual_seed(self.seed)
        self.layer = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
        with torch.no_grad():
            bound = 1 / np.sqrt(x.shape[1])
            self.layer.weight.copy_(torch.rand(self.layer.weight.shape, generator=generator) * 2 * bound - bound)
            self.layer.bias.zero_()
        self.layer.to(self.device)
        optimizer = torch.optim.Adam(self.layer.parameters(), lr=self.lr)
        for _ in range(self.epochs):
            order = torch.randperm(len(x), generator=generator).to(self.device)
            for start in range(0, len(x), self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                F.cross_entropy(self.layer(x[batch]), y[batch]).backward()
                optimizer.step()
        return self

    @torch.no_grad()
    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, C)``.

        Raises:
            RuntimeError: before :meth:`fit`.
        """
        if self.layer is None:
            raise RuntimeError("the probe is not trained: call fit() first.")
        x = torch.as_tensor(np.asarray(features), dtype=torch.float32, device=self.device)
        return torch.softmax(self.layer((x - self.mean) / self.std), dim=1).cpu().numpy()

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted labels ``(N,)``."""
        return self.predict_proba(features).argmax(1)
