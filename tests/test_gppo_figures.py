"""GPPO figures: each writes a PNG, and the same inputs give the same bytes (so DVC and diffs see
no spurious change)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmr_rd.classes import CLASSES
from cmr_rd.gppo import figures
from cmr_rd.gppo.posterior import Posterior, update
from cmr_rd.gppo.quotas import plan_phase

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = [c for c, n in zip(CLASSES, [40, 20, 3, 5, 15, 6], strict=True) for _ in range(n)]


def _records_and_posteriors():
    post, records, posteriors = Posterior.uniform(), [], [Posterior.uniform().to_dict()]
    rng = np.random.default_rng(0)
    for phase in (1, 2, 3):
        redraw = "batch" if phase == 3 else "phase"  # exercise the per-batch mean too
        kw = dict(strategy="ts", batch_size=16, n_batches=4, pool_threshold=8, seed=1, phase=phase)
        records.append(plan_phase(LABELS, post, redraw=redraw, **kw).record)
        correct = {c: int(rng.integers(5, 20)) for c in CLASSES}
        post = update(post, correct, {c: 20 - correct[c] for c in CLASSES})
        posteriors.append(post.to_dict())
    return records, posteriors


def _reward_rows() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for phase in (1, 2):
        for step in range(1, 6):  # step restarts per phase, as a per-phase trainer logs it
            for c in CLASSES:
                total = float(rng.random())
                rows.append(
                    {"phase": phase, "step": step, "class": c, "format_mean": 1.0,
                     "answer_mean": total, "iou_mean": 0.5, "total_mean": total,
                     "zero_spread_fraction": float(rng.random())}
                )  # fmt: skip
    return pd.DataFrame(rows)


def _cases():
    records, posteriors = _records_and_posteriors()
    stages = [
        ("SFT", {c: 0.4 + 0.05 * i for i, c in enumerate(CLASSES)}),
        ("phase 1", {c: 0.5 + 0.05 * i for i, c in enumerate(CLASSES)}),
        ("phase 2", {c: 0.6 + 0.05 * i for i, c in enumerate(CLASSES) if c != "CAM"}),
    ]
    return {
        "quota_shares": (figures.plot_quota_shares, records),
        "posteriors": (figures.plot_posteriors, posteriors),
        "reward_curves": (figures.plot_reward_curves, _reward_rows()),
        "probe_accuracy": (figures.plot_probe_accuracy, stages),
    }


@pytest.mark.parametrize("name", ["quota_shares", "posteriors", "reward_curves", "probe_accuracy"])
def test_plot_writes_a_deterministic_png(name, tmp_path):
    plot, data = _cases()[name]
    first, second = tmp_path / "a" / f"{name}.png", tmp_path / f"{name}.png"
    assert plot(data, first) is None
    plot(data, second)
    png = first.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    assert png == second.read_bytes()
    assert b"Software" not in png and b"matplotlib" not in png.lower()


def test_reward_steps_run_on_across_phases():
    rows = figures.with_global_steps(_reward_rows())
    # Phase 2's steps 1..5 restart, so they follow phase 1's last step (5): 6..10.
    assert sorted(rows.loc[rows["phase"] == 2, "global_step"].unique()) == [6, 7, 8, 9, 10]
    # Steps that are already global are left alone.
    glob = _reward_rows().assign(step=lambda d: d["step"] + 5 * (d["phase"] - 1))
    assert figures.with_global_steps(glob)["global_step"].max() == 10


def test_empty_inputs_are_rejected(tmp_path):
    with pytest.raises(ValueError):
        figures.plot_quota_shares([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="total_mean"):
        figures.plot_reward_curves(pd.DataFrame({"phase": [1], "step": [1]}), tmp_path / "x.png")
