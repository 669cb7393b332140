"""Report tables: mean ± sample std over seeds, the three output formats, and the paper's numbers
kept in their own checked file."""

from __future__ import annotations

import io
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cmr_rd.classes import CLASSES
from cmr_rd.report import tables

REPO = Path(__file__).resolve().parents[1]
PAPER_YAML = REPO / "report" / "paper_reference.yaml"


def approx(x):
    """Table values are stored rounded to 6 decimals."""
    return pytest.approx(x, abs=5e-7)


PAPER_TABLE1 = {
    "Qwen2.5-3B": [0.261, 0.178, 0.033, 0.000, 0.586, 0.035],
    "MedGemma-4B": [0.076, 0.261, 0.192, 0.000, 0.269, 0.524],
    "HuatuoGPT-7B": [0.300, 0.079, 0.555, 0.000, 0.214, 0.125],
    "Seed1.5-VL": [0.000, 0.211, 0.800, 0.000, 0.312, 0.400],
    "CMR-RD": [0.641, 0.622, 0.574, 0.582, 0.611, 0.633],
}
PAPER_TABLE5 = {
    "none": [0.212, 0.244, 0.494],
    "S1 only": [0.261, 0.288, 0.521],
    "S2 only": [0.493, 0.512, 0.683],
    "S1+S2": [0.610, 0.639, 0.703],
}


def _metrics(acc, per_class, *, f1=0.5, auc=0.6, iou=0.4, at50=0.3):
    return {
        "n": 60, "classes": list(CLASSES), "accuracy": acc, "accuracy_strict": acc,
        "macro_f1": f1, "auc_macro": auc, "auc_per_class": dict.fromkeys(CLASSES, auc),
        "per_class_accuracy": dict(zip(CLASSES, per_class, strict=True)),
        "per_class_n": dict.fromkeys(CLASSES, 10), "format_valid_rate": 1.0, "parse_rate": 1.0,
        "mi_n_boxes": 10, "mi_mean_iou": iou, "mi_acc_at_50": at50,
        "confusion": {"labels": [*CLASSES, "unparsed"], "matrix": [[0] * 7 for _ in CLASSES]},
    }  # fmt: skip


SEEDS = [
    _metrics(0.60, [0.70, 0.50, 0.40, 0.30, 0.60, None], f1=0.55, auc=0.70, iou=0.50, at50=0.40),
    _metrics(0.64, [0.60, 0.55, 0.50, 0.35, 0.70, None], f1=0.61, auc=None, iou=0.45, at50=0.50),
    _metrics(0.62, [0.65, 0.45, 0.60, 0.25, 0.65, 0.90], f1=0.58, auc=0.74, iou=None, at50=0.45),
]
ZERO_SHOT = _metrics(0.20, [0.25, 0.10, 0.0, 0.0, 0.5, 0.2], f1=0.1, auc=None, iou=None, at50=None)


def test_summarise_is_mean_and_sample_std_over_non_null():
    mean, std, n = tables.summarise([0.5, None, 0.7, 0.9, None])
    assert n == 3 and mean == approx(0.7)
    assert std == approx(statistics.stdev([0.5, 0.7, 0.9]))  # ddof=1, not 0
    assert std == approx(0.2)
    assert tables.summarise([0.4]) == (0.4, None, 1)
    assert tables.summarise([None, None]) == (None, None, 0)
    assert tables.summarise([]) == (None, None, 0)
    assert tables.summarise([0.3, 0.3]) == (approx(0.3), 0.0, 2)


def test_table1_is_per_class_mean_and_std_over_seeds_in_row_order():
    df = tables.table1([("ours", SEEDS), ("zero-shot", [ZERO_SHOT])])
    assert list(df.columns) == ["model", "seeds"] + [
        f"{c}_{s}" for c in CLASSES for s in ("mean", "std")
    ]
    assert list(df["model"]) == ["ours", "zero-shot"] and list(df["seeds"]) == [3, 1]
    ours = df.iloc[0]
    assert ours["HCM_mean"] == approx(0.65)
    assert ours["HCM_std"] == approx(0.05)
    assert ours["CAM_mean"] == approx(0.5) and ours["CAM_std"] == approx(0.1)
    assert ours["NOR_mean"] == approx(0.9) and math.isnan(ours["NOR_std"])  # one seed
    zero = df.iloc[1]
    assert zero["MI_mean"] == approx(0.5) and math.isnan(zero["MI_std"])
    assert all(df[c].dtype == "float64" for c in df.columns[2:])
    # Reversing the rows reverses the table: nothing is sorted.
    assert list(tables.table1([("b", [ZERO_SHOT]), ("a", SEEDS)])["model"]) == ["b", "a"]


def test_table2_4_5_columns_and_values():
    t2 = tables.table2([("ts", SEEDS), ("static", SEEDS[:2])])
    assert list(t2.columns[-2:]) == ["ACC_mean", "ACC_std"]
    assert t2.loc[0, "ACC_mean"] == approx(0.62)
    assert t2.loc[0, "ACC_std"] == approx(0.02)
    assert t2.loc[1, "ACC_std"] == approx(statistics.stdev([0.60, 0.64]))

    t4 = tables.table4([("hybrid IoU", SEEDS), ("none", [ZERO_SHOT])])
    assert list(t4.columns) == [
        "iou_reward", "seeds", "mean_IoU_mean", "mean_IoU_std", "Acc@0.5_mean", "Acc@0.5_std",
        "ACC_mean", "ACC_std",
    ]  # fmt: skip
    assert t4.loc[0, "mean_IoU_mean"] == approx(0.475)  # the None seed is skipped
    assert t4.loc[0, "mean_IoU_std"] == approx(statistics.stdev([0.50, 0.45]))
    assert t4.loc[0, "Acc@0.5_mean"] == approx(0.45)
    assert math.isnan(t4.loc[1, "mean_IoU_mean"]) and math.isnan(t4.loc[1, "mean_IoU_std"])

    t5 = tables.table5([("S1+S2", SEEDS)])
    assert list(t5.columns) == [
        "config", "seeds", "ACC_mean", "ACC_std", "F1_mean", "F1_std", "AUC_mean", "AUC_std",
    ]  # fmt: skip
    assert t5.loc[0, "F1_mean"] == approx(statistics.mean([0.55, 0.61, 0.58]))
    assert t5.loc[0, "AUC_mean"] == approx(0.72)
    assert t5.loc[0, "AUC_std"] == approx(statistics.stdev([0.70, 0.74]))


def test_values_are_rounded_to_six_decimals():
    seeds = [_metrics(1 / 3, [0.1] * 6), _metrics(2 / 3, [0.1] * 6)]
    df = tables.table5([("x", seeds)])
    assert df.loc[0, "ACC_mean"] == 0.5
    assert df.loc[0, "ACC_std"] == round(statistics.stdev([1 / 3, 2 / 3]), 6)


def test_bad_rows_are_reported_by_name():
    with pytest.raises(ValueError, match="'empty'"):
        tables.table1([("empty", [])])
    broken = {k: v for k, v in SEEDS[0].items() if k != "macro_f1"}
    with pytest.raises(ValueError, match="macro_f1"):
        tables.table5([("broken", [broken])])


def _written(tmp_path, df, **kw):
    paths = tables.write_table(df, tmp_path / "t", **kw)
    assert [p.name for p in paths] == ["t.csv", "t.md", "t.tex"]
    return [p.read_text(encoding="utf-8") for p in paths]


def test_markdown_shows_mean_pm_std_and_dashes(tmp_path):
    df = tables.table4([("hybrid IoU", SEEDS), ("none", [ZERO_SHOT])])
    _, md, _ = _written(tmp_path, df, title="Table 4: IoU reward", note="Means over seeds.")
    lines = md.splitlines()
    assert lines[0] == "### Table 4: IoU reward" and "Means over seeds." in lines
    header = next(line for line in lines if line.startswith("| iou_reward"))
    assert header == "| iou_reward | seeds | mean_IoU | Acc@0.5 | ACC |"
    ours = next(line for line in lines if line.startswith("| hybrid IoU"))
    assert ours == "| hybrid IoU | 3 | 0.475 ± 0.035 | 0.450 ± 0.050 | 0.620 ± 0.020 |"
    zero = next(line for line in lines if line.startswith("| none"))
    assert zero == "| none | 1 | – | – | 0.200 |"  # no value: dash; one value: no ±


# ---- bootstrap intervals and the patient-level tables ------------------------------------------


def _draws(shift: float, keys=("accuracy", "macro_f1", "auc_macro")) -> dict:
    """One seed's bootstrap draws: 101 resamples, evenly spread around 0.5 + shift."""
    return {k: np.linspace(0.4, 0.6, 101) + shift for k in keys}


def _with_patient(m: dict, acc: float) -> dict:
    return m | {"patient": {"level": "patient", "n_patients": 30, "accuracy": acc,
                            "macro_f1": acc - 0.1, "auc_macro": None,
                            "per_class_accuracy": dict.fromkeys(CLASSES, acc),
                            "auc_note": "no per-class scores: the model returned no "
                                        "log-probabilities"}}  # fmt: skip


def test_every_cell_gets_the_interval_of_the_seed_mean(tmp_path):
    draws = {"S1+S2": [_draws(0.0), _draws(0.1), _draws(0.2)]}
    t5 = tables.table5([("S1+S2", SEEDS), ("other", SEEDS[:1])], draws)
    assert list(t5.columns) == ["config", "seeds"] + [
        f"{m}_{s}" for m in ("ACC", "F1", "AUC") for s in ("mean", "std", "ci_lo", "ci_hi")
    ]
    seed_mean = np.linspace(0.4, 0.6, 101) + 0.1
    lo, hi = np.percentile(seed_mean, [2.5, 97.5])
    assert t5.loc[0, "ACC_ci_lo"] == approx(lo) and t5.loc[0, "ACC_ci_hi"] == approx(hi)
    assert t5.loc[0, "ACC_mean"] == approx(0.62)  # the point estimate is still the seed mean
    assert math.isnan(t5.loc[1, "ACC_ci_lo"])  # a row without draws has no interval
    _, md, tex = _written(tmp_path, t5, title="T5", note="n")
    row = next(line for line in md.splitlines() if line.startswith("| S1+S2"))
    assert row.startswith(f"| S1+S2 | 3 | 0.620 ± 0.020 [{lo:.3f}, {hi:.3f}] |")
    assert "| other | 1 | 0.600 | 0.550 | 0.700 |" in md
    assert f"0.620 $\\pm$ 0.020 [{lo:.3f}, {hi:.3f}]" in tex and _balanced(tex)
    back = pd.read_csv(tmp_path / "t.csv")
    assert back.loc[0, "ACC_ci_hi"] == approx(hi)


def test_patient_tables_read_the_patient_part_and_say_so():
    seeds = [_with_patient(m, acc) for m, acc in zip(SEEDS, (0.5, 0.6, 0.7), strict=True)]
    draws = {"S1+S2": [_draws(0.0, ("accuracy", "macro_f1", "auc_macro")) for _ in seeds]}
    for d in draws["S1+S2"]:
        d["auc_macro"] = np.full(101, np.nan)  # no scores: no AUC in any resample
    t5p = tables.build("table5_patient", [("S1+S2", seeds)], draws)
    assert t5p.loc[0, "ACC_mean"] == approx(0.6) and t5p.loc[0, "F1_mean"] == approx(0.5)
    assert math.isnan(t5p.loc[0, "AUC_mean"]) and math.isnan(t5p.loc[0, "AUC_ci_lo"])
    assert t5p.loc[0, "ACC_ci_lo"] < 0.5 < t5p.loc[0, "ACC_ci_hi"]
    with pytest.raises(ValueError, match="'plain'.*'patient'"):
        tables.build("table5_patient", [("plain", SEEDS)])
    assert list(tables.build("table1_patient", [("S1+S2", seeds)]).columns)[-2:] == [
        "AUC_mean",
        "AUC_std",
    ]

    class Boot:
        iterations, n_patients = 1000, 30

    note = tables.table_note("table5_patient", [("S1+S2", seeds)], ["S2 only (x)"], Boot)
    assert note.startswith("Patient level, 30 test patients: per patient, the mean of its")
    assert "1000 resamples of the 30 test patients" in note
    assert "AUC of S1+S2: no per-class scores: the model returned no log-probabilities." in note
    assert note.endswith("Not run, so not shown: S2 only (x).")
    plain = tables.table_note("table4", [("on", SEEDS)], [], None)
    assert plain == "Test split, 60 slices; mean ± std over seeds (n = 3)."


def _balanced(tex: str) -> bool:
    depth = 0
    stripped = tex.replace(r"\{", "").replace(r"\}", "")
    for ch in stripped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def test_tex_is_booktabs_and_escaped(tmp_path):
    df = tables.table4([("s1s2_ts 100% & more", SEEDS), ("none", [ZERO_SHOT])])
    _, _, tex = _written(tmp_path, df, title="IoU reward_ablation", note="50% of MI")
    assert r"\begin{table}" in tex and r"\end{table}" in tex
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\caption{IoU reward\_ablation}" in tex
    assert r"mean\_IoU & Acc@0.5 & ACC \\" in tex
    assert r"s1s2\_ts 100\% \& more & 3 & 0.475 $\pm$ 0.035" in tex
    assert r"none & 1 & -- & -- & 0.200 \\" in tex
    assert r"50\% of MI" in tex
    assert _balanced(tex)
    assert "±" not in tex and "–" not in tex


def test_tex_escape_handles_every_special():
    assert tables.tex_escape("a_b%c&d$e#f{g}h~i^j\\k") == (
        r"a\_b\%c\&d\$e\#f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )


def test_csv_round_trips_numbers_and_writes_are_byte_identical(tmp_path):
    df = tables.table1([("ours", SEEDS), ("zero-shot", [ZERO_SHOT])])
    first = [p.read_bytes() for p in tables.write_table(df, tmp_path / "a" / "t1", "T1", "n")]
    second = [p.read_bytes() for p in tables.write_table(df, tmp_path / "b" / "t1", "T1", "n")]
    assert first == second
    back = pd.read_csv(io.BytesIO(first[0]))
    assert list(back.columns) == list(df.columns)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)


def test_paper_reference_loads_and_gives_the_published_numbers():
    ref = tables.load_paper_reference(PAPER_YAML)
    assert "CVPR 2026" in ref["source"]["venue"] and "CMR-RD" in ref["source"]["title"]
    assert len(ref["qualitative"]) == 3
    assert any(q.startswith("Fig. 5: TS raises") for q in ref["qualitative"])
    paper = tables.paper_tables(ref)
    assert set(paper) == {"paper_table1", "paper_table5"}
    t1, t5 = paper["paper_table1"], paper["paper_table5"]
    assert list(t1["model"]) == list(PAPER_TABLE1)
    for _, row in t1.iterrows():
        assert [row[f"{c}_mean"] for c in CLASSES] == PAPER_TABLE1[row["model"]]
        assert all(pd.isna(row[f"{c}_std"]) for c in CLASSES)
    assert list(t5["config"]) == list(PAPER_TABLE5)
    for _, row in t5.iterrows():
        assert [row["ACC_mean"], row["F1_mean"], row["AUC_mean"]] == PAPER_TABLE5[row["config"]]
    # Same columns as ours, so the two can sit side by side.
    assert list(t1.columns) == list(tables.table1([("x", SEEDS)]).columns)
    assert list(t5.columns) == list(tables.table5([("x", SEEDS)]).columns)


def test_paper_table_markdown_has_no_spread(tmp_path):
    t5 = tables.paper_tables(tables.load_paper_reference(PAPER_YAML))["paper_table5"]
    _, md, _ = _written(tmp_path, t5, title="Paper Table 5 (published)")
    assert "| S1+S2 | – | 0.610 | 0.639 | 0.703 |" in md and "±" not in md


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("LVNC: 0.582, ", "", "table1.rows[4] (CMR-RD).LVNC"),  # a class missing
        ("F1: 0.288", 'F1: "0.28S"', "table5.rows[1] (S1 only).F1"),  # not a number
        ("F1: 0.288", "F1: true", "table5.rows[1] (S1 only).F1"),  # a bool is not a number
        ("AUC: 0.703", "AUC: 70.3", "table5.rows[3] (S1+S2).AUC"),  # a percentage slipped in
        ("HCM: 0.076", "HMC: 0.076", "table1.rows[1] (MedGemma-4B)"),  # a typo in a class
        ('venue: "CVPR 2026"', "", "source.venue"),
    ],
)
def test_bad_paper_reference_names_file_and_key(tmp_path, old, new, key):
    text = PAPER_YAML.read_text(encoding="utf-8")
    assert old in text
    bad = tmp_path / "paper_reference.yaml"
    bad.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        tables.load_paper_reference(bad)
    assert str(bad) in str(err.value) and key in str(err.value)


def test_unparseable_paper_reference_names_file(tmp_path):
    bad = tmp_path / "ref.yaml"
    bad.write_text("source: [unclosed\n", encoding="utf-8")
    with pytest.raises(ValueError, match="ref.yaml"):
        tables.load_paper_reference(bad)
