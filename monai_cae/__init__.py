"""monai_cae: contrastive autoencoders for unsupervised patient stratification, built on MONAI.

Implements Ferrante, Boccato, Duggento, Spasov, Toschi, "Contrastive learning for unsupervised medical image
clustering and reconstruction" (2022).
"""

from __future__ import annotations

from ._version import __version__

from . import (
    clustering,
    data,
    engines,
    evaluation,
    handlers,
    inference,
    losses,
    networks,
    optimizers,
    transforms,
    utils,
    visualize,
)

__all__ = [
    "__version__",
    "clustering",
    "data",
    "engines",
    "evaluation",
    "handlers",
    "inference",
    "losses",
    "networks",
    "optimizers",
    "transforms",
    "utils",
    "visualize",
]
