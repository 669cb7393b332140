"""benchmarks/token_readout.py on the suite's tiny run, and without a finished run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cmr_rd.jsonl import read_jsonl

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks/token_readout.py"


def _run(workdir: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--workdir", str(workdir), "--out", str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        timeout=600,
    )


@pytest.mark.slow
def test_readout_and_answers_cover_every_probe_slice(tiny_run, tmp_path):
    result = _run(tiny_run, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "token_readout.json").read_text())
    probe = Counter(r["label"] for r in read_jsonl(tiny_run / "results/datasets/probe.jsonl"))
    assert report["probe_slices"] == sum(probe.values())
    rows = report["rows"]
    cold_starts = sorted(tiny_run.glob("results/model/sft/seed*/final"))
    assert [r["checkpoint"] for r in rows] == ["foundation"] + [
        f"cold start {p.parent.name}" for p in cold_starts
    ]
    assert "answers" not in rows[0]  # the foundation never saw the diagnostic format
    for row in rows:
        for kind in ("mean_token", "all_tokens"):
            recall = row["readout"][kind]
            assert set(recall) == set(probe) and all(0.0 <= v <= 1.0 for v in recall.values())
    for row in rows[1:]:
        # every probe slice is answered once, as a class, "none" or "invalid"
        assert {c: sum(n.values()) for c, n in row["answers"].items()} == dict(probe)
        labels = {k for n in row["answers"].values() for k in n}
        assert labels <= {*probe, "HCM", "DCM", "CAM", "LVNC", "MI", "NOR", "none", "invalid"}
    table = (tmp_path / "token_readout.md").read_text()
    assert "| foundation |" in table and "answered" in table
    # Nothing written into the run it read.
    assert not (tiny_run / "results/benchmarks/token_readout.json").exists()


def test_without_a_finished_run_it_names_what_is_missing(tmp_path):
    result = _run(tmp_path, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no finished run" in result.stdout and "rl_prompts.jsonl" in result.stdout
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
