"""The judge's library: findings, the offline rubric, blinding, the clinician sheet, intervals,
the claim row and the LLM reply validator."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cmr_rd.classes import CLASSES
from cmr_rd.format import render_target
from cmr_rd.judge.findings import (
    HYPERTROPHY,
    LGE,
    NO_LGE,
    NULLING,
    TRABECULATION,
    extract,
    findings_of_reference,
    pattern,
)
from cmr_rd.judge.items import build_items, item_id, model_name, sample_cases, shuffled
from cmr_rd.judge.llm import parse_rating, validate
from cmr_rd.judge.rubric import AXES, ERRORS, rate, read_chain
from cmr_rd.judge.sheet import RatingsSheetError, read_sheet, write_sheet
from cmr_rd.judge.summary import (
    bootstrap_ci,
    claim_rows,
    claims_table_rows,
    markdown,
    summary_table,
)
from cmr_rd.rewrite import phi
from cmr_rd.rewrite.offline import offline_rewrite
from cmr_rd.rewrite.templates import parse_reply
from cmr_rd.stage import KNOWN_ERRORS

MI_BOX = [80.0, 60.0, 140.0, 120.0]
WHOLE = (0, 0, 256, 256)


def _report(label: str, index: int) -> str:
    """A scrubbed synthetic report, written from a drawn anatomy as the cohort's are."""
    from cmr_rd.synth import phantom
    from cmr_rd.synth.report import make_phi, write_report

    rng = np.random.default_rng([index, CLASSES.index(label)])
    anatomy = phantom.draw_anatomy(label, rng, 10)
    text = write_report(anatomy, make_phi(rng, label, index, 3), rng, 1.5, "Siemens")
    return phi.scrub(text)


def _chain(report: str, label: str, answer: str | None = None, box=None) -> str:
    """The offline rewriter's chain for the report, as a model trained on it would write."""
    box = box if box is not None else (MI_BOX if label == "MI" else None)
    template, _ = parse_reply(offline_rewrite(report, box, "case", 1))
    return render_target(template.think(), box or WHOLE, answer or label)


# ------------------------------------------------------------------------------ findings


def test_findings_of_a_report_and_of_a_chain():
    report = (
        "FINDINGS:\nThe left ventricle is normal in size (LVEDD 50 mm).\n"
        "Asymmetric septal hypertrophy: maximal wall thickness 21 mm in the anteroseptum.\n"
        "Patchy mid-wall LGE at the anterior RV insertion point (basal-to-mid).\n"
        "No pericardial effusion.\n\nIMPRESSION:\nHypertrophic cardiomyopathy.\n"
    )
    found = findings_of_reference(report)
    assert {LGE, HYPERTROPHY} <= set(found) and NO_LGE not in found
    assert found[LGE].layers == {"mid-wall"} and "insertion point" in found[LGE].places
    # A chain: hypotheticals and contrasts state nothing, class names are not findings.
    chain = (
        "There is diffuse global subendocardial LGE; the myocardium is difficult to null. "
        "An infarct would follow a coronary territory, unlike trabeculated walls. "
        "Final diagnosis: dilated cardiomyopathy."
    )
    stated = extract(chain)
    assert set(stated) == {LGE, NULLING}
    assert stated[LGE].extent == {"diffuse"} and stated[LGE].layers == {"subendocardial"}
    # Negations: an unqualified one is the finding "no enhancement"; a qualified one, nothing.
    assert set(extract("No late gadolinium enhancement.")) == {NO_LGE}
    assert set(extract("There is no subendocardial scar.")) == set()
    assert TRABECULATION in extract("Prominent trabeculation in the apical lateral wall.")


@pytest.mark.parametrize("label", CLASSES)
def test_the_findings_of_reports_and_their_chains_point_to_the_label(label):
    """Generator reports of every phrasing: the extractor's pattern is the class, on the report
    and on the offline rewriter's chain of it."""
    for index in range(12):
        report = _report(label, index)
        assert pattern(findings_of_reference(report))[0] == label, report
        think = read_chain(_chain(report, label)).think
        assert pattern(extract(think))[0] == label, think


# ------------------------------------------------------------------------------ rubric


def test_a_faithful_coherent_chain_rates_high_and_in_range():
    for label in CLASSES:
        report = _report(label, 1)
        rating = rate(_chain(report, label), report)
        assert rating.coherence == 5, rating.reasons
        assert rating.accuracy >= 4 and rating.readability >= 4, rating.reasons
        for axis in AXES:
            assert 1 <= getattr(rating, axis) <= 5 and rating.reasons[axis]


def test_an_incoherent_chain_scores_below_a_coherent_one():
    """The same MI chain, answered HCM: the answer contradicts the named pattern."""
    report = _report("MI", 2)
    coherent = rate(_chain(report, "MI"), report)
    incoherent = rate(_chain(report, "MI", answer="HCM"), report)
    assert incoherent.coherence < coherent.coherence == 5
    assert "point to MI, the answer is HCM" in incoherent.reasons["coherence"]
    # A non-lesion class answered with a focal box is also incoherent.
    nor = _report("NOR", 2)
    assert (
        rate(_chain(nor, "NOR", box=MI_BOX), nor).coherence
        < rate(_chain(nor, "NOR"), nor).coherence
    )


def test_a_finding_the_reference_lacks_is_counted_unsupported():
    report = _report("NOR", 3)
    honest = rate(_chain(report, "NOR"), report)
    think = "Observation: dilated ventricle with prominent trabeculation of the lateral wall. " * 1
    padded = think + read_chain(_chain(report, "NOR")).think
    invented = rate(render_target(padded, WHOLE, "NOR"), report)
    assert invented.errors["unsupported_finding"] >= honest.errors["unsupported_finding"] + 2
    assert invented.accuracy < honest.accuracy
    assert "unsupported: trabeculation" in invented.reasons["accuracy"]
    # The chain of an HCM patient against an infarct's report: the enhancement is there, but in
    # the wrong place and layer, and the hypertrophy is not.
    mi = _report("MI", 4)
    other = rate(_chain(_report("HCM", 4), "HCM"), mi)
    assert other.errors["wrong_location"] == other.errors["wrong_severity"] == 1
    assert "unsupported: hypertrophy" in other.reasons["accuracy"]
    assert other.accuracy < rate(_chain(mi, "MI"), mi).accuracy
    # The infarct's report against an empty one: every diagnostic finding is missed.
    assert rate(_chain(mi, "MI"), mi).errors["missed_finding"] == 0
    assert (
        rate(
            "<think>Hello.</think><location>[0,0,256,256]</location><answer>MI</answer>", mi
        ).errors["missed_finding"]
        >= 1
    )


def test_broken_and_empty_completions_rate_low():
    report = _report("DCM", 1)
    empty = rate("", report)
    assert (empty.accuracy, empty.coherence, empty.readability) == (1, 1, 1)
    loop = rate("<think>The</location>The</location>The</location>The</location>" * 4, report)
    assert loop.readability <= 2 and loop.coherence == 1
    assert set(loop.errors) == set(ERRORS)


# ------------------------------------------------------------------------------ blinding


def _test_split(n_per_class=4) -> pd.DataFrame:
    rows = [
        {"id": f"P{c}{i}_z02", "patient": f"P{c}{i}", "label": c, "image": f"img/{c}{i}.png"}
        for c in CLASSES
        for i in range(n_per_class)
    ]
    rows[-1]["label"] = "MI"  # one class with fewer cases
    return pd.DataFrame(rows)


def _samples(cases: pd.DataFrame, text: str) -> pd.DataFrame:
    return pd.DataFrame({"id": cases["id"], "completion": [f"{text} {i}" for i in cases["id"]]})


def test_sample_is_seeded_per_class_and_capped():
    test = _test_split()
    cases = sample_cases(test, 3, seed=11)
    counts = cases["label"].value_counts()
    assert counts["NOR"] == 3 and counts["HCM"] == 3
    assert sample_cases(test, 3, seed=11).equals(cases)
    assert not sample_cases(test, 3, seed=12)["id"].tolist() == cases["id"].tolist()
    assert sample_cases(test, 10, seed=11)["label"].value_counts()["NOR"] == 3  # fewer: all


def test_blinded_ids_are_opaque_stable_and_round_trip(tmp_path):
    cases = sample_cases(_test_split(), 2, seed=5)
    models = {"sft-ts-iou/seed1": _samples(cases, "a"), "none": _samples(cases, "b")}
    items = build_items(cases, models, seed=5)
    ids = set(items.key["id"])
    assert len(ids) == 2 * len(cases)
    for ident in ids:  # nothing of model, seed or case can be read from an id
        assert all(part not in ident.lower() for part in ("sft", "seed", "none", "p", "_z"))
    # Adding a model keeps every existing id (a filled sheet still joins).
    more = build_items(cases, {**models, "zeroshot/X": _samples(cases, "c")}, seed=5)
    assert ids < set(more.key["id"])
    assert item_id(5, cases["id"][0], "none") == item_id(5, cases["id"][0], "none")
    assert item_id(6, cases["id"][0], "none") != item_id(5, cases["id"][0], "none")
    # The key maps back: written, read, every id to its model and case.
    items.key.to_csv(tmp_path / "key.csv", index=False)
    key = pd.read_csv(tmp_path / "key.csv").set_index("id")
    for ident, completion in items.completions.items():
        row = key.loc[ident]
        assert (
            completion == f"{'a' if row['evaluation'] == 'sft-ts-iou/seed1' else 'b'} {row['case']}"
        )
        assert row["model"] == model_name(row["evaluation"])
    assert model_name("sft-ts-iou/seed3") == "sft-ts-iou" and model_name("api/GPT") == "api/GPT"
    # Each judge sees its own seeded order.
    order = shuffled(sorted(ids), 5, "rubric")
    assert sorted(order) == sorted(ids) and order == shuffled(sorted(ids), 5, "rubric")
    assert order != shuffled(sorted(ids), 5, "clinician")


# ------------------------------------------------------------------------------ sheet


def test_sheet_round_trip_and_errors_name_file_and_row(tmp_path):
    ids = ["Jaaa", "Jbbb", "Jccc"]
    sheet = tmp_path / "sheet.csv"
    write_sheet([{"id": i, "image": f"{i}.png", "chain": "Reasoning: x"} for i in ids], sheet)
    table = pd.read_csv(sheet, dtype=str, keep_default_na=False)
    assert list(table.columns) == ["id", "image", "chain", *AXES, "comment"]
    table.loc[0, list(AXES)] = ["4", "5.0", "3"]
    table.loc[1, "accuracy"] = "2"  # partly rated
    table.to_csv(sheet, index=False)
    ratings, unrated = read_sheet(sheet, set(ids))
    assert unrated == 1
    assert ratings[0] == {
        "id": "Jaaa",
        "accuracy": 4,
        "coherence": 5,
        "readability": 3,
        "comment": "",
    }
    assert ratings[1]["coherence"] is None
    for bad, message in [
        ({"id": "Jzzz"}, "row 4: unknown id 'Jzzz'"),
        ({"id": "Jaaa"}, "row 4: id Jaaa appears twice"),
        ({"id": "Jccc", "accuracy": "6"}, "row 4: accuracy '6' is not an integer 1-5"),
        ({"id": "Jccc", "readability": "3.5"}, "row 4: readability '3.5' is not an integer 1-5"),
        ({"id": "Jccc", "coherence": "good"}, "row 4: coherence 'good' is not an integer 1-5"),
    ]:
        edited = table.copy()
        edited.loc[2, "id"] = bad.pop("id")
        for column, value in bad.items():
            edited.loc[2, column] = value
        edited.to_csv(sheet, index=False)
        with pytest.raises(RatingsSheetError) as caught:
            read_sheet(sheet, set(ids))
        assert str(caught.value) == f"{sheet}: {message}"
    assert {"RatingsSheetError", "JudgeInputError"} <= KNOWN_ERRORS


# ------------------------------------------------------------------------------ summary


def _ratings(scores: dict[str, list[float]], cases: list[str], judge="rubric") -> pd.DataFrame:
    rows = []
    for model, values in scores.items():
        for case, value in zip(cases, values, strict=True):
            rows.append(
                {"id": f"{model}{case}", "model": model, "evaluation": f"{model}/seed1",
                 "case": case, "judge": judge, "accuracy": value, "coherence": value,
                 "readability": value, **dict.fromkeys(ERRORS, 0.0)}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan])
    index = np.random.default_rng(0).integers(0, len(values), size=(2000, len(values)))
    low, high = bootstrap_ci(values, index)
    assert low < 3.0 < high and 1.0 <= low and high <= 5.0
    assert bootstrap_ci(np.full(6, 2.0), index) == (2.0, 2.0)
    cases = [f"c{i}" for i in range(8)]
    frame = _ratings({"a": [5, 4, 5, 4, 5, 4, 5, 4], "b": [1, 2, 1, 2, 1, 2, 1, 2]}, cases)
    summary = summary_table(frame, cases, 500, seed=3)
    assert summary.equals(summary_table(frame, cases, 500, seed=3))
    a = summary.set_index("model").loc["a"]
    assert a["accuracy_mean"] == 4.5 and a["accuracy_ci_low"] <= 4.5 <= a["accuracy_ci_high"]
    assert a["seeds"] == 1 and a["rated"] == 8
    assert "| rubric | a | 1 | 8 / 8 | 4.50 [" in markdown(summary)
    assert "errors per item" in markdown(summary)


def test_claim_row_holds_only_when_the_showcase_is_clearly_best():
    cases = [f"c{i}" for i in range(10)]
    clear = _ratings(
        {"sft-ts-iou": [5, 5, 4, 5, 5, 4, 5, 5, 4, 5], "none": [2, 1, 2, 2, 1, 2, 1, 2, 2, 1],
         "s1": [3, 3, 2, 3, 3, 3, 2, 3, 3, 3]}, cases,
    )  # fmt: skip
    row = claim_rows(clear, "sft-ts-iou", cases, 1000, seed=1).iloc[0]
    assert row["verdict"] == "holds" and row["right"] == "s1"
    assert row["difference"] == pytest.approx(4.7 - 2.8) and row["ci_low"] > 0
    assert row["p_value"] == pytest.approx(1 / 1001, abs=1e-4)  # (1 + 0) / (1 + B)
    table = claims_table_rows(claim_rows(clear, "sft-ts-iou", cases, 1000, seed=1))
    from cmr_rd.report.claims import COLUMNS

    assert list(table.columns) == COLUMNS and table.iloc[0]["verdict"] == "holds"
    assert table.iloc[0]["claim"].endswith("vs s1")
    tied = _ratings({"sft-ts-iou": [3, 4] * 5, "s1": [4, 3] * 5}, cases)
    row = claim_rows(tied, "sft-ts-iou", cases, 1000, seed=1).iloc[0]
    assert row["verdict"] == "not shown" and row["ci_low"] < 0 < row["ci_high"]
    assert 0.2 < row["p_value"] < 0.8
    absent = claim_rows(tied, "sft-full-iou", cases, 1000, seed=1).iloc[0]
    assert absent["verdict"] == "not shown" and pd.isna(absent["left_mean"])


# ------------------------------------------------------------------------------ LLM replies


def test_llm_replies_are_validated_strictly():
    good = {
        "accuracy": {"score": 4, "reason": "mostly supported"},
        "coherence": {"score": 5, "reason": "follows"},
        "readability": {"score": 3, "reason": "some repetition"},
        "errors": dict.fromkeys(ERRORS, 0),
    }
    assert validate(json.dumps(good)) is None
    assert validate("```json\n" + json.dumps(good) + "\n```") is None
    rating, _ = parse_rating(json.dumps(good))
    assert rating.scores == {"accuracy": 4, "coherence": 5, "readability": 3}
    for broken in (
        {**good, "accuracy": {"score": 6, "reason": "x"}},
        {**good, "accuracy": {"score": 4.5, "reason": "x"}},
        {**good, "accuracy": {"score": True, "reason": "x"}},
        {**good, "coherence": {"score": 3, "reason": ""}},
        {**good, "errors": {**good["errors"], "missed_finding": -1}},
        {k: v for k, v in good.items() if k != "readability"},
        {**good, "model": "gpt-4o"},
    ):
        assert validate(json.dumps(broken)) is not None
    assert validate("I rate it 4/5.") == "reply is not JSON"


def test_the_judge_prompt_passes_the_phi_gate():
    """The gate reads the whole request: a rubric it flags would refuse every item."""
    from cmr_rd.judge.llm import SYSTEM, user_prompt

    assert phi.find_phi(SYSTEM) == []
    report = _report("HCM", 5)
    from cmr_rd.judge.findings import reference_text

    prompt = user_prompt(reference_text(report), read_chain(_chain(report, "HCM")).text())
    assert phi.find_phi(prompt) == [] and "[" not in reference_text(report).split("Findings:")[1]
