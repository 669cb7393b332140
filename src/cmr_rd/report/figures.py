"""Report figures: confusion matrices summed over seeds, a gallery of reasoned cases, and the
training curves of both stages.

All go through cmr_rd.plotting (own Agg canvas, no pyplot, byte-reproducible PNGs), so a rerun on
the same inputs leaves the files unchanged. Text from the model is drawn with mathtext off: a
stray "$" in a completion must print as a dollar, not start a formula that fails to parse.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from PIL import Image

from cmr_rd.classes import CLASSES
from cmr_rd.gppo.figures import with_global_steps
from cmr_rd.plotting import colour, new_figure, save_png

UNPARSED = "unparsed"
BOX_FRAME = 256.0  # boxes are given in 256-px coordinates whatever the image's own size
TEXT_CHARS = 400
WRAP = 52
TRUE_BOX, PRED_BOX = "#00c000", "#e00000"


# ---- confusion matrices --------------------------------------------------------------------------


def summed_confusion(confusions: Sequence[Mapping]) -> np.ndarray:
    """The seeds' confusion counts added cell by cell (labels as in the first).

    Summing counts (not averaging rates) keeps every test case's weight equal across seeds. Seeds
    must share one label order, or the cells would not mean the same thing.
    """
    if not confusions:
        raise ValueError("no confusion matrices to sum")
    labels = list(confusions[0]["labels"])
    total = None
    for i, conf in enumerate(confusions):
        if list(conf["labels"]) != labels:
            raise ValueError(f"confusion {i} has labels {list(conf['labels'])}, not {labels}")
        m = np.asarray(conf["matrix"], dtype=np.int64)
        truths = [lab for lab in labels if lab != UNPARSED]
        if m.shape != (len(truths), len(labels)):
            raise ValueError(f"confusion {i} has shape {m.shape}, not {(len(truths), len(labels))}")
        total = m if total is None else total + m
    return total


def plot_confusion_matrices(entries: Sequence[tuple[str, Sequence[Mapping]]], out_png) -> None:
    """One panel per entry: counts summed over its seeds, shaded by the row-normalised rate (so a
    rare class's row is as readable as a common one's), truth on y, prediction on x."""
    if not entries:
        raise ValueError("no confusion matrices to plot")
    ncols = min(len(entries), 3)
    nrows = math.ceil(len(entries) / ncols)
    fig = new_figure(4.5 * ncols, 4.0 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (title, confusions) in zip(axes, entries, strict=False):
        counts = summed_confusion(confusions)
        labels = list(confusions[0]["labels"])
        truths = [lab for lab in labels if lab != UNPARSED]
        rows = counts.sum(axis=1, keepdims=True)
        rate = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
        ax.imshow(rate, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                ink = "white" if rate[i, j] > 0.55 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color=ink)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(truths)), truths, fontsize=7)
        ax.set_xlabel("prediction", fontsize=8)
        ax.set_ylabel("truth", fontsize=8)
        k = len(confusions)
        seeds = f"sum of {k} seeds" if k > 1 else "1 run"
        ax.set_title(f"{title}\n({seeds}, n={int(counts.sum())})", fontsize=9, parse_math=False)
    for ax in axes[len(entries) :]:
        ax.set_visible(False)
    fig.tight_layout()
    save_png(fig, out_png)


# ---- gallery -------------------------------------------------------------------------------------


def gallery_cases(samples: pd.DataFrame, per_class: int = 1) -> list[tuple[str, bool, list]]:
    """(class, correct, rows) per gallery slot: for each class present, the first `per_class`
    correct and wrong cases by id, so the same evaluation always shows the same cases."""
    need = {"id", "label", "correct", "image"}
    missing = need - set(samples.columns)
    if missing:
        raise ValueError(f"samples lack columns {sorted(missing)}")
    ordered = samples.sort_values("id", kind="stable")
    out = []
    for c in CLASSES:
        part = ordered[ordered["label"] == c]
        if part.empty:
            continue
        ok = part["correct"].fillna(False).astype(bool)
        for correct in (True, False):
            out.append((c, correct, part[ok == correct].head(per_class).to_dict("records")))
    return out


def _box(value) -> tuple[float, float, float, float] | None:
    # Parquet hands list columns back as numpy arrays; a parsed box may be anything, so only four
    # finite numbers count as a box.
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        arr = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    if arr.size != 4 or not np.all(np.isfinite(arr)):
        return None
    return tuple(float(v) for v in arr)


def _text_of(row: Mapping) -> str:
    for key in ("think", "completion"):
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            text = " ".join(value.split())
            break
    else:
        text = "(no output)"
    if len(text) > TEXT_CHARS:
        text = text[: TEXT_CHARS - 1].rstrip() + "…"
    return textwrap.fill(text, width=WRAP)


def _draw_image(ax, row: Mapping) -> None:
    path = Path(str(row.get("image")))
    ax.set_xticks([])
    ax.set_yticks([])
    try:
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("L"))
    except (OSError, ValueError) as err:
        why = "missing" if not path.exists() else f"unreadable ({type(err).__name__})"
        ax.set_facecolor("0.85")
        ax.set_box_aspect(1)  # same footprint as a slice, so the row stays aligned
        ax.text(
            0.5,
            0.5,
            f"image {why}:\n" + textwrap.fill(str(path), 28),
            ha="center",
            va="center",
            fontsize=6,
            transform=ax.transAxes,
            parse_math=False,
        )
        return
    h, w = pixels.shape
    ax.imshow(pixels, cmap="gray", vmin=0, vmax=255, extent=(0, w, h, 0), interpolation="nearest")
    sx, sy = w / BOX_FRAME, h / BOX_FRAME
    for key, edge in (("box_true", TRUE_BOX), ("box_pred", PRED_BOX)):
        box = _box(row.get(key))
        if box is not None:
            x1, y1, x2, y2 = box
            ax.add_patch(
                Rectangle(
                    (x1 * sx, y1 * sy),
                    (x2 - x1) * sx,
                    (y2 - y1) * sy,
                    fill=False,
                    edgecolor=edge,
                    lw=1.5,
                )
            )
    ax.set_xlim(0, w)  # a wild predicted box must not rescale the image
    ax.set_ylim(h, 0)


def _case_title(row: Mapping) -> str:
    pred = row.get("predicted")
    pred = pred if isinstance(pred, str) and pred else UNPARSED
    verdict = "correct" if bool(row.get("correct")) else "wrong"
    title = f"{row.get('id')}\ntruth {row.get('label')} / pred {pred} / {verdict}"
    iou = row.get("iou")
    if isinstance(iou, int | float) and not math.isnan(iou):
        title += f" / IoU {iou:.2f}"
    return title


def plot_gallery(samples: pd.DataFrame, out_png, title: str, per_class: int = 1) -> None:
    """Per class present, `per_class` correct then `per_class` wrong cases, each as the slice
    (truth box green, predicted box red) beside its wrapped reasoning; empty slots are labelled
    rather than dropped so every class row lines up."""
    if per_class < 1:
        raise ValueError("per_class must be at least 1")
    if samples.empty:
        raise ValueError("no samples for the gallery")
    slots = gallery_cases(samples, per_class)
    if not slots:
        raise ValueError(f"no samples of a known class {list(CLASSES)} for the gallery")
    classes = list(dict.fromkeys(c for c, _, _ in slots))
    ncases = 2 * per_class
    height = 2.75 * len(classes) + 0.5
    fig = new_figure(5.75 * ncases, height)
    # Fixed margins rather than tight_layout: long case titles would otherwise shrink the slices.
    grid = fig.add_gridspec(
        len(classes), 2 * ncases, width_ratios=[1.0, 1.6] * ncases,
        left=0.01, right=0.99, bottom=0.1 / height, top=1 - 0.75 / height, wspace=0.08, hspace=0.35,
    )  # fmt: skip
    for r, c in enumerate(classes):
        for correct, rows in ((ok, rows) for cls, ok, rows in slots if cls == c):
            for k in range(per_class):
                col = 2 * (k if correct else per_class + k)
                ax_img = fig.add_subplot(grid[r, col])
                ax_txt = fig.add_subplot(grid[r, col + 1])
                ax_txt.axis("off")
                if k >= len(rows):
                    ax_img.axis("off")
                    kind = "correct" if correct else "wrong"
                    ax_img.text(
                        0.5,
                        0.5,
                        f"{c}: no {kind} case",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="0.4",
                        transform=ax_img.transAxes,
                    )
                    continue
                row = rows[k]
                _draw_image(ax_img, row)
                ax_img.set_title(_case_title(row), fontsize=7, color=colour(c), parse_math=False)
                ax_txt.text(
                    0.0,
                    1.0,
                    _text_of(row),
                    ha="left",
                    va="top",
                    fontsize=7,
                    family="monospace",
                    transform=ax_txt.transAxes,
                    parse_math=False,
                )
    fig.suptitle(title, fontsize=11, y=1 - 0.12 / height, va="top", parse_math=False)
    save_png(fig, out_png)


# ---- training curves -----------------------------------------------------------------------------


def _phase_frames(frames: Sequence[pd.DataFrame | None], need: set[str]) -> pd.DataFrame:
    # Phase k is the k-th frame (1-based) so a skipped empty phase keeps the others' numbers.
    parts = [
        f.assign(phase=i + 1)
        for i, f in enumerate(frames)
        if f is not None and not f.empty and need <= set(f.columns)
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def mean_reward_per_step(rewards: pd.DataFrame) -> pd.DataFrame:
    """phase, step, total_mean: the mean over classes weighted by each class's prompts, i.e. the
    mean reward of the step's whole batch (unweighted where prompt counts are absent or zero)."""
    rows = rewards.dropna(subset=["total_mean"])
    if "prompts" in rows.columns:
        weight = rows["prompts"].fillna(0).astype(float)
    else:
        weight = pd.Series(1.0, index=rows.index)
    out = []
    for (phase, step), part in rows.groupby(["phase", "step"], sort=True):
        w = weight.loc[part.index].to_numpy()
        w = w if w.sum() > 0 else np.ones(len(part))
        out.append(
            {
                "phase": phase,
                "step": step,
                "total_mean": float(np.average(part["total_mean"], weights=w)),
            }
        )
    return pd.DataFrame(out, columns=["phase", "step", "total_mean"])


def _phased_plot(ax, rows: pd.DataFrame, y: str, colour_: str) -> None:
    rows = with_global_steps(rows)
    ax.plot(rows["global_step"], rows[y], color=colour_, lw=1.2)
    starts = rows.groupby("phase", sort=True)["global_step"].min()
    for phase, s in starts.items():
        if s != starts.iloc[0]:
            ax.axvline(s - 0.5, color="0.5", ls="--", lw=0.8)
        ax.annotate(
            f"phase {phase}",
            (s, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            fontsize=7,
            color="0.4",
        )
    ax.set_xlabel("global step (phases end to end)")


def plot_training_curves(
    stage_losses: Mapping[str, pd.DataFrame | None],
    gppo_losses: Sequence[pd.DataFrame | None],
    gppo_rewards: pd.DataFrame | None,
    out_png,
) -> None:
    """Loss per stage-1 stage, GPPO loss and GPPO mean total reward across phases laid end to end.

    Empty or absent inputs drop their panel instead of failing, so the figure can be drawn for a
    partial run (e.g. stage 1 only); with nothing at all it says so.
    """
    panels = []
    for name, df in stage_losses.items():
        if df is not None and not df.empty and {"step", "loss"} <= set(df.columns):
            panels.append(("stage", name, df.dropna(subset=["loss"])))
    loss = _phase_frames(list(gppo_losses), {"step", "loss"})
    if not loss.empty:
        panels.append(("gppo_loss", "GPPO loss", loss.dropna(subset=["loss"])))
    need = {"phase", "step", "total_mean"}
    if gppo_rewards is not None and not gppo_rewards.empty and need <= set(gppo_rewards.columns):
        reward = mean_reward_per_step(gppo_rewards)
        if not reward.empty:
            panels.append(("gppo_reward", "GPPO mean total reward", reward))
    n = max(len(panels), 1)
    fig = new_figure(4.0 * n, 3.5)
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)).ravel()
    if not panels:
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, "no training curves", ha="center", va="center")
    for ax, (kind, name, df) in zip(axes, panels, strict=False):
        if kind == "stage":
            df = df.sort_values("step", kind="stable")
            ax.plot(df["step"], df["loss"], color="#1f77b4", lw=1.2)
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.set_title(f"{name} loss", fontsize=10, parse_math=False)
        elif kind == "gppo_loss":
            _phased_plot(ax, df, "loss", "#d62728")
            ax.set_ylabel("loss")
            ax.set_title(name, fontsize=10)
        else:
            _phased_plot(ax, df, "total_mean", "#2ca02c")
            ax.set_ylabel("mean total reward (prompt-weighted)")
            ax.set_title(name, fontsize=10)
    fig.tight_layout()
    save_png(fig, out_png)


def model_input_cases(test_records: Sequence[Mapping]) -> list[Mapping]:
    """The first test slice of each class, in class order: what the figure shows."""
    first: dict[str, Mapping] = {}
    for record in test_records:
        first.setdefault(record["label"], record)
    return [first[c] for c in CLASSES if c in first]


def plot_model_inputs(test_records: Sequence[Mapping], image_processor, out_png) -> None:
    """Per class, a test slice as stored (256 px) and exactly as the backbone's image processor
    hands it to the vision tower (resized, rescaled, normalised; shown de-normalised): what the
    model can see of the class pattern."""
    from cmr_rd.model.runtime import open_image

    cases = model_input_cases(test_records)
    columns = max(len(cases), 1)
    fig = new_figure(2.0 * columns, 4.3)
    axes = fig.subplots(2, columns, squeeze=False)
    mean = np.asarray(image_processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(image_processor.image_std, dtype=np.float32)[:, None, None]
    for column, record in enumerate(cases):
        image = open_image(record["images"][0])
        pixels = image_processor(images=[image], return_tensors="np")["pixel_values"][0]
        seen = np.clip(pixels * std + mean, 0.0, 1.0).mean(axis=0)
        for row, (shown, what) in enumerate(
            ((np.asarray(image.convert("L")), "stored"), (seen, "model input"))
        ):
            ax = axes[row][column]
            ax.imshow(shown, cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            size = f"{shown.shape[1]}x{shown.shape[0]}"
            ax.set_title(f"{record['label']}: {what} {size}" if row == 0 else f"{what} {size}",
                         fontsize=7)  # fmt: skip
    fig.tight_layout()
    save_png(fig, out_png)
