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
GPPO = "results/gppo"
GPPO_CFG = config["gppo"]
RUN = f"{GPPO}/{{run}}/seed{{seed}}"  # one variant and seed: every phase lives below it
PHASE = f"{RUN}/phase{{phase}}"


wildcard_constraints:
    run=r"(sft|base)-(ts|static|full)-(iou|noiou)",
    seed=r"\d+",
    phase=r"\d+",


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
    ] + expand(
        f"{RUN}/summary/probe_accuracy.csv",
        run=GPPO_CFG["runs"],
        seed=GPPO_CFG["seeds"],
    )


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


def _phase(wildcards) -> int:
    phase = int(wildcards.phase)
    if not 1 <= phase <= GPPO_CFG["phases"]:
        raise WorkflowError(
            f"GPPO phase {phase} is outside 1..{GPPO_CFG['phases']} (gppo.phases)"
        )
    return phase


def start_model(wildcards):
    """GPPO starts from the cold-start model (sft-*) or the bare backbone (base-*, no stage 1)."""
    if wildcards.run.startswith("base-"):
        return f"{MODEL}/base"
    return f"{MODEL}/sft/final"


def previous_posterior(wildcards):
    """Phase t's quotas read phase t-1's posterior; phase 1 starts from Beta(1, 1)."""
    phase = _phase(wildcards)
    if phase == 1:
        return []
    return (
        f"{GPPO}/{wildcards.run}/seed{wildcards.seed}/phase{phase - 1}/posterior.json"
    )


def phase_start_model(wildcards):
    """Phase t trains on from phase t-1's checkpoint; phase 1 from the start model."""
    phase = _phase(wildcards)
    if phase == 1:
        return start_model(wildcards)
    return f"{GPPO}/{wildcards.run}/seed{wildcards.seed}/phase{phase - 1}/model"


def run_phases(name):
    """Input function: one file per phase 1..T of a run, e.g. run_phases("posterior.json")."""

    def files(wildcards):
        return expand(
            f"{GPPO}/{wildcards.run}/seed{wildcards.seed}/phase{{phase}}/{name}",
            phase=range(1, GPPO_CFG["phases"] + 1),
        )

    return files
