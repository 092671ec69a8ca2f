#!/usr/bin/env bash
# Creates .venv with monai_cae and everything its tests need.
# torch is installed first, on its own, so that the resolver never pulls a CUDA build of several GB where a
# CPU build is wanted. Override with TORCH_SPEC (for example TORCH_SPEC="torch==2.13.0 --index-url ...").
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${EXTRAS:-cluster,dicom,dev,label}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet $TORCH_SPEC
"$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
# MONAI Label and pydicom-seg pin numpy < 2 in their metadata (MONAI Label also pulls a CUDA torch, torchvision and
# sam2) but run without those pins: they go in without dependencies, the `label` extra holding what they import
case ",$EXTRAS," in
    *,label,*) "$VENV/bin/python" -m pip install --quiet --no-deps "monailabel==0.8.5" "pydicom-seg==0.4.1" ;;
esac
"$VENV/bin/python" -c "import monai_cae, torch, monai; print('monai_cae', monai_cae.__version__, '| torch', torch.__version__, '| monai', monai.__version__)"
