"""Tasks of the CAE MONAI Label app. MONAI Label imports this folder as the top-level package ``lib``."""
