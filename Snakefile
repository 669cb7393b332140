# CMR-RD: LGE ingestion -> o3 rewriting + QC -> alignment -> cold-start SFT -> GPPO phases
# -> per-class Beta-posterior evaluation -> test-split evaluation -> report tables and figures.
import os
import sys

from snakemake.utils import min_version

min_version("9.0")

# The library runs from this checkout, installed or not: src/ goes first on the path of this
# process (rules/common.smk imports it), and on PYTHONPATH for every job and the processes a job
# starts (`python -m cmr_rd...`; sbatch passes the environment on, and the job's own Snakemake
# reads this file again). Snakemake drops PYTHONPATH in conda jobs, so CMR_RD_SRC carries it
# there (envs/pipeline.post-deploy.sh). A conda environment or a container image therefore holds
# only the pinned dependencies (docs/usage.md, "Software on a cluster").
SRC = os.path.join(workflow.basedir, "src")
if os.path.isdir(os.path.join(SRC, "cmr_rd")):
    if SRC not in sys.path:
        sys.path.insert(0, SRC)
    _pythonpath = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    os.environ.update(
        PYTHONPATH=os.pathsep.join([SRC, *(p for p in _pythonpath if p and p != SRC)]),
        CMR_RD_SRC=SRC,
    )

# Every job's CPU numerics pinned in one place (cmr_rd.numerics, docs/numerics.md):
# set in this process's environment, which local, conda and SLURM jobs inherit, and again by
# `import cmr_rd` in every job and CLI, for the CPU it runs on. CMR_RD_NUMERICS=portable keeps
# MKL in the one branch Intel documents as the same on every vendor; native turns the pins off.
from cmr_rd.numerics import pin_environment

pin_environment()

# Local runs: one warm interpreter (cmr_rd.warm) that has imported torch, transformers and TRL
# forks each training, evaluation and probe process, instead of each paying ~4 s of imports;
# started only when the run has such a job. Not on a cluster (every job must run inside its own
# allocation); CMR_RD_WARM=0 turns it off.
from cmr_rd import warm

ZYGOTE = []


onstart:
    if workflow.local_exec and not workflow.touch:
        if warm.needed(workflow):
            ZYGOTE.append(warm.start())
        else:
            print(
                "warm interpreter not started: no job of this run forks from it",
                file=sys.stderr,
            )


onsuccess:
    warm.stop(ZYGOTE.pop() if ZYGOTE else None)


onerror:
    warm.stop(ZYGOTE.pop() if ZYGOTE else None)


# Used only under --software-deployment-method apptainer: the image the Dockerfile builds, named
# by CMR_RD_IMAGE (a .sif path or a docker:// URL), else cmr-rd.sif in the working directory.
container: os.environ.get("CMR_RD_IMAGE", "cmr-rd.sif")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/ingest.smk"
include: "rules/rewrite.smk"
include: "rules/datasets.smk"
include: "rules/foundation.smk"
include: "rules/model.smk"
include: "rules/gppo.smk"
include: "rules/evaluate.smk"
include: "rules/judge.smk"
include: "rules/report.smk"
include: "rules/predict.smk"
include: "rules/dvc.smk"


localrules:
    all,
    rewrite_qc,
    coldstart_shard,
    coldstart_dataset,
    alignment_dataset,
    prompt_datasets,
    evaluate_api,
    gppo_quota,
    gppo_posterior,
    gppo_summary,
    report_tables,
    judge,
    dvc_commit,


rule all:
    default_target: True
    input:
        final_targets(),
        DVC_TARGETS,
        PREDICT_TARGETS,
