"""RL health across the GPPO runs: the table and figure a user reads before any accuracy.

Read from each phase's `health.csv` (per optimizer step: the shares of rollouts that are
format-valid and answer-correct, and TRL's own logged metrics: zero-spread groups, completion
length and the share clipped at the cap, entropy, KL, clip ratios) and `rewards.csv` (the same
shares per class). Nothing is recomputed from completions here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cmr_rd.classes import CLASSES

_RUN_PATH = re.compile(r"(?P<run>[^/]+)/seed(?P<seed>\d+)/phase(?P<phase>\d+)/[^/]+$")
METRICS = {
    "format_valid": "format-valid rollouts",
    "answer_correct": "answer-correct rollouts",
    "zero_spread_fraction": "groups with zero reward spread",
    "completion_length": "completion length (tokens)",
    "clipped_fraction": "completions clipped at the cap",
    "entropy": "entropy",
    "kl": "KL to the reference",
    "clip_ratio": "clipped policy ratios",
}


class HealthError(ValueError):
    pass


def _where(path: str | Path) -> dict[str, object]:
    match = _RUN_PATH.search(Path(path).as_posix())
    if not match:
        raise HealthError(f"{path}: not a results/gppo/<run>/seed<n>/phase<t>/ file")
    return {"run": match["run"], "seed": int(match["seed"]), "phase": int(match["phase"])}


def load_health(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Every phase's health.csv, with run, seed and phase columns and a global step per run."""
    frames = []
    for path in paths:
        frame = pd.read_csv(path)
        missing = {"step", *METRICS} - set(frame.columns)
        if missing:
            raise HealthError(f"{path}: missing column(s) {sorted(missing)}")
        frames.append(frame.assign(**_where(path)))
    if not frames:
        raise HealthError("no health.csv files given")
    data = pd.concat(frames, ignore_index=True).sort_values(["run", "seed", "phase", "step"])
    # Each phase counts its steps from 1: the global step puts the phases end to end.
    data["global_step"] = data.groupby(["run", "seed"]).cumcount() + 1
    return data.reset_index(drop=True)


def class_shares(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Per run and phase, the answer-correct share of each class's rollouts (prompt-weighted)."""
    rows = []
    for path in paths:
        frame = pd.read_csv(path).assign(**_where(path))
        if "answer_correct" not in frame.columns:
            raise HealthError(f"{path}: missing column answer_correct")
        rows.append(frame)
    data = pd.concat(rows, ignore_index=True)
    data["weighted"] = data["answer_correct"] * data["prompts"]
    sums = data.groupby(["run", "phase", "class"])[["weighted", "prompts"]].sum()
    shares = (sums["weighted"] / sums["prompts"]).unstack("class")
    present = [c for c in CLASSES if c in shares.columns]
    return shares[present].add_prefix("correct_").reset_index()


def health_table(health: pd.DataFrame, classes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per run and phase: steps and seeds, then each metric's mean over steps and seeds."""
    grouped = health.groupby(["run", "phase"])
    table = grouped[list(METRICS)].mean()
    table.insert(0, "seeds", grouped["seed"].nunique())
    table.insert(1, "steps", grouped.size() // table["seeds"])
    table = table.reset_index()
    if classes is not None:
        table = table.merge(classes, on=["run", "phase"], how="left")
    return table


def overall_format_valid(health: pd.DataFrame, runs: Sequence[str]) -> float | None:
    """The format-valid share over every rollout of the given runs (each step has as many)."""
    part = health[health["run"].isin(list(runs))]
    return float(part["format_valid"].mean()) if len(part) else None


def plot_health(health: pd.DataFrame, out_png: str | Path) -> None:
    """One panel per metric, one line per run (mean over seeds), phase ends marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(health["run"].unique())
    fig, axes = plt.subplots(2, 4, figsize=(16, 7), constrained_layout=True)
    colours = plt.get_cmap("tab10")
    ends = health.groupby(["run", "seed", "phase"])["global_step"].max().groupby("phase").max()
    for ax, (metric, title) in zip(axes.flat, METRICS.items(), strict=True):
        for i, run in enumerate(runs):
            curve = health[health["run"] == run].groupby("global_step")[metric].mean()
            if curve.notna().any():
                ax.plot(curve.index, curve.to_numpy(dtype=float), color=colours(i), lw=1.4,
                        label=run)  # fmt: skip
        for end in ends.to_numpy()[:-1]:
            ax.axvline(end + 0.5, color="0.6", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step (phases end to end)", fontsize=8)
        if metric in ("format_valid", "answer_correct", "zero_spread_fraction",
                      "clipped_fraction"):  # fmt: skip
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("RL health per GPPO run (mean over seeds; dashed lines: phase ends)")
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown, shares and means to 2-3 decimals."""
    shown = table.copy()
    for column in shown.columns:
        if column not in ("run", "phase", "seeds", "steps") and np.issubdtype(
            shown[column].dtype, np.number
        ):
            digits = 1 if column == "completion_length" else 3
            shown[column] = shown[column].map(
                lambda v, d=digits: "" if pd.isna(v) else f"{v:.{d}f}"
            )
    head = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    body = "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in shown.to_numpy())
    return head + body
