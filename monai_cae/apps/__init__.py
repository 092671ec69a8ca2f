"""Applications on top of monai_cae: the one-command archive stratification (``monai-cae-stratify``) and the MONAI Label
app. Nothing here is imported by ``monai_cae`` itself."""
