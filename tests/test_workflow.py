"""The workflow end to end on a tiny synthetic cohort, through Snakemake itself."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from cmr_rd.classes import CLASSES
from cmr_rd.devtools import snakemake
from cmr_rd.ingest.burned_in import BURNED_IN_TAG, BURNED_IN_TEXT
from conftest import copy_run, listing

pytestmark = pytest.mark.slow


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def run(request, tiny_run, tmp_path):
    """The finished tiny run (conftest's `tiny_run`, built once per session). A test marked
    `edits_run` (it edits files or runs Snakemake there) gets its own copy, removed afterwards;
    any other test reads the shared run and fails if it wrote into it. So no test depends on
    another one having run before it, or not."""
    if request.node.get_closest_marker("edits_run"):
        work = copy_run(tiny_run, tmp_path / "wf")
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    before = listing(tiny_run)
    yield tiny_run
    changed = sorted(listing(tiny_run).items() ^ before.items())
    assert not changed, f"wrote into the shared run (mark it edits_run): {changed[:5]}"


def test_outputs_and_reconciliation(run):
    ingest = run / "results/ingest"
    summary = json.loads((ingest / "reconcile.json").read_text())
    assert summary["reconciled"] and summary["files_in"] == summary["files_accounted"]
    # The export is clean but for the burned-in overlays tiny.yaml plants (burned_in_share):
    # exactly those PSIR stacks are quarantined, and their patients keep their magnitude stack.
    planted = json.loads((run / "data/synthetic/phi_strings.json").read_text())["burned_in"]
    assert planted
    outcomes = pd.read_csv(run / "logs/ingest/file_outcomes.csv")
    quarantined = outcomes[outcomes["outcome"] == "quarantined"]
    assert set(quarantined["reason"]) <= {BURNED_IN_TAG, BURNED_IN_TEXT}
    folders = {Path(p).parts[-4].rsplit("_", 1)[-1] for p in quarantined["path"]}
    assert folders == {o["patient_id"] for o in planted}
    assert summary["quarantined"] == len(quarantined)
    assert summary["patients"] == 30
    for label in CLASSES:
        assert (ingest / f"qc/montage_{label}.png").is_file()
    counts = pd.read_csv(ingest / "counts.csv").set_index("class")
    assert (counts["test_patients"] == 2).all() and (counts["probe_patients"] == 1).all()


def test_manifest_rows_are_consistent(run):
    ingest = run / "results/ingest"
    manifest = pd.read_parquet(ingest / "manifest.parquet")
    assert len(manifest) == 30 * 3  # three central slices per patient
    assert set(manifest["label"]) == set(CLASSES)
    assert manifest.groupby("patient")["split"].nunique().max() == 1  # patient-level split
    assert set(manifest["source_kind"]) == {"dicom", "dicom-enhanced", "nifti"}
    planted = json.loads((run / "data/synthetic/phi_strings.json").read_text())["burned_in"]
    dicom = manifest[manifest["source_kind"] != "nifti"]
    # PSIR is preferred; the patients whose PSIR carries an overlay fall back to magnitude.
    assert (dicom["lge_kind"] == "magnitude").sum() == 3 * len(planted)
    assert set(dicom["lge_kind"]) == {"psir", "magnitude"}
    for row in manifest.itertuples():
        path = ingest / row.image
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
        with Image.open(path) as image:
            assert image.size == (256, 256) and image.mode == "L"
    mi = manifest[manifest["label"] == "MI"]
    assert mi["box"].notna().mean() > 0.5
    assert manifest[manifest["label"] != "MI"]["box"].isna().all()
    for box in mi["box"].dropna():
        x1, y1, x2, y2 = box
        assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256


def test_no_planted_phi_reaches_results(run):
    strings = json.loads((run / "data/synthetic/phi_strings.json").read_text())["strings"]
    needles = sorted({s.lower().encode() for s in strings if len(s) >= 4})
    assert len(needles) > 100
    hits = []
    for path in (run / "results").rglob("*"):
        name = path.relative_to(run).as_posix().lower().encode()
        content = path.read_bytes().lower() if path.is_file() else b""
        hits += [(str(path), n) for n in needles if n in name or n in content]
    assert hits == []
    # The same grep does find PHI where it was planted, so it can fail.
    source = (run / "data/synthetic/labels.csv").read_bytes().lower()
    assert sum(n in source for n in needles) > 50


def test_the_foundation_pool_shares_no_patient_report_or_image_with_the_cohort(run):
    """The tiny backbone's pretraining pool is the generator's other patients: no pseudonym,
    source identifier, report or image of the cohort is in it, and its classes are written
    nowhere; the foundation model is what `none` evaluates."""
    from cmr_rd.foundation.pool import PoolConfig, pool_jobs
    from cmr_rd.synth.cohort import plan_patient

    pool_dir = run / "results/foundation"
    findings = [json.loads(line) for line in (pool_dir / "findings.jsonl").read_text().splitlines()]
    params = json.loads((pool_dir / "manifest.json").read_text())["params"]["pool"]
    assert params["seed"] == 7 + 7001  # tests/configs/tiny.yaml: seed 7, pool seed null
    manifest = pd.read_parquet(run / "results/ingest/manifest.parquet")
    labels = pd.read_csv(run / "data/synthetic/labels.csv")
    assert not {f["patient"] for f in findings} & set(manifest["patient"])
    assert not {f["sha256"] for f in findings} & set(manifest["sha256"])
    plans = [plan_patient(job) for job in pool_jobs(PoolConfig(**params), pool_dir)]
    assert not {p.phi.mrn for p in plans} & set(labels["patient_id"])
    assert not {p.report for p in plans} & set(labels["report"])
    assert all("label" not in f for f in findings)
    questions = (pool_dir / "questions.jsonl").read_text()
    assert "disease" not in questions.lower() and '"label"' not in questions
    lineage = json.loads((run / "results/model/foundation/manifest.json").read_text())
    assert lineage["output_dirs"]["results/model/base"]["file_sha256"]  # every file of it


@pytest.mark.edits_run
def test_rerun_is_byte_identical_and_noop_does_nothing(run):
    args = ("--cores", "2", "--configfile", "config/tiny.yaml")
    noop = snakemake(run, *args)
    assert noop.returncode == 0 and "Nothing to be done" in noop.stdout + noop.stderr
    before = _digests(run / "results/ingest")
    # Ingestion alone (--until): the later stages' same bytes on a rerun are what test_slurm.py
    # (a second run against tiny_run) and the resume tests check.
    result = snakemake(run, *args, "--forcerun", "ingest", "--until", "ingest")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _rules_run(result) == {"ingest"}
    assert _digests(run / "results/ingest") == before


def test_lineage_manifest(run):
    lineage = json.loads((run / "results/ingest/manifest.json").read_text())
    assert lineage["rule"] == "ingest"
    assert lineage["deid_key_origin"] == "demo"
    assert lineage["params"]["deid"]["key_env"] and lineage["params"]["synthetic"] is True
    dicom = lineage["inputs"]["data/synthetic/dicom"]
    assert dicom["kind"] == "dir" and dicom["files"] > 100 and len(dicom["sha256"]) == 64
    assert set(lineage["outputs"]) >= {"results/ingest/manifest.parquet"}
    assert "data/synthetic/manifest.json" in {
        str(p.relative_to(run)) for p in (run / "data/synthetic").glob("manifest.json")
    }


def _rules_run(result) -> set[str]:
    text = result.stdout + result.stderr
    return set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", text, flags=re.M)) - {"all"}


def test_rewrite_qc_and_datasets(run):
    templates = [
        json.loads(x) for x in (run / "results/rewrite/templates.jsonl").read_text().splitlines()
    ]
    assert templates and all(t["status"] == "ok" for t in templates)
    accepted = (run / "results/rewrite/qc/accepted.jsonl").read_text().splitlines()
    assert len(accepted) >= len(templates) - 2
    sheet = pd.read_csv(run / "results/rewrite/qc/review_sheet.csv")
    assert len(sheet) == len(templates) and set(sheet["outcome"]) <= {"accepted", "rejected"}
    coldstart = [
        json.loads(x) for x in (run / "results/datasets/coldstart.jsonl").read_text().splitlines()
    ]
    assert len(coldstart) == len(accepted)
    assert coldstart[0]["messages"][1]["content"][0]["text"].startswith("<think>")
    manifest = pd.read_parquet(run / "results/ingest/manifest.parquet")
    for name, split in (("rl_prompts", "train"), ("probe", "probe")):
        rows = (run / f"results/datasets/{name}.jsonl").read_text().splitlines()
        assert len(rows) == (manifest["split"] == split).sum()
    # datasets.test_slices_per_patient: 1 (the default): one slice per test patient, the central.
    test = [json.loads(x) for x in (run / "results/datasets/test.jsonl").read_text().splitlines()]
    tested = manifest[manifest["split"] == "test"].sort_values(["patient", "slice_rank"])
    assert sorted(r["patient"] for r in test) == sorted(tested["patient"].unique())
    nearest = tested["slice_position_mm"].abs().groupby(tested["patient"]).idxmin()  # ties: lower
    central = tested.loc[nearest]
    assert {r["id"] for r in test} == {
        f"{p}_z{k:02d}" for p, k in zip(central["patient"], central["slice_rank"], strict=True)
    }
    alignment = (run / "results/datasets/alignment.jsonl").read_text().splitlines()
    assert len(alignment) > 0 and all(json.loads(x)["source"] == "cmr" for x in alignment)


@pytest.mark.edits_run
def test_editing_the_review_sheet_reruns_qc_and_downstream_only(run):
    accepted = [
        json.loads(x) for x in (run / "results/rewrite/qc/accepted.jsonl").read_text().splitlines()
    ]
    victim = accepted[0]["id"]
    (run / "config/review_decisions.csv").write_text(
        f"item_id,decision,comment\n{victim},reject,wording too vague\n"
    )
    args = ("--cores", "2", "--configfile", "config/tiny.yaml")
    planned = _rules_run(snakemake(run, *args, "--dry-run"))
    # Up to the cold-start dataset: what follows it is then stale, which a dry run shows.
    result = snakemake(run, *args, "--until", "coldstart_dataset")
    assert result.returncode == 0, result.stderr[-3000:]
    ran = _rules_run(result)
    assert {"rewrite_qc", "coldstart_dataset"} <= ran
    upstream = {
        "synthesize_cohort",
        "ingest",
        "rewrite_reports",
        "prompt_datasets",
        "alignment_dataset",
    }
    assert not (ran | planned) & upstream, ran | planned
    assert {"rewrite_qc", "coldstart_dataset", "sft", "gppo_train", "evaluate"} <= planned
    stale = _rules_run(snakemake(run, *args, "--dry-run"))
    assert {"sft", "gppo_train", "evaluate"} <= stale and not stale & (upstream | ran), stale
    after = [
        json.loads(x)["id"]
        for x in (run / "results/rewrite/qc/accepted.jsonl").read_text().splitlines()
    ]
    assert victim not in after and len(after) == len(accepted) - 1
    coldstart = (run / "results/datasets/coldstart.jsonl").read_text()
    assert victim not in coldstart
    sheet = pd.read_csv(run / "results/rewrite/qc/review_sheet.csv").set_index("item_id")
    assert sheet.loc[victim, "outcome"] == "rejected"
    assert sheet.loc[victim, "reason"] == "reviewer: wording too vague"
    (run / "config/review_decisions.csv").unlink()


@pytest.mark.edits_run
def test_dvc_yaml_mirrors_the_rule_graph_after_a_run(run):
    """After a run (the QC checkpoint settled), dvc.yaml generated for this config has exactly
    the stages and edges of Snakemake's rule graph."""
    from cmr_rd.dvcgen import generate
    from test_dvc_mirror import snakemake_graph, yaml_graph

    done = snakemake(run, "--cores", "2", "--configfile", "config/tiny.yaml")  # checkpoint settled
    assert done.returncode == 0, done.stderr[-2000:]
    (run / "dvc.yaml").write_text(generate(run, ["config/tiny.yaml"]))
    assert yaml_graph(run) == snakemake_graph(run, "--configfile", "config/tiny.yaml")


GPPO_RUN = "results/gppo/sft-ts-iou/seed1"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_gppo_phase_chain(run):
    """Each phase's artifacts exist and chain: quotas from the previous posterior, batches as
    planned (read from inside the trainer), an exact posterior update, the run's summary."""
    root = run / GPPO_RUN
    # gppo.prior start_probe: phase 1 starts from Beta(1, 1) plus the cold start's probe counts.
    check = json.loads((run / "results/model/sft/seed1/probe_check.json").read_text())
    prior = {
        "alpha": {c: 1.0 + check["per_class_correct"][c] for c in CLASSES},
        "beta": {c: 1.0 + check["per_class_n"][c] - check["per_class_correct"][c] for c in CLASSES},
    }
    for phase in (1, 2, 3):
        d = root / f"phase{phase}"
        quotas = json.loads((d / "quotas.json").read_text())
        assert quotas["prior"] == prior
        assert sum(quotas["quotas"].values()) == quotas["batch_size"] == 4
        dataset = _jsonl(d / "dataset.jsonl")
        assert len(dataset) == quotas["n_batches"] * 4 == 8
        planned = [[r["id"] for r in dataset if r["batch"] == k] for k in range(2)]
        seen = _jsonl(d / "batches.jsonl")
        assert [sorted(b["prompt_ids"]) for b in seen] == [sorted(p) for p in planned]
        posterior = json.loads((d / "posterior.json").read_text())
        for c in CLASSES:
            n_plus, n_minus = posterior["counts"]["correct"][c], posterior["counts"]["wrong"][c]
            assert posterior["posterior"]["alpha"][c] == prior["alpha"][c] + n_plus
            assert posterior["posterior"]["beta"][c] == prior["beta"][c] + n_minus
        prior = posterior["posterior"]
        train = json.loads((d / "train.manifest.json").read_text())
        # The phase trained from the checkpoint the previous stage published.
        parent, model = "results/model/sft/seed1/manifest.json", "results/model/sft/seed1/final"
        if phase > 1:
            parent = f"{GPPO_RUN}/phase{phase - 1}/train.manifest.json"
            model = f"{GPPO_RUN}/phase{phase - 1}/model"
        published = json.loads((run / parent).read_text())["output_dirs"][model]["sha256"]
        assert train["wildcards"]["phase"] == str(phase)
        assert train["input_names"]["model"] == model
        assert train["input_names"]["ref"] == "results/model/sft/seed1/final"  # KL reference
        assert train["inputs"][model]["sha256"] == published
    summary = root / "summary"
    probe = pd.read_csv(summary / "probe_accuracy.csv")
    assert list(probe["stage"]) == ["sft", "phase1", "phase2", "phase3"]
    phases = pd.read_csv(summary / "phases.csv")
    assert len(phases) == 3 * len(CLASSES) and "zero_spread_fraction" in phases
    for name in ("quota_shares", "posteriors", "reward_curves", "probe_accuracy"):
        assert (summary / f"{name}.png").stat().st_size > 1000


@pytest.mark.edits_run
def test_rerunning_one_gppo_phase_reruns_later_phases_only(run):
    root = run / GPPO_RUN
    untouched = [
        root / "phase1/model/config.json",
        root / "phase1/posterior.json",
        root / "phase2/quotas.json",
        run / "results/model/sft/seed1/final/config.json",
        run / "results/datasets/rl_prompts.jsonl",
    ]
    before = {p: p.stat().st_mtime_ns for p in untouched}
    redone = [root / "phase2/posterior.json", root / "phase3/quotas.json"]
    redone_before = {p: p.stat().st_mtime_ns for p in redone}
    target = f"{GPPO_RUN}/phase2/train_summary.json"
    result = snakemake(
        run, "--cores", "2", "--configfile", "config/tiny.yaml", "--forcerun", target
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _rules_run(result) == {
        "gppo_train",
        "gppo_posterior",
        "gppo_quota",
        "gppo_summary",
        "evaluate",
        "judge",  # it rates the evaluation's chains
        "report_tables",
        "dvc_commit",  # the last rule of every run that changed something
    }
    # Only this run's evaluation is redone; none, s1/seed1 and the other run keep theirs.
    assert re.findall(r"wildcards: model=(\S+)", result.stdout + result.stderr) == [
        "sft-ts-iou/seed1"
    ]
    jobs = re.findall(
        r"wildcards: run=sft-ts-iou, seed=1, phase=(\d)", result.stdout + result.stderr
    )
    assert sorted(set(jobs)) == ["2", "3"] and "1" not in jobs
    assert {p: p.stat().st_mtime_ns for p in untouched} == before
    assert all(p.stat().st_mtime_ns > redone_before[p] for p in redone)


EVALUATED = ("none", "s1/seed1", "sft-ts-iou/seed1", "sft-static-iou/seed1")


def test_evaluations_are_computed_from_their_samples(run):
    """Each evaluation covers the whole test split, and its metrics are exactly what the metric
    code computes from its own per-sample records (no number comes from anywhere else)."""
    from cmr_rd.evaluate.metrics import compute_metrics

    test = _jsonl(run / "results/datasets/test.jsonl")
    for key in EVALUATED:
        d = run / "results/eval" / key
        samples = pd.read_parquet(d / "samples.parquet")
        assert list(samples["id"]) == [r["id"] for r in test]
        assert list(samples["label"]) == [r["label"] for r in test]
        metrics = json.loads((d / "metrics.json").read_text())
        assert metrics["n"] == len(test) and metrics["model"] == key
        recomputed = json.loads(json.dumps(compute_metrics(samples)))
        assert {k: metrics[k] for k in recomputed} == recomputed
        scores = samples[[f"score_{c}" for c in CLASSES]].to_numpy()
        assert abs(scores.sum(axis=1) - 1).max() < 1e-6
        lineage = json.loads((d / "manifest.json").read_text())
        assert lineage["rule"] == "evaluate" and lineage["wildcards"]["model"] == key
    final = json.loads((run / "results/eval/s1/seed1/manifest.json").read_text())
    sft = json.loads((run / "results/model/sft/seed1/manifest.json").read_text())["output_dirs"]
    sha = sft["results/model/sft/seed1/final"]["sha256"]
    assert final["inputs"]["results/model/sft/seed1/final"]["sha256"] == sha


def test_report_tables_are_the_evaluations(run):
    report = run / "results/report"
    metrics = {
        k: json.loads((run / "results/eval" / k / "metrics.json").read_text()) for k in EVALUATED
    }
    table5 = pd.read_csv(report / "table5.csv").set_index("config")
    assert list(table5.index) == ["none", "S1 only", "S1+S2"]  # S2 only: base-ts-iou not run
    for label, key in (("none", "none"), ("S1 only", "s1/seed1"), ("S1+S2", "sft-ts-iou/seed1")):
        assert table5.loc[label, "ACC_mean"] == pytest.approx(metrics[key]["accuracy"], abs=1e-6)
        assert table5.loc[label, "F1_mean"] == pytest.approx(metrics[key]["macro_f1"], abs=1e-6)
    table1 = pd.read_csv(report / "table1.csv").set_index("model")
    for c in CLASSES:
        expected = metrics["sft-ts-iou/seed1"]["per_class_accuracy"][c]
        assert table1.loc["S1+S2", f"{c}_mean"] == pytest.approx(expected, abs=1e-6)
    # A zero-shot model given by path is a Table 1 row; the same weights as `none` through the
    # other route give the same numbers.
    zero_shot = json.loads((run / "results/eval/zeroshot/base-by-path/metrics.json").read_text())
    assert list(table1.index) == ["none", "S1 only", "S1+S2", "base-by-path"]
    drop = ("model", "checkpoint")
    assert {k: v for k, v in zero_shot.items() if k not in drop} == {
        k: v for k, v in metrics["none"].items() if k not in drop
    }
    table2 = pd.read_csv(report / "table2.csv")
    assert list(table2["strategy"]) == ["TS", "static"]
    assert "full (sft-full-iou is not in gppo.runs)" in (report / "table2.md").read_text()
    assert list(pd.read_csv(report / "table4.csv")["iou_reward"]) == ["on"]
    # The paper's numbers sit in their own tables and never in ours.
    paper5 = pd.read_csv(report / "paper_table5.csv")
    assert 0.610 in set(paper5["ACC_mean"].round(3))
    assert 0.610 not in set(table5["ACC_mean"].round(6))
    summary = (report / "report.md").read_text()
    assert "Table 5" in summary and "published" in summary
    # The claims are judged from these same rows; one seed per row here, so nothing is shown.
    checked = pd.read_csv(report / "claims.csv").set_index("claim")
    row = checked.loc["S1 only > none on ACC (Table 5)"]
    difference = table5.loc["S1 only", "ACC_mean"] - table5.loc["none", "ACC_mean"]
    assert row["difference"] == pytest.approx(difference, abs=1e-6)
    assert set(checked["verdict"]) == {"not shown"}
    # The demo's targets come from the same evaluations: one seed here, so the seed counts fail.
    targets = pd.read_csv(report / "targets.csv").set_index("target")
    assert set(targets["verdict"]) <= {"met", "not met"}
    assert targets.loc["seeds on the S1+S2 row >= 3", "verdict"] == "not met"
    assert targets.loc["S1+S2 ACC >= S1 only + 0.10", "required"] == pytest.approx(
        table5.loc["S1 only", "ACC_mean"] + 0.10, abs=1e-6
    )
    assert "The demo's targets" in summary
    assert "Claims of the paper, checked against our tables" in summary
    assert "\\toprule" in (report / "table5.tex").read_text()
    for name in ("confusion", "gallery", "training_curves", "quota_shares", "posteriors"):
        with Image.open(report / f"figures/{name}.png") as image:
            assert image.width > 300 and image.height > 200


@pytest.mark.edits_run
def test_snakemake_html_report_holds_the_tables_and_figures(run):
    """`snakemake --report` renders a self-contained HTML file; every table and figure is
    embedded byte for byte, with its caption."""
    import base64

    result = snakemake(
        run, "--configfile", "config/tiny.yaml", "--report", "results/report/report.html"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    html = (run / "results/report/report.html").read_text()
    embedded = dict(re.findall(r'"data:[^;]+;charset=utf8;filename=([^;]+);base64,([^"]+)"', html))
    report = run / "results/report"
    tables = ("table1.csv", "table2.csv", "table4.csv", "table5.csv", "paper_table5.csv")
    for name in (*tables, "claims.csv", "targets.csv"):
        assert base64.b64decode(embedded[name]) == (report / name).read_bytes(), name
    for name in ("confusion.png", "gallery.png", "training_curves.png"):
        assert base64.b64decode(embedded[name]) == (report / "figures" / name).read_bytes()
    assert "quota_shares.png" in embedded and "montage_MI.png" in embedded
    for caption in ("Table 5. Ablation", "Quota evolution", "reasoning chain"):
        assert caption in html, caption


def test_audit_walks_a_report_table_back_to_the_raw_cohort(run):
    """`python -m cmr_rd.audit` on a final table: every link checks out, and the walk ends at
    the synthetic cohort's DICOM tree with the hash it has on disk."""
    import subprocess
    import sys

    from cmr_rd.lineage import sha256_tree

    result = subprocess.run(
        [sys.executable, "-m", "cmr_rd.audit", "results/report/table5.csv", "--json"],
        cwd=run,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    tree = json.loads(result.stdout)
    assert tree["rule"] == "report_tables" and tree["status"] == "ok"
    assert tree["environment"]["packages_sha256"]
    nodes, stack = {}, [tree]
    while stack:
        node = stack.pop()
        nodes.setdefault(node["path"], node)
        stack.extend(node.get("inputs") or [])
    for rule in ("evaluate", "gppo_train", "sft", "foundation", "foundation_data", "build_backbone",
                 "ingest", "synthesize_cohort"):  # fmt: skip
        assert any(n.get("rule") == rule for n in nodes.values()), rule
    dicom = nodes["data/synthetic/dicom"]
    assert dicom["rule"] == "synthesize_cohort"
    assert dicom["sha256"] == sha256_tree(run / "data/synthetic/dicom")[0]
    text = subprocess.run(
        [sys.executable, "-m", "cmr_rd.audit", "results/report/table5.csv"],
        cwd=run,
        capture_output=True,
        text=True,
    ).stdout
    assert "data/synthetic/dicom" in text and "rule report_tables" in text


# The first run of the lock test: the workflow plus one job that waits for the test's word, so
# that the run holds the lock however long the second one takes to start.
HOLD_SNAKEFILE = """\
include: "{snakefile}"


rule hold_the_lock:
    output:
        "{held}",
    shell:
        "while [ ! -e {release} ]; do sleep 0.1; done; touch {{output}}"
"""


@pytest.mark.edits_run
def test_a_second_snakemake_on_the_same_workdir_is_refused(run, tmp_path):
    """Snakemake's lock: while one invocation runs, another on the same folder stops with a
    clear message instead of writing the same outputs; the first one finishes unharmed. The
    first also runs a job that waits until the second has been refused, so the outcome does not
    depend on how long either takes to start or to run its jobs."""
    import os
    import subprocess
    import sys
    import time

    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    target = "results/eval/s1/seed1/metrics.json"
    held, release = tmp_path / "held", tmp_path / "release"
    hold = tmp_path / "hold.smk"
    hold.write_text(HOLD_SNAKEFILE.format(snakefile=run / "Snakefile", held=held, release=release))
    # Targets first: --configfile and --forcerun take every value that follows them. Both runs
    # force the evaluation, so the second one would write what the first one is writing.
    args = ["--cores", "1", "--configfile", "config/tiny.yaml", "--forcerun", target]
    log = tmp_path / "first.log"
    with log.open("w") as out:
        first = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "--snakefile", str(hold), target, str(held), *args],
            cwd=run, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not any((run / ".snakemake/locks").glob("*")):
            assert first.poll() is None, f"the first run ended: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.1)
        second = snakemake(run, target, *args)
        assert first.poll() is None and not held.exists(), "the first run did not wait"
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stdout + second.stderr
    finally:
        release.touch()
        first.wait(timeout=600)
    assert first.returncode == 0, log.read_text()[-3000:]
    assert held.is_file() and (run / target).is_file()
    assert not any((run / ".snakemake/locks").glob("*"))


@pytest.mark.edits_run
def test_a_corrupted_checkpoint_stops_the_next_stage_with_its_name(run):
    """A checkpoint edited after its stage wrote it is caught by hash before it is used."""
    weights = run / "results/model/sft/seed1/final/model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        target = "results/eval/s1/seed1/metrics.json"
        result = snakemake(
            run, target, "--cores", "1", "--configfile", "config/tiny.yaml", "--forcerun", target
        )
        assert result.returncode != 0
        log = (run / "logs/eval/s1/seed1.log").read_text()
        assert "changed: results/model/sft/seed1/final/model.safetensors" in log
        assert "Traceback" not in log
    finally:
        weights.write_bytes(original)


@pytest.mark.edits_run
def test_an_evaluation_setting_reruns_evaluation_judge_and_report_only(run):
    import yaml

    config = yaml.safe_load((run / "config/tiny.yaml").read_text())
    config["evaluate"]["score_batch_size"] = 3
    # Key order kept: Snakemake compares params as ordered dicts, so reordering reruns jobs.
    (run / "config/tiny_eval.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(run, "--cores", "2", "--configfile", "config/tiny_eval.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _rules_run(result) == {"evaluate", "judge", "report_tables", "dvc_commit"}
    assert "warm interpreter not started" not in result.stderr  # the evaluations fork from it
    again = snakemake(run, "--cores", "2", "--configfile", "config/tiny_eval.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
    # The bootstrap's resamples are the report's alone: no evaluation or rating is redone.
    config["evaluate"]["bootstrap"] = 200
    (run / "config/tiny_eval.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = snakemake(run, "--cores", "2", "--configfile", "config/tiny_eval.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _rules_run(result) == {"report_tables", "dvc_commit"}
    assert "warm interpreter not started" in result.stderr  # read from Snakemake's DAG


# These tests retrain SFT under a longer schedule, which makes the stage-1 outputs differ from
# tiny.yaml's: each works on its own copy of the run (edits_run), so no other test sees that.
PREEMPT_STEPS = 40
SFT_RUNS = "results/model/sft/seed1/runs"


def _descendants(pid: int) -> list[int]:
    """Every process below pid (children of all its threads: Snakemake starts jobs from one)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        for child in map(int, children):
            found += [child, *_descendants(child)]
    return found


@pytest.mark.edits_run
@pytest.mark.parametrize("fault", ["sigterm_job", "sigkill_all"])
def test_a_killed_training_job_resumes_from_its_checkpoint_on_rerun(run, fault):
    """sigterm_job: what a scheduler does on preemption or time limit, SIGTERM to every process
    of the job. The trainer checkpoints, the job fails with 143, and Snakemake names its log.
    sigkill_all: the node is lost, Snakemake included. Its lock stays (`--unlock` clears it)
    and the job's outputs are marked incomplete; the profile's rerun-incomplete reruns them.

    Either way the rerun resumes from the checkpoint, and the stage ends byte-identical to a run
    that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    config = yaml.safe_load((run / "config/tiny.yaml").read_text())
    config["model"]["sft"].update(max_steps=PREEMPT_STEPS, save_steps=2)
    (run / "config/tiny_preempt.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    args = [
        "results/model/sft/seed1/final",
        "--cores",
        "2",
        "--configfile",
        "config/tiny_preempt.yaml",
    ]
    for folder in (run / SFT_RUNS).iterdir():  # an earlier case's finished run would be reused
        if json.loads((folder / "settings.json").read_text())["max_steps"] == PREEMPT_STEPS:
            shutil.rmtree(folder)
    known = set((run / SFT_RUNS).iterdir())

    head = subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args, "--forcerun", "sft",
         "--workflow-profile", "profiles/local"],
        cwd=run, env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not any(
        folder not in known and any(folder.glob("checkpoints/checkpoint-*/trainer_state.json"))
        for folder in (run / SFT_RUNS).iterdir()
    ):
        assert head.poll() is None, head.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    if fault == "sigterm_job":
        for pid in _descendants(head.pid):
            os.kill(pid, signal.SIGTERM)
    else:
        os.killpg(head.pid, signal.SIGKILL)
    output, _ = head.communicate(timeout=300)
    assert head.returncode != 0
    assert not (run / "results/model/sft/seed1/final").exists()
    if fault == "sigterm_job":
        assert "Error in rule sft" in output and "logs/model/sft/seed1.log" in output
        log = (run / "logs/model/sft/seed1.log").read_text()
        assert "preempted (SIGTERM) at step" in log and "Traceback" not in log
    else:
        assert any((run / ".snakemake/incomplete").iterdir())
        locked = snakemake(run, *args)
        assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
        assert snakemake(run, *args, "--unlock").returncode == 0

    rerun = snakemake(run, *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((run / "results/model/sft/seed1/train_summary.json").read_text())
    assert 0 < summary["resumed_from_step"] < PREEMPT_STEPS == summary["steps"]
    loss_steps = [int(line.split(",")[0]) for line in
                  (run / "results/model/sft/seed1/loss.csv").read_text().splitlines()[1:]]  # fmt: skip
    assert loss_steps == sorted(set(loss_steps)) and loss_steps[-1] == PREEMPT_STEPS
    resumed = (run / "results/model/sft/seed1/final/model.safetensors").read_bytes()

    for folder in set((run / SFT_RUNS).iterdir()) - known:
        shutil.rmtree(folder)
    whole = snakemake(run, *args, "--forcerun", "sft")
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert (
        json.loads((run / "results/model/sft/seed1/train_summary.json").read_text())[
            "resumed_from_step"
        ]
        == 0
    )
    assert (run / "results/model/sft/seed1/final/model.safetensors").read_bytes() == resumed
