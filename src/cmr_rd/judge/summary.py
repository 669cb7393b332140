"""Per model and judge: mean rating per axis with a 95% interval, the Fig. 3-style chart, the claim.

Intervals are seeded percentile bootstraps over test cases: a model's items for one case (one per
seed) are averaged, and the cases are resampled, so the interval reflects the handful of cases
rated rather than the seeds. Every model is resampled with the same case indices (the cases are
the same for every model), which makes the claim's model-to-model differences paired.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from cmr_rd.judge.items import SEED_OFFSET
from cmr_rd.judge.rubric import AXES, ERRORS
from cmr_rd.plotting import new_figure, save_png
from cmr_rd.report.claims import HOLDS, NOT_SHOWN

CLAIM = "CMR-RD's chains rate highest"
SUMMARY_NOTE = (
    "Blinded ratings (1-5) of each model's reasoning chain on the same sampled test cases: mean "
    "[95% bootstrap interval over cases], the seeds of a model averaged per case first; errors "
    "per item counted by category as GREEN and RadMatch do. Judge `rubric` is the offline judge, "
    "a deterministic finding-matching rubric against the case's report, not a clinician."
)
CLAIM_COLUMNS = [
    "claim", "judge", "left", "left_mean", "left_seeds", "right", "right_mean", "right_seeds",
    "difference", "ci_low", "ci_high", "p_value", "verdict",
]  # fmt: skip


def _resamples(n_cases: int, iterations: int, seed: int, judge: str) -> np.ndarray:
    salt = sum(judge.encode())  # a fixed per-judge stream, the same for every model
    rng = np.random.default_rng([seed, SEED_OFFSET, 2, salt])
    return rng.integers(0, n_cases, size=(iterations, n_cases))


def case_means(ratings: pd.DataFrame, value: pd.Series, cases: list[str]) -> np.ndarray:
    """Per case (in `cases` order), the mean of `value` over a model's rated items; NaN unrated."""
    means = value.groupby(ratings["case"]).mean()
    return means.reindex(cases).to_numpy(dtype=float)


def bootstrap_means(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The mean of `values` (NaN = not rated) in each resample of the cases."""
    with warnings.catch_warnings():  # a resample of only unrated cases has no mean
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(values[index], axis=1)
    return means[~np.isnan(means)]


def bootstrap_ci(values: np.ndarray, index: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of the mean of `values` (NaN = not rated) over resampled cases."""
    if np.isnan(values).all():
        return float("nan"), float("nan")
    low, high = np.percentile(bootstrap_means(values, index), [2.5, 97.5])
    return float(low), float(high)


def summary_table(
    ratings: pd.DataFrame, cases: list[str], iterations: int, seed: int
) -> pd.DataFrame:
    """One row per judge and model: seeds, items, rated, per axis mean and 95% CI, error means."""
    records = []
    for judge in sorted(ratings["judge"].unique()):
        index = _resamples(len(cases), iterations, seed, judge)
        of_judge = ratings[ratings["judge"] == judge]
        for model in sorted(of_judge["model"].unique()):
            rows = of_judge[of_judge["model"] == model]
            rated = rows[rows[list(AXES)].notna().any(axis=1)]
            record = {
                "judge": judge,
                "model": model,
                "seeds": int(rows["evaluation"].nunique()),
                "items": len(rows),
                "rated": len(rated),
            }
            for axis in AXES:
                values = case_means(rated, rated[axis], cases)
                low, high = bootstrap_ci(values, index)
                record[f"{axis}_mean"] = float(rated[axis].mean()) if len(rated) else np.nan
                record[f"{axis}_ci_low"], record[f"{axis}_ci_high"] = low, high
            for name in ERRORS:
                record[name] = float(rated[name].mean()) if rated[name].notna().any() else np.nan
            records.append(record)
    frame = pd.DataFrame.from_records(records)
    numeric = frame.select_dtypes("float").columns
    frame[numeric] = frame[numeric].round(4)
    return frame


def markdown(summary: pd.DataFrame) -> str:
    """The table as Markdown: mean [95% CI] per axis, per judge and model."""
    lines = [
        "| judge | model | seeds | rated / items | accuracy | coherence | readability "
        "| errors per item: unsupported / missed / location / severity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples(index=False):
        cells = []
        for axis in AXES:
            mean = getattr(row, f"{axis}_mean")
            low, high = getattr(row, f"{axis}_ci_low"), getattr(row, f"{axis}_ci_high")
            cells.append("-" if pd.isna(mean) else f"{mean:.2f} [{low:.2f}, {high:.2f}]")
        errors = [getattr(row, name) for name in ERRORS]
        cells.append(" / ".join("-" if pd.isna(e) else f"{e:.2f}" for e in errors))
        lines.append(
            f"| {row.judge} | {row.model} | {row.seeds} | {row.rated} / {row.items} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def figure(summary: pd.DataFrame, out_png) -> None:
    """Fig. 3 of the paper, per judge: grouped bars (one group per axis, one bar per model) with
    the 95% intervals as error bars."""
    judges = sorted(summary["judge"].unique())
    fig = new_figure(4.0 + 2.2 * len(judges), 3.8)
    models = sorted(summary["model"].unique())
    colours = [f"C{i % 10}" for i in range(len(models))]
    width = 0.8 / max(len(models), 1)
    axes = fig.subplots(1, len(judges), squeeze=False)[0]
    for ax, judge in zip(axes, judges, strict=True):
        rows = summary[summary["judge"] == judge].set_index("model")
        for i, model in enumerate(models):
            if model not in rows.index:
                continue
            row = rows.loc[model]
            means = np.array([row[f"{a}_mean"] for a in AXES], dtype=float)
            low = np.array([row[f"{a}_ci_low"] for a in AXES], dtype=float)
            high = np.array([row[f"{a}_ci_high"] for a in AXES], dtype=float)
            x = np.arange(len(AXES)) - 0.4 + width * (i + 0.5)
            ax.bar(x, np.nan_to_num(means), width, color=colours[i], label=model)
            ax.errorbar(
                x, means, yerr=[means - low, high - means], fmt="none", ecolor="black", lw=0.8
            )
        ax.set_xticks(range(len(AXES)), AXES)
        ax.set_ylim(0, 5.4)
        ax.set_title(f"judge: {judge}", fontsize=9)
        ax.set_ylabel("rating (1-5), mean and 95% CI")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    save_png(fig, out_png)


def claim_rows(
    ratings: pd.DataFrame, showcase: str, cases: list[str], iterations: int, seed: int
) -> pd.DataFrame:
    """Per judge, "CMR-RD's chains rate highest": the showcase model against the best other
    model on the mean of the three axes. `holds` when the showcase's mean is the highest and the
    paired bootstrap interval of its difference to every other model lies above 0."""
    records = []
    for judge in sorted(ratings["judge"].unique()):
        rows = ratings[ratings["judge"] == judge]
        overall = rows[list(AXES)].mean(axis=1)
        per_model = {
            m: case_means(rows[rows["model"] == m], overall[rows["model"] == m], cases)
            for m in sorted(rows["model"].unique())
        }
        seeds = rows.groupby("model")["evaluation"].nunique()
        means = {m: float(np.nanmean(v)) for m, v in per_model.items() if not np.isnan(v).all()}
        record = dict.fromkeys(CLAIM_COLUMNS)
        record.update(claim=f"{CLAIM} ({judge}, mean of {', '.join(AXES)})", judge=judge)
        record.update(left=showcase, verdict=NOT_SHOWN)
        others = {m: v for m, v in means.items() if m != showcase}
        if showcase not in means or not others:
            records.append(record)
            continue
        index = _resamples(len(cases), iterations, seed, judge)
        runner_up = max(others, key=lambda m: (others[m], m))
        lows = {}
        for model in others:
            difference = per_model[showcase] - per_model[model]
            lows[model] = bootstrap_ci(difference, index)
        low, high = lows[runner_up]
        # one-sided: the share of resamples in which the showcase is not ahead of the runner-up,
        # (1 + k) / (1 + B) as the report's claims compute it, so p is never 0
        resampled = bootstrap_means(per_model[showcase] - per_model[runner_up], index)
        behind = int((resampled <= 0).sum())
        p_value = (1 + behind) / (1 + len(resampled)) if len(resampled) else float("nan")
        holds = all(not np.isnan(lo) and lo > 0 for lo, _ in lows.values())
        record.update(
            left_mean=round(means[showcase], 4),
            left_seeds=int(seeds[showcase]),
            right=runner_up,
            right_mean=round(others[runner_up], 4),
            right_seeds=int(seeds[runner_up]),
            difference=round(means[showcase] - others[runner_up], 4),
            ci_low=round(low, 4),
            ci_high=round(high, 4),
            p_value=round(p_value, 4),
            verdict=HOLDS if holds else NOT_SHOWN,
        )
        records.append(record)
    return pd.DataFrame.from_records(records, columns=CLAIM_COLUMNS)


def claim_markdown(claims: pd.DataFrame) -> str:
    lines = [
        "| claim | ours | best other | difference [95% CI] | p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in claims.itertuples(index=False):
        if pd.isna(row.left_mean) or pd.isna(row.right_mean):
            lines.append(f"| {row.claim} | {row.left}: - | - | - | - | {row.verdict} |")
            continue
        lines.append(
            f"| {row.claim} | {row.left}: {row.left_mean:.2f} | {row.right}: {row.right_mean:.2f}"
            f" | {row.difference:+.2f} [{row.ci_low:+.2f}, {row.ci_high:+.2f}] | {row.p_value:.3f}"
            f" | {row.verdict} |"
        )
    return "\n".join(lines) + "\n"


def claims_table_rows(claims: pd.DataFrame) -> pd.DataFrame:
    """The claim rows in the report's claims table's columns (`cmr_rd.report.claims.COLUMNS`),
    for the report to append: the difference's interval and p-value are the paired case
    bootstrap's; the std columns stay empty (a rating has no seeds' spread to weigh)."""
    from cmr_rd.report.claims import COLUMNS

    rows = []
    for row in claims.itertuples(index=False):
        versus = f" vs {row.right}" if isinstance(row.right, str) else ""
        values = {
            "claim": f"{row.claim}{versus}",
            "left_mean": row.left_mean,
            "left_seeds": row.left_seeds,
            "right_mean": row.right_mean,
            "right_seeds": row.right_seeds,
            "difference": row.difference,
            "difference_ci_lo": row.ci_low,
            "difference_ci_hi": row.ci_high,
            "p_value": row.p_value,
            "verdict": row.verdict,
        }
        rows.append({column: values.get(column) for column in COLUMNS})
    return pd.DataFrame.from_records(rows, columns=COLUMNS)
