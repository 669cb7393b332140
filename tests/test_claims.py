"""The claims table: each of the paper's claims judged from our own rows, never typed in."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmr_rd.classes import CLASSES
from cmr_rd.report import claims, tables


def _metrics(acc, cam=0.5, lvnc=0.5, iou=0.3):
    per_class = dict.fromkeys(CLASSES, 0.5) | {"CAM": cam, "LVNC": lvnc}
    return {"accuracy": acc, "macro_f1": acc - 0.05, "auc_macro": acc + 0.1,
            "per_class_accuracy": per_class, "mi_mean_iou": iou, "mi_acc_at_50": iou}  # fmt: skip


def test_judge_holds_only_beyond_the_combined_spread():
    assert claims.judge((0.70, 0.03, 3), (0.60, 0.04, 3))["verdict"] == claims.HOLDS  # 0.10 > 0.05
    assert claims.judge((0.64, 0.03, 3), (0.60, 0.04, 3))["verdict"] == claims.NOT_SHOWN
    assert claims.judge((0.60, 0.03, 3), (0.70, 0.04, 3))["verdict"] == claims.NOT_SHOWN  # reversed
    one = claims.judge((0.90, None, 1), (0.10, 0.01, 3))  # a single seed has no spread
    assert one["verdict"] == claims.NOT_SHOWN and one["difference"] == pytest.approx(0.8)
    fixed = (0.10, 0.0, claims.FIXED)  # the untrained backbone: no seed can change it
    assert claims.judge((0.60, 0.03, 3), fixed)["verdict"] == claims.HOLDS
    assert claims.judge((0.12, 0.03, 3), fixed)["verdict"] == claims.NOT_SHOWN
    assert claims.judge((0.90, None, 1), fixed)["verdict"] == claims.NOT_SHOWN  # still one seed
    assert claims.judge(fixed, fixed)["verdict"] == claims.NOT_SHOWN
    assert claims.judge((None, None, 0), (0.5, 0.1, 3))["verdict"] == claims.NOT_SHOWN


def test_batch_share_counts_quotas_over_phases():
    quotas = pd.DataFrame(
        {
            "phase": [1, 1, 1, 2, 2, 2],
            "class": ["HCM", "CAM", "LVNC"] * 2,
            "quota": [4, 2, 2, 2, 4, 4],
        }
    )
    assert claims.batch_share(quotas) == pytest.approx(12 / 18)


def _rows(ts_cam: list[float]) -> dict[str, list]:
    seeds = [0.0, 0.01, -0.01]
    t5 = [
        ("none", [_metrics(0.1)]),
        ("S1 only", [_metrics(0.6 + s) for s in seeds]),
        ("S2 only", [_metrics(0.3 + s) for s in seeds]),
        ("S1+S2", [_metrics(0.75 + s) for s in seeds]),
    ]
    t2 = [
        ("TS", [_metrics(0.75, cam=c, lvnc=0.6 + s) for c, s in zip(ts_cam, seeds, strict=True)]),
        ("static", [_metrics(0.7, cam=0.5 + s, lvnc=0.6 + s) for s in seeds]),
        ("full", [_metrics(0.7, cam=0.3 + s, lvnc=0.3 + s) for s in seeds]),
    ]
    t4 = [
        ("on", [_metrics(0.75, iou=0.4 + s) for s in seeds]),
        ("off", [_metrics(0.75, iou=0.1 + s) for s in seeds]),
    ]
    return {"table5": t5, "table2": t2, "table4": t4}


def _tables(ts_cam: list[float]) -> dict[str, pd.DataFrame]:
    rows = _rows(ts_cam)
    return {name: getattr(tables, name)(rows[name]) for name in ("table5", "table2", "table4")}


def test_claims_table_judges_every_claim_from_the_rows():
    frame = claims.claims_table(
        _tables(ts_cam=[0.8, 0.82, 0.78]), {"TS": [0.4, 0.42, 0.38], "full": [0.1, 0.1, 0.12]}
    )
    verdicts = dict(zip(frame["claim"], frame["verdict"], strict=True))
    assert len(frame) == len(claims.TABLE_CLAIMS) + 2
    assert verdicts["S1+S2 > S2 only on ACC (Table 5)"] == claims.HOLDS
    assert verdicts["S1+S2 > S1 only on ACC (Table 5)"] == claims.HOLDS  # 0.75 against 0.60
    # none is the untrained backbone: a fixed reference (std 0), not a one-seed sample.
    assert verdicts["S1 only > none on ACC (Table 5)"] == claims.HOLDS
    assert verdicts["S2 only > S1 only on ACC (Table 5)"] == claims.NOT_SHOWN  # the other way
    assert verdicts["TS > full on CAM accuracy (Table 2)"] == claims.HOLDS
    assert verdicts["TS > static on LVNC accuracy (Table 2)"] == claims.NOT_SHOWN  # equal
    assert verdicts["IoU reward on > off on MI mean IoU (Table 4)"] == claims.HOLDS
    assert verdicts["TS > full on the CAM+LVNC share of GPPO batches (Fig. 5)"] == claims.HOLDS
    row = frame.set_index("claim").loc["S1+S2 > S2 only on ACC (Table 5)"]
    assert row["difference"] == pytest.approx(0.45) and row["left_seeds"] == 3
    markdown = claims.markdown(frame, "Claims")
    assert "| S1+S2 > S2 only on ACC (Table 5) | 0.750 ± 0.010 (n = 3) |" in markdown


def test_a_noisy_difference_is_not_shown():
    frame = claims.claims_table(_tables(ts_cam=[0.9, 0.2, 0.6]), {})
    verdicts = dict(zip(frame["claim"], frame["verdict"], strict=True))
    assert verdicts["TS > full on CAM accuracy (Table 2)"] == claims.NOT_SHOWN
    assert verdicts["TS > full on the CAM+LVNC share of GPPO batches (Fig. 5)"] == claims.NOT_SHOWN


def _seed_draws(acc: float, n: int = 3) -> list[dict]:
    """Each seed's bootstrap draws: every metric spread by +-0.05 around `acc`."""
    keys = ["accuracy", "macro_f1", "auc_macro", "mi_mean_iou",
            *(f"per_class_accuracy/{c}" for c in CLASSES)]  # fmt: skip
    return [{k: np.linspace(acc - 0.05, acc + 0.05, 999) for k in keys} for _ in range(n)]


def test_claims_carry_a_paired_bootstrap_interval_and_p_value():
    draws = {
        "table5": {"none": _seed_draws(0.1, 1), "S1 only": _seed_draws(0.6),
                   "S2 only": _seed_draws(0.3), "S1+S2": _seed_draws(0.75)},
        "table2": {"TS": _seed_draws(0.8), "static": _seed_draws(0.5),
                   "full": _seed_draws(0.78)},
        "table4": {"on": _seed_draws(0.4)},  # "off" not run: no paired columns
    }  # fmt: skip
    frame = claims.claims_table(
        _tables(ts_cam=[0.8, 0.82, 0.78]), {"TS": [0.4], "full": [0.1]}, draws
    ).set_index("claim")
    assert list(frame.columns[-3:]) == ["difference_ci_lo", "difference_ci_hi", "p_value"]
    row = frame.loc["S1+S2 > S2 only on ACC (Table 5)"]
    # Same resamples on both sides: the difference is 0.45 in every one of them.
    assert row["difference_ci_lo"] == pytest.approx(0.45) == row["difference_ci_hi"]
    assert row["p_value"] == pytest.approx(1 / 1000)
    assert frame.loc["S2 only > S1 only on ACC (Table 5)", "p_value"] == 1.0
    assert frame.loc["S1 only > none on AUC (Table 5)", "difference_ci_lo"] == pytest.approx(0.5)
    assert frame.loc["S1+S2 > S1 only on ACC (Table 5)", "p_value"] == pytest.approx(1 / 1000)
    close = frame.loc["TS > full on CAM accuracy (Table 2)"]
    assert close["difference_ci_lo"] == pytest.approx(0.02) and close["p_value"] < 0.01
    assert (
        frame.loc["IoU reward on > off on MI mean IoU (Table 4)"][["difference_ci_lo", "p_value"]]
        .isna()
        .all()
    )
    fig5 = frame.loc["TS > full on the CAM+LVNC share of GPPO batches (Fig. 5)"]
    assert fig5[["difference_ci_lo", "difference_ci_hi", "p_value"]].isna().all()
    # The rare classes' mean: its sides need the per-seed rows, its interval the draws.
    rare = frame.loc[claims.RARE_MEAN_CLAIM]
    assert rare[["left_mean", "right_mean"]].isna().all() and rare["verdict"] == claims.NOT_SHOWN
    assert rare["difference_ci_lo"] == pytest.approx(0.02) and rare["p_value"] < 0.01
    with_rows = claims.claims_table(
        _tables(ts_cam=[0.8, 0.82, 0.78]), {}, draws, _rows(ts_cam=[0.8, 0.82, 0.78])
    ).set_index("claim")
    rare = with_rows.loc[claims.RARE_MEAN_CLAIM]
    # Per seed (CAM + LVNC) / 2: TS 0.700, 0.715, 0.685; full 0.30, 0.31, 0.29.
    assert rare["left_mean"] == pytest.approx(0.70) and rare["right_mean"] == pytest.approx(0.30)
    assert rare["left_std"] == pytest.approx(0.015) and rare["verdict"] == claims.HOLDS
    assert rare["difference_ci_hi"] == pytest.approx(0.02)  # the draws' mean of the two classes
    noisy = claims.claims_table(_tables([0.9, 0.0, 0.3]), {}, None, _rows([0.9, 0.0, 0.3]))
    # TS 0.750, 0.305, 0.445 (std 0.228) against full 0.30: a difference of 0.20 is not shown.
    assert noisy.set_index("claim").loc[claims.RARE_MEAN_CLAIM, "verdict"] == claims.NOT_SHOWN
    # The verdicts are the seed-spread verdicts, unchanged by the bootstrap.
    plain = claims.claims_table(_tables(ts_cam=[0.8, 0.82, 0.78]), {"TS": [0.4], "full": [0.1]})
    assert list(plain["verdict"]) == list(frame["verdict"])
    assert plain["p_value"].isna().all()

    class Boot:
        iterations, n_patients = 999, 180

    markdown = claims.markdown(frame.reset_index(), "Claims", Boot)
    assert "| 95% CI of difference | p (one-sided) |" in markdown
    assert "999 resamples of the 180 test patients" in markdown
    assert "| holds | [+0.450, +0.450] | 0.001 |" in markdown
    fig5_line = next(line for line in markdown.splitlines() if "(Fig. 5)" in line)
    assert fig5_line.endswith("| – | – |")


def test_targets_are_judged_from_the_per_seed_metrics():
    rows = _rows(ts_cam=[0.8, 0.82, 0.78])
    frame = claims.targets_table(rows).set_index("target")
    verdict = frame["verdict"]
    # S1+S2 0.75 against S1 only 0.60 + 0.10: met; CAM and LVNC are 0.5 on both rows: not met.
    assert verdict["S1+S2 ACC >= S1 only + 0.10"] == claims.MET
    assert frame.loc["S1+S2 ACC >= S1 only + 0.10", "required"] == pytest.approx(0.70)
    assert verdict["S1+S2 CAM accuracy >= S1 only + 0.10"] == claims.NOT_MET
    assert verdict["S1+S2 LVNC accuracy >= S1 only + 0.10"] == claims.NOT_MET
    # TS mean(CAM, LVNC) 0.70 against full 0.30 + combined std: met.
    assert verdict["TS > full on mean(CAM, LVNC) accuracy by more than the combined std"] == "met"
    assert verdict["S2 only ACC > none"] == claims.MET
    assert verdict["MI mean IoU with the IoU reward >= 0.30"] == claims.MET  # 0.40
    assert verdict["MI mean IoU with the IoU reward > without"] == claims.MET
    assert verdict["seeds on the full row >= 3"] == claims.MET
    # One seed fewer, or a row that was not run, is not met: nothing passes unmeasured.
    rows["table2"] = [(label, metrics[:2]) for label, metrics in rows["table2"]]
    rows["table4"] = [row for row in rows["table4"] if row[0] != "off"]
    frame = claims.targets_table(rows).set_index("target")
    assert frame.loc["seeds on the static row >= 3", "verdict"] == claims.NOT_MET
    assert frame.loc["MI mean IoU with the IoU reward > without", "verdict"] == claims.NOT_MET
    markdown = claims.targets_markdown(claims.targets_table(rows), "Targets")
    assert "| S2 only ACC > none | 0.300 | 0.100 | met |" in markdown


def test_targets_read_significance_base_naming_and_rollout_health():
    rows = _rows(ts_cam=[0.8, 0.82, 0.78])
    rows["table5"][0] = ("none", [{**_metrics(0.2), "parse_rate": 0.9}])
    checked = pd.DataFrame(
        {"claim": list(claims.SIGNIFICANT), "p_value": [0.001, 0.2, 0.04, 0.03, float("nan")]}
    )
    frame = claims.targets_table(rows, checked, rollout_format_valid=0.9).set_index("target")
    verdict = frame["verdict"]
    assert verdict["S2 only ACC >= 0.35"] == claims.NOT_MET  # 0.30
    assert verdict["none names a class in >= 0.8 of test answers"] == claims.MET
    assert verdict["none ACC <= 0.30 (about chance)"] == claims.MET
    assert verdict["sft-* GPPO rollouts format-valid >= 0.85"] == claims.MET
    assert verdict["S1+S2 > S1 only on ACC: paired bootstrap p < 0.05"] == claims.MET
    assert verdict["TS > full on CAM accuracy: paired bootstrap p < 0.05"] == claims.NOT_MET
    assert verdict["TS > full on LVNC accuracy: paired bootstrap p < 0.05"] == claims.MET
    assert verdict["TS > full on mean(CAM, LVNC) accuracy: paired bootstrap p < 0.05"] == "met"
    # The rare-class target: CAM's row is not significant, their mean is.
    rare = "TS > full on the rare classes: p < 0.05 on both CAM and LVNC, or on their mean"
    assert verdict[rare] == claims.MET
    for p_values, expected in (([0.001, 0.01, 0.04, 0.2, 0.5], claims.MET),  # both rows
                               ([0.001, 0.2, 0.04, 0.2, 0.5], claims.NOT_MET)):  # fmt: skip
        other = pd.DataFrame({"claim": list(claims.SIGNIFICANT), "p_value": p_values})
        assert (
            claims.targets_table(rows, other).set_index("target").loc[rare, "verdict"] == expected
        )
    # No p-value (a side not run) and no rollout record are not met: nothing passes unmeasured.
    assert verdict["IoU reward on > off on MI mean IoU: paired bootstrap p < 0.05"] == "not met"
    bare = claims.targets_table(rows).set_index("target")["verdict"]
    assert bare["sft-* GPPO rollouts format-valid >= 0.85"] == claims.NOT_MET
    assert bare["S1+S2 > S1 only on ACC: paired bootstrap p < 0.05"] == claims.NOT_MET
    rows["table5"][0] = ("none", [{**_metrics(0.5), "parse_rate": 0.5}])
    base = claims.targets_table(rows).set_index("target")["verdict"]
    assert base["none names a class in >= 0.8 of test answers"] == claims.NOT_MET
    assert base["none ACC <= 0.30 (about chance)"] == claims.NOT_MET
