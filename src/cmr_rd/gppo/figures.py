"""GPPO figures: quota shares per phase (the paper's Fig. 5), posteriors, rewards, probe accuracy.

Each figure is drawn through cmr_rd.plotting: its own Figure with an explicit Agg canvas (no
pyplot), fixed class colours, and byte-for-byte reproducible PNGs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps

from cmr_rd.classes import CLASSES
from cmr_rd.gppo.posterior import Posterior, density
from cmr_rd.plotting import colour, new_figure, save_png


def plot_quota_shares(records: list[dict], out_png) -> None:
    """Stacked bar per phase of q_c / B. With per-batch redraws the bar is the mean over batches,
    which is what the phase actually trained on."""
    if not records:
        raise ValueError("no plan records to plot")
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    x = np.arange(len(records))
    bottom = np.zeros(len(records))
    for c in CLASSES:
        share = []
        for r in records:
            per_batch = r.get("per_batch_quotas") or [r["quotas"]]
            share.append(np.mean([q.get(c, 0) for q in per_batch]) / r["batch_size"])
        ax.bar(x, share, bottom=bottom, color=colour(c), label=c, width=0.7)
        bottom += np.asarray(share)
    ax.set_xticks(x, [f"phase {r.get('phase', i + 1)}" for i, r in enumerate(records)])
    ax.set_ylabel("quota share $q_c / B$")
    ax.set_ylim(0, 1)
    ax.set_title(f"Class quotas per phase ({records[0].get('strategy', '?')})")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    save_png(fig, out_png)


def plot_posteriors(posteriors: list[dict], out_png) -> None:
    """One panel per class, one Beta density per phase (0 = the uniform prior), light to dark."""
    if not posteriors:
        raise ValueError("no posteriors to plot")
    states = [Posterior.from_dict(p) for p in posteriors]
    classes = [c for c in CLASSES if c in states[0].alpha]
    x = np.linspace(0.0, 1.0, 401)
    ramp = colormaps["viridis"]
    fig = new_figure(10, 5.5)
    axes = fig.subplots(2, 3, sharex=True).ravel()
    for ax, c in zip(axes, classes, strict=False):
        for t, post in enumerate(states):
            y = density(post, c, x)
            y[~np.isfinite(y)] = np.nan  # α or β < 1 puts a pole at an end; leave it off the plot
            shade = ramp(t / max(len(states) - 1, 1))
            ax.plot(x, y, color=shade, lw=1.5, label=f"phase {t}")
        ax.set_title(c, color=colour(c))
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0)
    for ax in axes[len(classes) :]:
        ax.set_visible(False)
    for ax in axes[3:]:
        ax.set_xlabel("probe accuracy θ")
    axes[0].set_ylabel("density")
    axes[3].set_ylabel("density")
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle("Beta posteriors over per-class accuracy")
    fig.tight_layout()
    save_png(fig, out_png)


def with_global_steps(rows: pd.DataFrame) -> pd.DataFrame:
    # Trainers often restart `step` each phase; if a phase's steps do not start after the previous
    # phase's, offset them by the steps so far so the x axis runs on.
    rows = rows.sort_values(["phase", "step"], kind="stable")
    offset, last, out = 0, None, {}
    for phase, part in rows.groupby("phase", sort=True):
        if last is not None and part["step"].min() + offset <= last:
            offset = last
        out[phase] = offset
        last = part["step"].max() + offset
    return rows.assign(global_step=rows["step"] + rows["phase"].map(out))


def plot_reward_curves(rows: pd.DataFrame, out_png) -> None:
    """total_mean and zero_spread_fraction per class over the global step, phases marked, to see
    where a class's reward saturates and its GRPO groups stop carrying signal."""
    need = {"phase", "step", "class", "total_mean", "zero_spread_fraction"}
    missing = need - set(rows.columns)
    if missing:
        raise ValueError(f"reward rows lack columns {sorted(missing)}")
    if rows.empty:
        raise ValueError("no reward rows to plot")
    rows = with_global_steps(rows)
    fig = new_figure(10, 4)
    ax_total, ax_zero = fig.subplots(1, 2)
    classes = [c for c in CLASSES if c in set(rows["class"])]
    for c in classes:
        part = rows[rows["class"] == c]
        ax_total.plot(part["global_step"], part["total_mean"], color=colour(c), lw=1.2, label=c)
        ax_zero.plot(part["global_step"], part["zero_spread_fraction"], color=colour(c), lw=1.2)
    starts = rows.groupby("phase", sort=True)["global_step"].min().to_numpy()[1:]
    for ax in (ax_total, ax_zero):
        for s in starts:
            ax.axvline(s, color="0.5", ls="--", lw=0.8)
        ax.set_xlabel("global step")
    ax_total.set_ylabel("mean total reward")
    ax_zero.set_ylabel("fraction of groups with zero reward spread")
    ax_zero.set_ylim(-0.02, 1.02)
    ax_total.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    save_png(fig, out_png)


def plot_probe_accuracy(stages: Sequence[tuple[str, dict[str, float]]], out_png) -> None:
    """Greedy probe accuracy per class across stages, with the macro mean drawn heavier."""
    if not stages:
        raise ValueError("no stages to plot")
    names = [name for name, _ in stages]
    x = np.arange(len(stages))
    classes = [c for c in CLASSES if any(c in acc for _, acc in stages)]
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    for c in classes:
        y = [acc.get(c, np.nan) for _, acc in stages]
        ax.plot(x, y, marker="o", color=colour(c), lw=1.2, label=c)
    macro = [np.mean([acc[c] for c in classes if c in acc] or [np.nan]) for _, acc in stages]
    ax.plot(x, macro, marker="s", color="black", lw=2.5, label="macro mean")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probe accuracy")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    save_png(fig, out_png)
