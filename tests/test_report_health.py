"""The report's RL-health table and figure, from phase files laid out as the workflow writes them."""

from __future__ import annotations

import csv

import pytest

from cmr_rd.gppo.train import HEALTH_FIELDS, REWARD_FIELDS
from cmr_rd.report import health


def _write(path, fields, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _phase(root, run, seed, phase, valid, steps=3):
    folder = root / "results/gppo" / run / f"seed{seed}" / f"phase{phase}"
    rows = [
        {
            **dict.fromkeys(HEALTH_FIELDS, "0.1"),
            "phase": phase,
            "step": s,
            "format_valid": valid,
            "answer_correct": valid / 2,
            "completion_length": 100 + s,
        }  # fmt: skip
        for s in range(1, steps + 1)
    ]
    rewards = [
        {
            **dict.fromkeys(REWARD_FIELDS, "0"),
            "phase": phase,
            "step": 1,
            "class": c,
            "prompts": n,
            "answer_correct": share,
        }  # fmt: skip
        for c, n, share in (("HCM", 3, 1.0), ("LVNC", 1, 0.0))
    ]
    return (_write(folder / "health.csv", HEALTH_FIELDS, rows),
            _write(folder / "rewards.csv", REWARD_FIELDS, rewards))  # fmt: skip


def test_table_and_figure_per_run_and_phase(tmp_path):
    files = [
        _phase(tmp_path, run, seed, phase, valid)
        for run, seed, phase, valid in [
            ("sft-ts-iou", 1, 1, 0.8), ("sft-ts-iou", 1, 2, 1.0),
            ("sft-ts-iou", 2, 1, 0.6), ("sft-ts-iou", 2, 2, 0.8),
            ("base-ts-iou", 1, 1, 0.2), ("base-ts-iou", 1, 2, 0.4),
        ]
    ]  # fmt: skip
    data = health.load_health([h for h, _ in files])
    one = data[(data["run"] == "sft-ts-iou") & (data["seed"] == 1)]
    assert one["global_step"].tolist() == [1, 2, 3, 4, 5, 6]  # phase 2 follows phase 1
    table = health.health_table(data, health.class_shares([r for _, r in files]))
    row = table[(table["run"] == "sft-ts-iou") & (table["phase"] == 1)].iloc[0]
    assert row["seeds"] == 2 and row["steps"] == 3
    assert row["format_valid"] == pytest.approx(0.7)  # mean over both seeds' steps
    assert row["answer_correct"] == pytest.approx(0.35)
    assert row["correct_HCM"] == pytest.approx(1.0) and row["correct_LVNC"] == pytest.approx(0.0)
    assert health.overall_format_valid(data, ["sft-ts-iou"]) == pytest.approx(0.8)
    assert health.overall_format_valid(data, ["base-ts-iou"]) == pytest.approx(0.3)
    assert "| sft-ts-iou | 1 | 2 | 3 | 0.700 |" in health.markdown(table)
    out = tmp_path / "rl_health.png"
    health.plot_health(data, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_bad_files_are_named(tmp_path):
    stray = _write(tmp_path / "health.csv", HEALTH_FIELDS, [])
    with pytest.raises(health.HealthError, match="not a results/gppo/<run>/seed<n>/phase<t>/"):
        health.load_health([stray])
    short = _write(tmp_path / "results/gppo/r/seed1/phase1/health.csv", ["step", "kl"], [])
    with pytest.raises(health.HealthError, match=r"health.csv: missing column\(s\)"):
        health.load_health([short])
