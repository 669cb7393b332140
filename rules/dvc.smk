# Versioning, after everything else: regenerate dvc.yaml from the DAG, record every stage's
# hashes in dvc.lock (`dvc commit`) and push the cache to dvc.remote. A local rule: DVC's lock
# is per workspace, so no DVC command ever runs in a cluster job. Without .dvc/ it only says so.
import os

from cmr_rd.dvcgen import RECORD

# For rule all: the commit record, unless dvc.commit is false (then `snakemake dvc_commit`).
DVC_TARGETS = [RECORD] if config["dvc"]["commit"] else []


rule dvc_commit:
    input:
        results=final_targets(),
        # After a later `dvc init` the input set changes, and the commit runs.
        workspace=lambda wildcards: (
            [".dvc/config"] if Path(".dvc/config").is_file() else []
        ),
    output:
        record=RECORD,
    log:
        "logs/dvc/commit.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        remote=config["dvc"]["remote"],
        configfiles=[os.path.relpath(f) for f in workflow.overwrite_configfiles],
    script:
        "../workflow/scripts/dvc_commit.py"
