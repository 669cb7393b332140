"""One GPPO run (variant x seed) as tables: probe accuracy per stage, quotas, rewards, phases.

Everything is read from the phase artifacts the rules wrote; nothing is recomputed or typed in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cmr_rd.classes import CLASSES
from cmr_rd.gppo.rewards import COMPONENTS


def _json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def probe_table(sft_probe: str | Path, probes: list[str | Path]) -> pd.DataFrame:
    """Per-class probe accuracy after SFT and after each phase, with macro mean and format rate."""
    rows = []
    for stage, path in [("sft", sft_probe)] + [(f"phase{t}", p) for t, p in enumerate(probes, 1)]:
        report = _json(path)
        per_class = report["per_class_accuracy"]
        row = {"stage": stage, **{c: per_class.get(c) for c in CLASSES}}
        present = [v for v in per_class.values() if v is not None]
        row["macro"] = sum(present) / len(present) if present else None
        row["accuracy"] = report["accuracy"]
        row["valid_format_rate"] = report["valid_format_rate"]
        rows.append(row)
    return pd.DataFrame(rows).round(6)


def quota_table(quotas: list[str | Path]) -> pd.DataFrame:
    """One row per phase and class: the draw, the weight, the quota, and how the pool was used."""
    rows = []
    for path in quotas:
        record = _json(path)
        theta = record.get("theta") or {}
        for c in CLASSES:
            rows.append(
                {
                    "phase": record["phase"],
                    "class": c,
                    "theta": theta.get(c),
                    "weight": record["weights"][c],
                    "share": record["quotas"][c] / record["batch_size"],
                    "quota": record["quotas"][c],
                    "pool_size": record["pool_sizes"][c],
                    "mode": record["modes"][c],
                    "draws": record["draws"][c],
                    "distinct": record["distinct"][c],
                    "refills": record["refills"][c],
                }
            )
    return pd.DataFrame(rows).round(6)


def reward_table(rewards: list[str | Path]) -> pd.DataFrame:
    """rewards.csv of every phase, concatenated (one row per optimizer step and class)."""
    return pd.concat([pd.read_csv(p) for p in rewards], ignore_index=True)


def phase_table(
    summaries: list[str | Path], posteriors: list[str | Path], quotas: list[str | Path]
) -> pd.DataFrame:
    """Per phase and class: quota, mean rewards, zero-spread fraction, probe counts, posterior."""
    rows = []
    for summary_path, posterior_path, quota_path in zip(summaries, posteriors, quotas, strict=True):
        summary, posterior, quota = map(_json, (summary_path, posterior_path, quota_path))
        rewards = summary.get("reward_summary") or {}
        for c in CLASSES:
            got = rewards.get(c, {})
            rows.append(
                {
                    "phase": summary["phase"],
                    "class": c,
                    "quota": quota["quotas"][c],
                    "prompts_trained": got.get("prompts", 0),
                    **{f"{k}_mean": got.get(f"{k}_mean") for k in (*COMPONENTS, "total")},
                    "zero_spread_fraction": got.get("zero_spread_fraction"),
                    "probe_correct": posterior["counts"]["correct"].get(c),
                    "probe_wrong": posterior["counts"]["wrong"].get(c),
                    "alpha": posterior["posterior"]["alpha"][c],
                    "beta": posterior["posterior"]["beta"][c],
                    "posterior_mean": posterior["posterior_mean"][c],
                }
            )
    return pd.DataFrame(rows).round(6)
