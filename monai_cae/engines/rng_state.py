"""Checkpointable random-number-generator state, so that a resumed run continues the same random stream."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["RNGState"]


class RNGState:
    """The state of every random generator a training run draws from, as a checkpointable object.

    Ignite checkpoints hold model, optimizer, scheduler and engine state but no random state, so a run resumed
    after ``kill -9`` would shuffle and augment differently from an uninterrupted one. Put an ``RNGState`` in the
    ``CheckpointSaver``/``CheckpointLoader`` dictionaries to save and restore Python's, NumPy's and torch's global
    generators (CUDA's too, when present) and any extra ``torch.Generator`` such as the augmentation's.

    Args:
        generators: extra generators to track, in a fixed order.
    """

    def __init__(self, generators: Sequence[torch.Generator] = ()) -> None:
        self.generators = list(generators)

    def state_dict(self) -> dict[str, Any]:
        # only tensors and plain Python values, so that checkpoints load with torch.load(weights_only=True)
        name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        state: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)],
            "torch": torch.get_rng_state(),
            "generators": [g.get_state() for g in self.generators],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generators.

        Args:
            state: a dictionary from :meth:`state_dict`.

        Raises:
            ValueError: when the number of extra generators differs from the saved one.
        """
        if len(state["generators"]) != len(self.generators):
            raise ValueError(f"checkpoint holds {len(state['generators'])} generators, expected {len(self.generators)}.")
        random.setstate(state["python"])
        name, keys, position, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
        torch.set_rng_state(state["torch"])
        for generator, saved in zip(self.generators, state["generators"]):
            generator.set_state(saved)
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
