#!/usr/bin/env bash
# GENERATED from requirements-nodeps.txt by `make lock` (python -m cmr_rd.envfile): do not edit.
# Snakemake runs this once in the new environment of envs/pipeline.yaml, from a copy in its conda
# prefix and in the working directory, so it names no repository file. The Dockerfile runs it too.
set -euo pipefail
# rapidocr-onnxruntime without its declared opencv-python (the GUI build needs libGL);
# requirements.lock pins the headless build it runs on.
pip install --no-deps rapidocr-onnxruntime==1.4.4
# Snakemake drops PYTHONPATH in conda jobs; this .pth puts $CMR_RD_SRC (set by the Snakefile to
# the checkout's src/) first on sys.path instead, for the jobs and the processes they start.
site=$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
cat > "$site/cmr_rd_src.pth" <<'EOF'
import os, sys; sys.path[:0] = [p for p in os.environ.get('CMR_RD_SRC', '').split(os.pathsep) if p and p not in sys.path]
EOF
