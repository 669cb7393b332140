"""The offline rewriter, the QC checks and the clinician's overrides."""

from __future__ import annotations

import json
from collections import defaultdict

import pandas as pd
import pytest

from cmr_rd.classes import canonical_label
from cmr_rd.rewrite import phi
from cmr_rd.rewrite.offline import offline_rewrite
from cmr_rd.rewrite.qc import QCConfig, ReviewError, decide, read_decisions, run_checks
from cmr_rd.rewrite.templates import Template, parse_reply
from cmr_rd.synth.cohort import SynthConfig, generate_cohort

CFG = QCConfig()
MI_BOX = [100.0, 80.0, 140.0, 120.0]


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    generate_cohort(
        SynthConfig(scale=0.0, min_patients_per_class=6, lge_slices=6, matrix=96, cine_phases=1),
        root,
        seed=21,
        workers=1,
    )
    table = pd.read_csv(root / "labels.csv", dtype=str)
    return [
        (r.patient_id, canonical_label(r.label), phi.scrub(r.report, known=[r.patient_id]))
        for r in table.itertuples()
    ]


def _template(**changes) -> Template:
    base = {
        "observation": "Subendocardial LGE in the mid anterior wall, 50% transmural.",
        "localisation": "The scar involves the anterior and anteroseptal segments; on this slice "
        "the lesion lies within [100, 80, 140, 120].",
        "differential": "Subendocardial enhancement in one coronary territory is ischaemic; "
        "mid-wall or diffuse patterns would point to a cardiomyopathy. "
        "Final diagnosis: myocardial infarction (MI).",
        "diagnosis": "MI",
    }
    base.update(changes)
    return Template(**base)


def test_offline_templates_are_faithful_parse_and_pass_qc(reports):
    outcomes = defaultdict(list)
    for pid, label, scrubbed in reports:
        box = MI_BOX if label == "MI" else None
        template, problem = parse_reply(offline_rewrite(scrubbed, box, pid, seed=1))
        assert problem is None
        checks = run_checks(template, label, box, CFG, phi.find_phi)
        outcomes[label].append(decide(checks, None)[0])
        # Faithful: the observation quotes at least one of the report's own findings lines.
        lines = [x.strip().lower() for x in scrubbed.splitlines() if len(x.strip()) > 20]
        observed = template.observation.lower()
        assert any(line[:60] in observed for line in lines) or "no late gadolinium" in observed
    for label, results in outcomes.items():
        assert results.count("accepted") >= len(results) - 1, (label, results)


def test_offline_text_varies_within_a_class(reports):
    thinks = defaultdict(set)
    for pid, label, scrubbed in reports:
        box = MI_BOX if label == "MI" else None
        template, _ = parse_reply(offline_rewrite(scrubbed, box, pid, seed=1))
        thinks[label].add(template.think())
    assert all(len(texts) == 6 for texts in thinks.values())  # no two patients alike
    again = parse_reply(offline_rewrite(reports[0][2], None, reports[0][0], seed=1))[0]
    assert again.think() in thinks[reports[0][1]]  # deterministic


def test_a_clean_template_passes_every_check():
    assert all(v is None for v in run_checks(_template(), "MI", MI_BOX, CFG, phi.find_phi).values())


@pytest.mark.parametrize(
    "changes, label, box, failing",
    [
        ({"diagnosis": "HCM"}, "MI", MI_BOX, "diagnosis"),
        ({"localisation": "The scar involves the anterior wall."}, "MI", MI_BOX, "localisation"),
        ({}, "MI", None, "localisation"),  # quotes a box where the image has none
        ({}, "MI", None, "lesion_box"),  # an infarct template needs its annotated box
        ({"observation": "Short.", "localisation": "Anterior wall [100, 80, 140, 120].",
          "differential": "Final diagnosis: MI."}, "MI", MI_BOX, "length"),
        ({"differential": "Subendocardial scar in one territory. This is possibly MI or HCM."},
         "MI", MI_BOX, "hedging"),
        ({"observation": "Subendocardial LGE seen on 07/13/2022 in the anterior wall, 50% "
          "transmural."}, "MI", MI_BOX, "phi"),
        ({"diagnosis": "B"}, "MI", MI_BOX, "parse"),
        ({"observation": "The patient is unwell."}, "MI", MI_BOX, "parts"),
    ],
)  # fmt: skip
def test_each_check_catches_its_fault(changes, label, box, failing):
    checks = run_checks(_template(**changes), label, box, CFG, phi.find_phi)
    assert checks[failing], checks
    assert decide(checks, None)[0] == "rejected"


def test_review_overrides(tmp_path):
    soft = {"length": "12 words", "parts": None, "diagnosis": None, "phi": None, "parse": None}
    hard = {"diagnosis": "diagnosis 'HCM' is not the label MI"}
    assert decide(soft, ("approve", "fine"))[0] == "accepted"
    assert decide(hard, ("approve", "fine"))[0] == "rejected"  # approval cannot lift a hard fail
    assert decide({}, ("reject", "odd wording")) == ("rejected", "reviewer: odd wording")
    sheet = tmp_path / "review.csv"
    sheet.write_text("item_id,decision,comment\nP1,approve,ok\nP2,Reject,no\n,,\n")
    assert read_decisions(sheet, {"P1", "P2"}) == {"P1": ("approve", "ok"), "P2": ("reject", "no")}
    sheet.write_text("item_id,decision,comment\nP9,approve,\nP1,maybe,\n")
    with pytest.raises(ReviewError) as err:
        read_decisions(sheet, {"P1"})
    assert "row 2: unknown item_id 'P9'" in str(err.value)
    assert "row 3: decision 'maybe'" in str(err.value)
    assert read_decisions(tmp_path / "missing.csv", {"P1"}) == {}


def test_template_reply_parsing():
    good = json.dumps(_template().to_dict())
    assert parse_reply(good)[0] == _template()
    assert parse_reply("```json\n" + good + "\n```")[0] == _template()
    assert parse_reply("not json")[1] == "reply is not JSON"
    assert parse_reply("[1, 2]")[1] == "reply is not a JSON object"
    assert (
        "lacks differential"
        in parse_reply(json.dumps({**_template().to_dict(), "differential": ""}))[1]
    )


def test_missing_reports_are_refused_with_a_reason_not_a_crash(tmp_path):
    from cmr_rd.ingest.deid import DeidKey
    from cmr_rd.rewrite.stage import scrub_reports

    key = DeidKey(b"k" * 32, "test")
    labels = tmp_path / "labels.csv"
    labels.write_text("patient_id,label\nA,HCM\n")
    out = scrub_reports(labels, {key.pseudonym("A"), key.pseudonym("B")}, key)
    assert out.scrubbed == {}
    assert out.withheld == {
        key.pseudonym("A"): "no report",
        key.pseudonym("B"): "no label row for this patient",
    }


def test_the_stage_redacts_what_the_detector_sees_and_withholds_only_what_stays(tmp_path):
    """The stage's gate: a relative's name the scrubber cannot see is redacted and the report
    kept (recorded by category and shape); an MRN re-typed in other groups, which only the
    exact known list sees, withholds the report with a reason that names no text; a clean
    report passes unchanged. A site's safe list keeps its own words."""
    import csv

    from cmr_rd.ingest.deid import DeidKey
    from cmr_rd.rewrite.stage import scrub_reports

    key = DeidKey(b"k" * 32, "test")
    labels = tmp_path / "labels.csv"
    reports = {
        "H-9592820": "FINDINGS: LVEF 55%. Her cousin Pemberton, Priya had a similar scan.",
        "H-1234567": "FINDINGS: LVEF 48%. Old number 12 34 567 on file.",
        "H-7654321": "FINDINGS: LVEF 61%, segs 4-5 normal. DIFFUSE T2* < 20 MS INDICATES IRON LOADING.",
    }
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "label", "report"])
        writer.writerows([pid, "HCM", text] for pid, text in reports.items())
    pseudo = {pid: key.pseudonym(pid) for pid in reports}
    out = scrub_reports(labels, set(pseudo.values()), key)
    first, second, third = (pseudo[p] for p in reports)
    assert out.scrubbed[first] == "FINDINGS: LVEF 55%. Her cousin [NAME] had a similar scan."
    assert out.redacted[first] == ["detector: name 'Xxxx+, Xxxx+'"]
    assert out.withheld[second] == (
        "PHI detected after scrubbing: known list: known identifier 're-typed number'"
    )
    assert "[NAME]" in out.scrubbed[third]  # philter reads the capitals as a salutation
    site = tmp_path / "safe.yaml"
    site.write_text("terms: [INDICATES IRON LOADING]\n")
    out = scrub_reports(labels, set(pseudo.values()), key, phi.SafeList.load(site))
    assert out.scrubbed[third] == reports["H-7654321"] and out.redacted[third] == []


def test_an_infarct_template_without_its_box_is_refused_even_when_approved():
    """QC refuses an MI template without the annotated lesion box (a hard check: a reviewer's
    approval cannot lift it), and accepts the same text for another class without a box."""
    no_box = _template(localisation="The scar involves the anterior wall, no focal box given.")
    checks = run_checks(no_box, "MI", None, CFG, phi.find_phi)
    assert checks["lesion_box"] == "MI template without a lesion box from the annotation"
    assert decide(checks, ("approve", "looks fine"))[0] == "rejected"
    assert run_checks(no_box, "MI", MI_BOX, CFG, phi.find_phi)["lesion_box"] is None


def test_the_pool_takes_an_infarct_slice_that_shows_the_lesion():
    import pandas as pd

    from cmr_rd.rewrite.stage import representative_slices

    rows = []
    for patient, label, boxed in (("p1", "MI", [False, False, True, True]),
                                  ("p2", "MI", [False, False, False, False]),
                                  ("p3", "HCM", [False, False, False, False])):  # fmt: skip
        for rank, has in enumerate(boxed):
            rows.append({"patient": patient, "label": label, "slice_rank": rank,
                         "image": f"{patient}_{rank}", "box": [1.0, 2.0, 30.0, 40.0] if has
                         else None})  # fmt: skip
    chosen = representative_slices(pd.DataFrame(rows)).set_index("patient")["image"]
    # p1: the middle of its boxed slices; p2 (no slice shows its lesion) has no template image;
    # p3: the middle of all its slices.
    assert chosen.to_dict() == {"p1": "p1_2", "p3": "p3_1"}
