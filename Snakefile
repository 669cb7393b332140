# CMR-RD: LGE ingestion -> o3 rewriting + QC -> alignment -> cold-start SFT -> GPPO phases
# -> per-class Beta-posterior evaluation -> test-split evaluation -> report tables and figures.
from snakemake.utils import min_version

min_version("9.0")


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
include: "rules/report.smk"
include: "rules/dvc.smk"


localrules:
    all,
    rewrite_qc,
    coldstart_shard,
    coldstart_dataset,
    alignment_dataset,
    prompt_datasets,
    gppo_quota,
    gppo_summary,
    report_tables,
    dvc_commit,


rule all:
    default_target: True
    input:
        final_targets(),
        DVC_TARGETS,
