# Shared config validation, path helpers and input functions.
import json
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cmr_rd.classes import CLASSES
from cmr_rd.config import config_errors
from cmr_rd.gppo.runs import RunName
from cmr_rd.rewrite.phi import SafeList, SafeListError
from cmr_rd.stage import looks_like_path

SCHEMA = workflow.source_path("../config/schema.yaml")

# Our check first: one line per problem, naming the dotted key. Then Snakemake's, which also
# fills in the schema's defaults.
_problems = config_errors(config, SCHEMA)
if _problems:
    raise WorkflowError("invalid configuration:\n  " + "\n  ".join(_problems))
validate(config, SCHEMA)

# A site's PHI safe list is checked before any job runs: a missing file or an entry that would
# hide an identifier stops the workflow with the file and the entry named.
try:
    SafeList.load(config["phi"]["safe_list"])
except SafeListError as _error:
    raise WorkflowError(f"phi.safe_list: {_error}")

DATA = config["data"]
SYNTHETIC = DATA["source"] == "synthetic"
INGEST = "results/ingest"
REWRITE = "results/rewrite"
DATASETS = "results/datasets"
MODEL = "results/model"
# The model the paper's stages start from: the foundation stage's output for the tiny backbone,
# the configured real backbone otherwise (build_backbone copies it there).
BASE_MODEL = f"{MODEL}/base"
TINY = config["model"]["base"] == "tiny"
# What build_backbone writes: the tiny random initial model, which the foundation stage
# pretrains into BASE_MODEL, or a real backbone's copy at BASE_MODEL itself.
BACKBONE = f"{MODEL}/init" if TINY else BASE_MODEL
FOUNDATION = "results/foundation"
FOUNDATION_CFG = config["model"]["foundation"]
FOUNDATION_POOL = {
    **FOUNDATION_CFG["pool"],
    "seed": (
        FOUNDATION_CFG["pool"]["seed"]
        if FOUNDATION_CFG["pool"]["seed"] is not None
        else config["seed"] + 7001
    ),
}
if SYNTHETIC and FOUNDATION_POOL["seed"] == config["seed"]:
    raise WorkflowError(
        "model.foundation.pool.seed equals seed, the synthetic cohort's: the pretraining pool "
        "would hold the cohort's own patients; choose another seed (or null)"
    )
# Stage 1b per seed: seed s of every sft-* GPPO run starts from the cold start of seed s.
SFT = f"{MODEL}/sft/seed{{seed}}"
GPPO = "results/gppo"
GPPO_CFG = config["gppo"]
RUN = f"{GPPO}/{{run}}/seed{{seed}}"  # one variant and seed: every phase lives below it
PHASE = f"{RUN}/phase{{phase}}"
EVAL = "results/eval"
# The evaluation settings a local evaluation job reads (its params).
LOCAL_EVAL_SETTINGS = ("batch_size", "max_new_tokens", "score_batch_size", "limit")
REPORT = "results/report"
REPORT_CFG = config["report"]
ZERO_SHOT = {m["name"]: m["model"] for m in config["evaluate"]["zero_shot"]}
JUDGE = "results/judge"
JUDGE_CFG = config["judge"]
# The judge's own stream: judge.seed, or the top-level seed plus a fixed offset.
JUDGE_SEED = (
    JUDGE_CFG["seed"] if JUDGE_CFG["seed"] is not None else config["seed"] + 1700
)
# What the judge job reads: the LLM settings only when it asks the LLM (so editing them
# reruns no offline judge).
JUDGE_PARAMS = {
    k: v
    for k, v in JUDGE_CFG.items()
    if k != "openai" or JUDGE_CFG["backend"] == "openai"
}
RUN_NAME = RunName.PATTERN  # START-SAMPLING-REWARD, e.g. sft-ts-iou
# API-served VLMs (rule evaluate_api), by row name; evaluated as api/NAME.
API_MODELS = {m["name"]: m for m in config["evaluate"]["api_models"]}
API_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
if len(API_MODELS) != len(config["evaluate"]["api_models"]):
    raise WorkflowError("evaluate.api_models: two entries have the same name")
# What the evaluate rule evaluates locally; api/NAME is rule evaluate_api's.
LOCAL_EVAL_KEY = rf"none|s1/seed\d+|{RUN_NAME}/seed\d+|zeroshot/{API_NAME}"
# Where a GPPO run's figures sit in the HTML report: one subcategory per variant and seed.
GPPO_REPORT = {"category": "4 GPPO", "subcategory": "{run} seed {seed}"}


wildcard_constraints:
    run=RUN_NAME,
    seed=r"\d+",
    phase=r"\d+",
    # What an evaluation evaluates: none (base), s1/seedS (SFT), RUN/seedS, zeroshot/NAME, or
    # api/NAME (an API-served model, rule evaluate_api).
    model=rf"{LOCAL_EVAL_KEY}|api/{API_NAME}",


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
    targets = [
        f"{INGEST}/manifest.parquet",
        f"{INGEST}/qc/manifest.json",
        "results/rewrite/qc/manifest.json",
        "results/datasets/coldstart.jsonl",
        "results/datasets/alignment.jsonl",
        "results/datasets/rl_prompts.jsonl",
        f"{REPORT}/report.md",
        f"{JUDGE}/summary.csv",
    ]
    cold_starts = expand(f"{SFT}/probe_check.json", seed=GPPO_CFG["seeds"])
    runs = expand(
        f"{RUN}/summary/probe_accuracy.csv",
        run=GPPO_CFG["runs"],
        seed=GPPO_CFG["seeds"],
    )
    return targets + cold_starts + runs


def review_decisions(wildcards):
    """The clinician's overrides, when the file exists: editing it reruns QC only."""
    path = config["rewrite"]["review_decisions"]
    return [path] if Path(path).is_file() else []


def phi_safe_list(wildcards=None):
    """A site's additions to the PHI gate's safe list (phi.safe_list), when set: an input of
    every rule that sends text out or checks it, so editing the file reruns them."""
    path = config["phi"]["safe_list"]
    return [path] if path else []


def clinician_ratings(wildcards):
    """The clinicians' filled sheet, when the file exists: editing it reruns the judge only."""
    path = JUDGE_CFG["clinician_ratings"]
    return [path] if path and Path(path).is_file() else []


def judge_samples(wildcards=None):
    """Every evaluation the report's tables use (report_metrics), so a model that joins the
    tables (an API model, a zero-shot one) joins the judge's sample too."""
    return [
        path.removesuffix("metrics.json") + "samples.parquet"
        for path in report_metrics()
    ]


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
    if not RunName.parse(wildcards.run).from_cold_start:
        return f"{MODEL}/base"
    return f"{MODEL}/sft/seed{wildcards.seed}/final"


def previous_posterior(wildcards):
    """Phase t's quotas read phase t-1's posterior. Phase 1 starts from Beta(1, 1), or with
    gppo.prior start_probe from Beta(1, 1) updated with the cold start's probe check."""
    phase = _phase(wildcards)
    if phase == 1:
        cold_start = RunName.parse(wildcards.run).from_cold_start
        if GPPO_CFG["prior"] == "start_probe" and cold_start:
            return f"{MODEL}/sft/seed{wildcards.seed}/probe_check.json"
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


def every_phase(name: str) -> list[str]:
    """One file per run, seed and phase of the whole GPPO matrix (the RL-health report)."""
    return expand(
        f"{GPPO}/{{run}}/seed{{seed}}/phase{{phase}}/{name}",
        run=GPPO_CFG["runs"],
        seed=GPPO_CFG["seeds"],
        phase=range(1, GPPO_CFG["phases"] + 1),
    )


def _checkpoint_of(model: str) -> str:
    """The folder (or hub id, for a zero-shot model) an evaluation key names."""
    if model == "none":
        return f"{MODEL}/base"
    if model.startswith("s1/"):  # s1/seedS: the cold start of seed S
        return f"{MODEL}/sft/{model.removeprefix('s1/')}/final"
    if model.startswith("zeroshot/"):
        name = model.removeprefix("zeroshot/")
        if name not in ZERO_SHOT:
            raise WorkflowError(
                f"zero-shot model {name!r} is not in evaluate.zero_shot"
            )
        return ZERO_SHOT[name]
    # api/NAME: the served model's name (nothing Snakemake can track)
    if model.startswith("api/"):
        name = model.removeprefix("api/")
        if name not in API_MODELS:
            raise WorkflowError(f"API model {name!r} is not in evaluate.api_models")
        return API_MODELS[name]["model"]
    run_and_seed = model  # e.g. sft-ts-iou/seed1: the run's folder below results/gppo
    return f"{GPPO}/{run_and_seed}/phase{GPPO_CFG['phases']}/model"


def eval_checkpoint(wildcards):
    """Input function: the checkpoint folder, or nothing for a hub id (not a file Snakemake
    could track; the evaluation's manifest records the id)."""
    ref = _checkpoint_of(wildcards.model)
    return ref if looks_like_path(ref) else []


def eval_model_ref(wildcards):
    return _checkpoint_of(wildcards.model)


def api_model(wildcards):
    """Params of evaluate_api: the evaluate.api_models entry the wildcard names."""
    if wildcards.name not in API_MODELS:
        raise WorkflowError(
            f"API model {wildcards.name!r} is not in evaluate.api_models"
        )
    return API_MODELS[wildcards.name]


def _eval_keys(model: str) -> list[str]:
    """Evaluation keys behind one table row: one per seed for a cold start or a GPPO run; the
    pretrained backbone (none) has no seed."""
    if model == "none":
        return [model]
    return [f"{model}/seed{seed}" for seed in GPPO_CFG["seeds"]]


def report_rows() -> dict:
    """Per table, [label, [metrics.json per seed]] rows, and notes for rows left out."""
    runs = set(GPPO_CFG["runs"])
    tables, notes = {}, {}
    sections = {"table5": "ablation", "table2": "sampling", "table4": "iou_reward"}
    for table, section in sections.items():
        rows, missing = [], []
        for label, model in REPORT_CFG[section].items():
            if model not in ("none", "s1") and model not in runs:
                missing.append(f"{label} ({model} is not in gppo.runs)")
                continue
            rows.append(
                [label, [f"{EVAL}/{k}/metrics.json" for k in _eval_keys(model)]]
            )
        tables[table], notes[table] = rows, missing
    zero_shot = [[n, [f"{EVAL}/zeroshot/{n}/metrics.json"]] for n in ZERO_SHOT]
    zero_shot += [[n, [f"{EVAL}/api/{n}/metrics.json"]] for n in API_MODELS]
    tables["table1"], notes["table1"] = tables["table5"] + zero_shot, notes["table5"]
    return {"tables": tables, "notes": notes}


def report_metrics(wildcards=None):
    rows = report_rows()["tables"]
    return sorted(
        {path for table in rows.values() for _, paths in table for path in paths}
    )


def report_samples(wildcards=None):
    """Each evaluation's samples.parquet beside its metrics.json: the per-patient bootstrap
    resamples them."""
    return [str(Path(path).with_name("samples.parquet")) for path in report_metrics()]


def showcase(name: str) -> str:
    """A file of the showcase run's first seed (the run the report's figures follow)."""
    run = REPORT_CFG["showcase"]
    if run not in GPPO_CFG["runs"]:
        raise WorkflowError(
            f"report.showcase {run!r} is not in gppo.runs {GPPO_CFG['runs']}"
        )
    return f"{GPPO}/{run}/seed{GPPO_CFG['seeds'][0]}/{name}"


# Rule predict (rules/predict.smk): one new study, in the default target only once it is set.
PREDICT = config["predict"]
PREDICT_TARGETS = [f"{PREDICT['out_dir']}/prediction.json"] if PREDICT["study"] else []


# Not a file: without a study, Snakemake's missing-input message shows this line, no traceback.
PREDICT_UNSET = (
    "predict.study is not set: name the study folder in a config file or with --config"
)


def predict_study(wildcards):
    return PREDICT["study"] or PREDICT_UNSET


def predict_model_ref(wildcards=None):
    return PREDICT["model"] or showcase(f"phase{GPPO_CFG['phases']}/model")


def predict_model(wildcards):
    ref = predict_model_ref()
    return ref if looks_like_path(ref) else []


REPORT_TABLES = (
    "table1",
    "table2",
    "table4",
    "table5",
    # Patient-level companions: each patient's slices pooled into one answer.
    "table1_patient",
    "table2_patient",
    "table5_patient",
    "paper_table1",
    "paper_table5",
)
REPORT_FIGURES = (
    "confusion",
    "gallery",
    "training_curves",
    "model_inputs",
    "rl_health",
)
# The showcase run's GPPO figures, copied so results/report is whole (the HTML report already
# shows them under 4 GPPO).
REPORT_COPIES = ("quota_shares", "posteriors", "probe_accuracy")


def report_outputs() -> dict:
    """Every table as CSV (shown in the HTML report), Markdown and LaTeX; every figure as PNG."""
    outputs = {
        "summary": f"{REPORT}/report.md",
        "lineage": f"{REPORT}/manifest.json",
        "packages": f"{REPORT}/manifest.packages.txt",
    }
    for table in REPORT_TABLES:
        paper = table.startswith("paper")
        outputs[f"{table}_csv"] = report(
            f"{REPORT}/{table}.csv",
            caption=f"../report/{table}.rst",
            category="6 Paper (published, reference only)" if paper else "5 Evaluation",
            subcategory="Tables",
        )
        outputs[f"{table}_md"] = f"{REPORT}/{table}.md"
        outputs[f"{table}_tex"] = f"{REPORT}/{table}.tex"
    for figure in REPORT_FIGURES:
        outputs[figure] = report(
            f"{REPORT}/figures/{figure}.png",
            caption=f"../report/{figure}.rst",
            category="5 Evaluation",
            subcategory="Figures",
        )
    for figure in REPORT_COPIES:
        outputs[figure] = f"{REPORT}/figures/{figure}.png"
    outputs["claims_csv"] = report(
        f"{REPORT}/claims.csv",
        caption="../report/claims.rst",
        category="5 Evaluation",
        subcategory="Tables",
    )
    outputs["claims_md"] = f"{REPORT}/claims.md"
    outputs["rl_health_csv"] = report(
        f"{REPORT}/rl_health.csv",
        caption="../report/rl_health_table.rst",
        category="4 GPPO",
        subcategory="RL health",
    )
    outputs["targets_csv"] = report(
        f"{REPORT}/targets.csv",
        caption="../report/targets.rst",
        category="5 Evaluation",
        subcategory="Tables",
    )
    return outputs


def claims_quotas() -> dict:
    """Per sampling row the claims compare (TS, full): each seed's GPPO quota record."""
    sampling, runs = REPORT_CFG["sampling"], set(GPPO_CFG["runs"])
    return {
        row: [
            f"{GPPO}/{sampling[row]}/seed{s}/summary/quotas.csv"
            for s in GPPO_CFG["seeds"]
        ]
        for row in ("TS", "full")
        if sampling.get(row) in runs
    }
