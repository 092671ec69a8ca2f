"""Task configurations (MONAI Label ``TaskConfig``)."""
