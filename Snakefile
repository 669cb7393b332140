# CMR-RD: LGE ingestion -> o3 rewriting + QC -> alignment -> cold-start SFT -> GPPO phases
# -> per-class Beta-posterior evaluation -> report tables. Stages land issue by issue; the
# rule files included below are the ones that exist so far.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/ingest.smk"
include: "rules/rewrite.smk"
include: "rules/datasets.smk"
include: "rules/model.smk"
include: "rules/gppo.smk"


localrules:
    all,
    rewrite_qc,
    coldstart_shard,
    coldstart_dataset,
    alignment_dataset,
    prompt_datasets,
    gppo_quota,
    gppo_summary,


rule all:
    default_target: True
    input:
        final_targets(),
