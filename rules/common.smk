# Shared config validation, path helpers and input functions.
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cmr_rd.classes import CLASSES
from cmr_rd.config import config_errors

SCHEMA = workflow.source_path("../config/schema.yaml")

# Our check first: one line per problem, naming the dotted key. Then Snakemake's, which also
# fills in the schema's defaults.
_problems = config_errors(config, SCHEMA)
if _problems:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_problems))
validate(config, SCHEMA)

DATA = config["data"]
SYNTHETIC = DATA["source"] == "synthetic"
INGEST = "results/ingest"
REWRITE = "results/rewrite"
DATASETS = "results/datasets"
MODEL = "results/model"


def ingest_inputs(wildcards=None):
    """The user's data, or the synthetic cohort the synthesize_cohort rule writes."""
    if SYNTHETIC:
        out = DATA["synthetic"]["out_dir"]
        return {
            "dicom_dir": f"{out}/dicom",
            "nifti_dir": f"{out}/nifti",
            "labels_csv": f"{out}/labels.csv",
            "boxes_csv": f"{out}/boxes.csv",
        }
    inputs = {"dicom_dir": DATA["dicom_dir"], "labels_csv": DATA["labels_csv"]}
    for key in ("nifti_dir", "boxes_csv"):
        if DATA.get(key):
            inputs[key] = DATA[key]
    return inputs


def final_targets():
    return [
        f"{INGEST}/manifest.parquet",
        f"{INGEST}/qc/manifest.json",
        "results/rewrite/qc/manifest.json",
        "results/datasets/coldstart.jsonl",
        "results/datasets/alignment.jsonl",
        "results/datasets/rl_prompts.jsonl",
        f"{MODEL}/sft/probe_check.json",
    ]


def review_decisions(wildcards):
    """The clinician's overrides, when the file exists: editing it reruns QC only."""
    path = config["rewrite"]["review_decisions"]
    return [path] if Path(path).is_file() else []


def coldstart_shards(wildcards):
    """Re-evaluated after the QC checkpoint: one shard per class with accepted templates."""
    accepted = checkpoints.rewrite_qc.get().output.accepted
    labels = sorted(
        {json.loads(line)["label"] for line in open(accepted) if line.strip()}
    )
    return expand(f"{DATASETS}/coldstart/{{label}}.jsonl", label=labels)
