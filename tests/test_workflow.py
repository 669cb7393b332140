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
from cmr_rd.devtools import copy_workflow, snakemake

pytestmark = pytest.mark.slow


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory, repo):
    work = copy_workflow(tmp_path_factory.mktemp("wf"), repo)
    shutil.copy(repo / "tests/configs/tiny.yaml", work / "config/tiny.yaml")
    result = snakemake(work, "--cores", "2", "--configfile", "config/tiny.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    return work


def test_outputs_and_reconciliation(run):
    ingest = run / "results/ingest"
    summary = json.loads((ingest / "reconcile.json").read_text())
    assert summary["reconciled"] and summary["files_in"] == summary["files_accounted"]
    assert summary["quarantined"] == 0  # the synthetic export is clean
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
    assert (manifest[manifest["source_kind"] != "nifti"]["lge_kind"] == "psir").all()
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


def test_rerun_is_byte_identical_and_noop_does_nothing(run):
    before = _digests(run / "results/ingest")
    result = snakemake(
        run, "--cores", "2", "--configfile", "config/tiny.yaml", "--forcerun", "ingest"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    after = _digests(run / "results/ingest")
    assert after == before
    noop = snakemake(run, "--cores", "2", "--configfile", "config/tiny.yaml")
    assert noop.returncode == 0 and "Nothing to be done" in noop.stdout + noop.stderr


def test_lineage_manifest(run):
    lineage = json.loads((run / "results/ingest/manifest.json").read_text())
    assert lineage["rule"] == "ingest"
    assert lineage["params"]["deid_key_origin"] == "demo"
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
    for name, split in (("rl_prompts", "train"), ("probe", "probe"), ("test", "test")):
        rows = (run / f"results/datasets/{name}.jsonl").read_text().splitlines()
        manifest = pd.read_parquet(run / "results/ingest/manifest.parquet")
        assert len(rows) == (manifest["split"] == split).sum()
    alignment = (run / "results/datasets/alignment.jsonl").read_text().splitlines()
    assert len(alignment) > 0 and all(json.loads(x)["source"] == "cmr" for x in alignment)


def test_editing_the_review_sheet_reruns_qc_and_downstream_only(run):
    accepted = [
        json.loads(x) for x in (run / "results/rewrite/qc/accepted.jsonl").read_text().splitlines()
    ]
    victim = accepted[0]["id"]
    (run / "config/review_decisions.csv").write_text(
        f"item_id,decision,comment\n{victim},reject,wording too vague\n"
    )
    result = snakemake(run, "--cores", "2", "--configfile", "config/tiny.yaml")
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
    assert not ran & upstream, ran
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


def test_dvc_yaml_mirrors_the_rule_graph_after_a_run(run, repo):
    from test_dvc_mirror import dvc_graph, snakemake_graph

    done = snakemake(run, "--cores", "2", "--configfile", "config/tiny.yaml")  # checkpoint settled
    assert done.returncode == 0, done.stderr[-2000:]
    assert dvc_graph(repo) == snakemake_graph(run, "--configfile", "config/tiny.yaml")
