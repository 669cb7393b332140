# The pipeline's software as a container image, for `snakemake --sdm apptainer` (docs/usage.md,
# "Software on a cluster"). It holds the pinned dependencies and nothing of the pipeline's code: the
# code runs from the checkout, which the Snakefile puts on PYTHONPATH, so the image changes only
# when the lock does, and a job never runs a stale copy of the library baked into an image.
#
#   docker build -t cmr-rd:lock-$(git log -1 --format=%h -- requirements.lock) .
#
# Linux x86_64: the lock's torch pin from PyPI is the CUDA build (pip adds its nvidia-* wheels).
# Untested here: these machines have no Docker daemon and no registry access.
FROM python:3.11-slim

# git: every manifest records the checkout's commit (cmr_rd.lineage), and DVC reads the repository.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

# The same two steps as the conda environment: the lock, then the post-deploy script
# (rapidocr-onnxruntime without its dependencies, and the .pth that reads CMR_RD_SRC).
COPY requirements.lock envs/pipeline.post-deploy.sh /tmp/cmr-rd/
RUN pip install --no-cache-dir --disable-pip-version-check -r /tmp/cmr-rd/requirements.lock \
    && PIP_NO_CACHE_DIR=1 bash /tmp/cmr-rd/pipeline.post-deploy.sh \
    && python -c "import torch, snakemake, pydicom, rapidocr_onnxruntime, philter_lite" \
    && rm -rf /tmp/cmr-rd
