"""Applications built on monai_cae for other tools (MONAI Label). Nothing here is imported by ``monai_cae`` itself."""
