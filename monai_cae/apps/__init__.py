"""Applications on top of monai_cae: the one-command archive stratification (``monai-cae-stratify``), the bundle
writer (``monai-cae-bundle``) and the MONAI Label app. Nothing here is imported by ``monai_cae``'s library layers
(only the other command lines, such as ``monai_cae.reproduce``, find the installed bundle through
:func:`monai_cae.apps.bundle.bundle_dir`)."""
