"""The paper's claims, checked against our own tables: one row per claim, verdict from the data.

A claim compares two of our rows ("S1+S2" against "S2 only" on ACC, "TS" against "full" on CAM
accuracy, ...). The verdict is `holds` when the mean difference exceeds the combined standard
deviation over seeds (sqrt(std_a^2 + std_b^2)), and `not shown` otherwise, including when either
side has fewer than two seeds: a single run has no spread to weigh a difference against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from cmr_rd.report.tables import summarise

HOLDS, NOT_SHOWN = "holds", "not shown"
FIG5_CLASSES = ("CAM", "LVNC")

# (table, left row, right row, metric column, the paper's claim in words)
TABLE_CLAIMS: tuple[tuple[str, str, str, str, str], ...] = (
    *(
        ("table5", left, right, metric, f"{left} > {right} on {metric} (Table 5)")
        for metric in ("ACC", "F1", "AUC")
        for left, right in (("S1+S2", "S2 only"), ("S2 only", "S1 only"), ("S1 only", "none"))
    ),
    *(
        ("table2", "TS", other, cls, f"TS > {other} on {cls} accuracy (Table 2)")
        for other in ("static", "full")
        for cls in FIG5_CLASSES
    ),
    ("table4", "on", "off", "mean_IoU", "IoU reward on > off on MI mean IoU (Table 4)"),
)
COLUMNS = [
    "claim", "left_mean", "left_std", "left_seeds", "right_mean", "right_std", "right_seeds",
    "difference", "combined_std", "verdict",
]  # fmt: skip


def _side(table: pd.DataFrame, row: str, metric: str) -> tuple[float | None, float | None, int]:
    label = table.columns[0]
    match = table[table[label] == row]
    if match.empty or f"{metric}_mean" not in table.columns:
        return None, None, 0
    record = match.iloc[0]
    mean, std = record[f"{metric}_mean"], record[f"{metric}_std"]
    mean = None if pd.isna(mean) else float(mean)
    return mean, None if pd.isna(std) else float(std), int(record["seeds"])


def judge(left: tuple, right: tuple) -> dict:
    """Difference, combined std and verdict for two (mean, std, seeds) sides."""
    (lm, ls, ln), (rm, rs, rn) = left, right
    out = {"left_mean": lm, "left_std": ls, "left_seeds": ln,
           "right_mean": rm, "right_std": rs, "right_seeds": rn}  # fmt: skip
    if lm is None or rm is None:
        return {**out, "difference": None, "combined_std": None, "verdict": NOT_SHOWN}
    difference = lm - rm
    if ln < 2 or rn < 2 or ls is None or rs is None:
        return {**out, "difference": difference, "combined_std": None, "verdict": NOT_SHOWN}
    combined = math.sqrt(ls**2 + rs**2)
    verdict = HOLDS if difference > combined else NOT_SHOWN
    return {**out, "difference": difference, "combined_std": combined, "verdict": verdict}


def batch_share(quotas: pd.DataFrame, classes: Sequence[str] = FIG5_CLASSES) -> float:
    """Share of a run's GPPO batch prompts (all phases) that go to `classes` (its quotas.csv)."""
    total = float(quotas["quota"].sum())
    return float(quotas[quotas["class"].isin(classes)]["quota"].sum()) / total if total else 0.0


def claims_table(tables: dict[str, pd.DataFrame], shares: dict[str, list[float]]) -> pd.DataFrame:
    """One row per claim. `tables`: our table2/4/5 frames; `shares`: per sampling row ("TS",
    "full"), each seed's CAM+LVNC share of batch prompts (the paper's Fig. 5)."""
    records = []
    for table, left, right, metric, words in TABLE_CLAIMS:
        frame = tables[table]
        judged = judge(_side(frame, left, metric), _side(frame, right, metric))
        records.append({"claim": words, **judged})
    words = "TS > full on the CAM+LVNC share of GPPO batches (Fig. 5)"
    sides = [summarise(shares.get(row, [])) for row in ("TS", "full")]
    records.append({"claim": words, **judge(*sides)})
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    for column in COLUMNS[1:-1]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def markdown(frame: pd.DataFrame, title: str) -> str:
    """The claims as a Markdown table: means ± std (n), difference, combined std, verdict."""

    def side(mean, std, n) -> str:
        if pd.isna(mean):
            return "not run"
        spread = "" if pd.isna(std) else f" ± {std:.3f}"
        return f"{mean:.3f}{spread} (n = {int(n)})"

    def number(x) -> str:
        return "–" if pd.isna(x) else f"{x:+.3f}" if x != 0 else "0.000"

    lines = [
        f"### {title}",
        "",
        "`holds`: the mean difference exceeds the combined std over seeds; `not shown`: it does "
        "not, or a side has fewer than 2 seeds. Computed from the tables above and the GPPO "
        "quota records.",
        "",
        "| claim | ours (left) | ours (right) | difference | combined std | verdict |",
        "|:---|---:|---:|---:|---:|:---|",
    ]
    for r in frame.itertuples(index=False):
        combined = "–" if pd.isna(r.combined_std) else f"{r.combined_std:.3f}"
        lines.append(
            f"| {r.claim} | {side(r.left_mean, r.left_std, r.left_seeds)} "
            f"| {side(r.right_mean, r.right_std, r.right_seeds)} | {number(r.difference)} "
            f"| {combined} | {r.verdict} |"
        )
    return "\n".join(lines) + "\n"
