"""monai_cae: contrastive autoencoders for unsupervised patient stratification, built on MONAI.

Implements Ferrante, Boccato, Duggento, Spasov, Toschi, "Contrastive learning for unsupervised medical image
clustering and reconstruction" (2022).
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import clustering, data, engines, evaluation, handlers, losses, networks, optimizers, transforms, visualize

__all__ = [
    "__version__",
    "clustering",
    "data",
    "engines",
    "evaluation",
    "handlers",
    "losses",
    "networks",
    "optimizers",
    "transforms",
    "visualize",
]
