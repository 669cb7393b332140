#!/usr/bin/env bash
# Snakemake runs this once after creating the conda environment: rapidocr-onnxruntime goes in
# without its declared opencv-python (the GUI build needs libGL); requirements.txt pins the
# headless build it runs on.
set -euo pipefail
pip install --no-deps -r "$(dirname "$0")/../requirements-nodeps.txt"
