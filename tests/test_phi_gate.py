"""The PHI gate: scrub removes every planted identifier; find_phi runs two more layers, the
independent detector (philter) and the exact known-identifier list, each a real check.

Ground truth is the synthetic cohort's phi_strings.json (every PHI string planted anywhere).
A freshly generated small cohort is always tested; the demo cohort in data/synthetic is tested
too when a demo run has produced it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from cmr_rd.rewrite.phi import (
    PLACEHOLDERS,
    GateResult,
    SafeList,
    SafeListError,
    find_phi,
    gate,
    scrub,
    span_shape,
)
from openai_loopback import small_cohort

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "synthetic"
CATEGORIES = {  # '<layer>: <category>', as find_phi reports them
    *(
        f"detector: {c}"
        for c in (
            "addresses", "age", "contact", "dates", "dicom name", "mrn_id", "name",
            "organizations", "salutations", "ucsf_regex",
        )
    ),
    "known list: known identifier",
}  # fmt: skip
MEASURE_RE = re.compile(r"\d+(?:\.\d+)?\s?(?:mm|ms|%|T\b|mmol/kg)")


@dataclass(frozen=True)
class Cohort:
    ids: list[str]
    reports: list[str]
    strings: list[str]


def _load(root: Path) -> Cohort:
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    strings = json.loads((root / "phi_strings.json").read_text())["strings"]
    return Cohort(list(table["patient_id"]), list(table["report"]), strings)


@pytest.fixture(scope="module", params=["generated", "demo"])
def cohort(request: pytest.FixtureRequest) -> Cohort:
    if request.param == "generated":
        return _load(small_cohort())
    if not (DEMO / "labels.csv").is_file() or not (DEMO / "phi_strings.json").is_file():
        pytest.skip("data/synthetic/labels.csv absent (no demo run yet); generated cohort tested")
    return _load(DEMO)


def survivors(texts: list[str], strings: list[str]) -> dict[str, int]:
    """Planted strings still present (case-insensitive) -> in how many texts.

    A 4-gram index rejects almost every string at once (all planted strings have >= 4
    characters), so ~10k strings against ~400 reports take well under a second."""
    lowered = [t.lower() for t in texts]
    joined = "\x01".join(lowered)
    grams = {joined[i : i + 4] for i in range(len(joined) - 3)}
    hits = [
        s
        for s in map(str.lower, strings)
        if all(s[i : i + 4] in grams for i in range(len(s) - 3)) and s in joined
    ]
    return {s: sum(s in t for t in lowered) for s in hits}


def clinical_part(report: str) -> str:
    """Indication to impression: the clinical text between the header and the sign-off."""
    return report[report.index("CLINICAL INDICATION") : report.index("\nReported by")]


# ----------------------------------------------------------------------------- whole cohorts


def test_scrub_with_known_removes_every_planted_string(cohort: Cohort) -> None:
    assert len(cohort.reports) >= 48
    scrubbed = [scrub(r, known=[pid]) for r, pid in zip(cohort.reports, cohort.ids, strict=True)]
    assert survivors(scrubbed, cohort.strings) == {}
    for pid, text in zip(cohort.ids, scrubbed, strict=True):
        assert find_phi(text, known=[pid]) == [], text


def test_clinical_content_survives_and_is_not_flagged(cohort: Cohort) -> None:
    for pid, report in zip(cohort.ids, cohort.reports, strict=True):
        text = scrub(report, known=[pid])
        body = clinical_part(report)
        assert body in text, "clinical lines were altered"
        assert MEASURE_RE.findall(text) == MEASURE_RE.findall(report)
        assert MEASURE_RE.findall(body), "test data without measurements proves nothing"
        assert find_phi(body, known=[pid]) == []


def test_generic_rules_carry_the_load_without_known_identifiers(cohort: Cohort) -> None:
    scrubbed = [scrub(r) for r in cohort.reports]
    assert survivors(scrubbed, cohort.strings) == {}
    assert all(find_phi(t) == [] for t in scrubbed)


def test_detector_sees_the_phi_in_raw_reports(cohort: Cohort) -> None:
    """find_phi is not trivially []: every raw report trips several categories."""
    for pid, report in zip(cohort.ids, cohort.reports, strict=True):
        found = set(find_phi(report, known=[pid]))
        assert {"detector: dates", "detector: mrn_id", "known list: known identifier"} <= found
        assert found & {"detector: name", "detector: salutations", "detector: dicom name"}
        assert found <= CATEGORIES


# ----------------------------------------------------------------------------- generic formats

PHI_CASES = [
    ("Patient: SMITH, John    MRN: 12345678    DOB: October 01, 2022", ["SMITH", "John", "2022"]),
    ("Name: Mary-Anne O'Neil  Sex: F  Age: 45", ["Mary", "O'Neil"]),
    ("Pt: Jane Doe (DOB 21/06/2003)", ["Jane", "Doe", "21/06"]),
    ("Seen 1 Oct 2022, 3rd of March 2021, March 2023 and 13-JUL-2022.", ["Oct", "March", "JUL"]),
    ("Study on 2022/07/13, prior 07/13/2022, 13.07.22 and 20220713.", ["07", "13.07"]),
    ("Exam date: 07/13/2022    Accession: RX73589164", ["07/13", "RX7358"]),
    ("Hospital number: H-9592820; ref A2020123456 and 9876543.", ["9592820", "A2020", "987654"]),
    ("Referring physician: Dr. Wyncyra Mabbbridge", ["Wyncyra", "Mabbbridge"]),
    ("Discussed with Dr Patel and Prof. A. van der Berg.", ["Patel", "Berg"]),
    ("Performing physician DOE^JANE^^DR; operator SMITH^J", ["DOE", "JANE", "SMITH"]),
    ("Reported by: John Smith, Consultant Radiologist", ["John", "Smith"]),
    ("Signed: Dr J Smith 12/03/2022 14:32", ["Smith", "12/03"]),
    ("ST. ALDRIC HEART INSTITUTE\nDepartment of Cardiology", ["ALDRIC"]),
    ("Seen at the Royal Brompton Hospital, Sydney Street, London SW3 6NP.", ["Brompton", "SW3"]),
    ("Mayo Clinic, 200 First Street SW, Rochester, MN 55905", ["Mayo", "First", "55905"]),
    ("University of Pennsylvania Health System", ["Pennsylvania"]),
    ("9 Quarryside Way, Marrowby MB5 3TT", ["Quarryside", "Marrowby", "MB5"]),
    ("Tel: 020 7946 0958, mobile +44 7700 900123, fax (507) 284-2511", ["7946", "7700", "284"]),
    ("Queries to jane.doe@example.org or www.example-hospital.org/cmr", ["jane", "example"]),
    ("NHS number: 485 777 3456", ["485 777"]),
    ("Mrs Umbrwick attended.", ["Umbrwick"]),
]


# Forms the detector alone does not see in raw text (the scrubber does): measured, not hidden.
# benchmarks/phi_recall.py reports the detector's recall on a corpus nobody tuned on.
DETECTOR_MISSES = {"University of Pennsylvania Health System"}


@pytest.mark.parametrize(("text", "gone"), PHI_CASES)
def test_generic_rules(text: str, gone: list[str]) -> None:
    out = scrub(text)
    for fragment in gone:
        assert fragment.lower() not in out.lower(), out
    assert find_phi(out) == []
    assert (find_phi(text) != []) is (text not in DETECTOR_MISSES)


CLINICAL = [
    "LVEDD 39 mm; the left ventricle is small. LVEF 66% (normal).",
    "Native T1 (MOLLI, 1.5 T) in the mid septum is normal at 1065 ms (local reference 950-1080 ms).",
    "TECHNIQUE: 3.0 T SIEMENS scanner, gadobutrol 0.1 mmol/kg; PSIR LGE after 10 minutes.",
    "Subendocardial LGE in the basal-to-mid inferior and inferolateral segments (AHA 4, 5, 10, 11),"
    " approximately 60% transmural, in a right coronary artery (RCA) territory distribution.",
    "NC/C ratio 2.8 in end-diastole (threshold 2.3); Trivial MR. MS excluded. NT-proBNP 12000 ng/L.",
    "Lesion box in the 256x256 image: [34, 120, 98, 190]. ECV 32%, T2 58 ms, LVEDV 210 mL.",
    "Segments 7-12 are akinetic; Z-score +2.5; heart rate 72 bpm; BSA 1.9 m2.",
]


@pytest.mark.parametrize("text", CLINICAL)
def test_clinical_text_untouched(text: str) -> None:
    assert scrub(text) == text
    assert find_phi(text) == []


def test_placeholders_are_not_phi() -> None:
    text = "Patient: [NAME]  MRN: [MRN]  DOB: [DATE]\n" + " ".join(PLACEHOLDERS)
    assert find_phi(text) == []
    assert scrub(text) == text
    # a known identifier that happens to spell a placeholder word does not eat placeholders
    assert scrub("[NAME] met Name", known=["Name"]) == "[NAME] met [NAME]"


# ----------------------------------------------------------------------------- known identifiers

PROSE = "Family screening: her brother zorquillbrack has HCM; sister elsa also attended."


def test_known_tokens_from_dicom_names_are_scrubbed() -> None:
    known = ["ZORQUILLBRACK^ELSA", "H-9592820"]
    assert scrub(PROSE) == PROSE  # lower-case names in prose: no generic rule can see them
    out = scrub(PROSE + " Ref H-9592820.", known=known)
    assert "zorquill" not in out.lower() and "elsa" not in out.lower()
    assert "9592820" not in out
    assert find_phi(out, known=known) == []


def test_find_phi_flags_what_scrub_missed() -> None:
    """The second check catches known PHI the generic rules let through."""
    missed = scrub(PROSE)
    assert find_phi(missed) == []  # invisible without the known identifiers...
    assert find_phi(missed, known=["ZORQUILLBRACK^ELSA"]) == ["known list: known identifier"]


def test_find_phi_catches_a_retyped_known_number() -> None:
    """An MRN written with spaces slips past scrub even with known; the detector normalises."""
    known = ["H-9592820"]
    out = scrub("Previous study under number H 959 2820 at this site.", known=known)
    assert "959 2820" in out
    assert "known list: known identifier" in find_phi(out, known=known)


def test_known_dicom_date_variants() -> None:
    out = scrub("Scanned 2022 on the 13 July 2022 (study 20220713).", known=["20220713"])
    assert "July" not in out and "20220713" not in out
    assert find_phi(out, known=["20220713"]) == []


def test_find_phi_reports_categories_not_text() -> None:
    text = "Patient: Hescyra Umbrwick  MRN: H-9592820  Tel: 020 7946 0958  hescyra@example.org"
    found = find_phi(text, known=["UMBRWICK^HESCYRA"])
    assert set(found) <= CATEGORIES
    assert {"detector: mrn_id", "detector: contact", "known list: known identifier"} <= set(found)
    assert not any("Umbrwick" in c or "959" in c for c in found)


# ----------------------------------------------------------------------------- measured recall


def _benchmark(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / f"benchmarks/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recall_benchmark_targets_hold_on_a_fresh_draw() -> None:
    """benchmarks/phi_recall.py's targets on a draw docs/phi.md does not report (seed 7): the
    gate lets nothing through, not even part of a planted string, the detector alone sees
    >= 90% of the raw PHI, and the scrubber keeps >= 99% of the clinical content."""
    import random

    bench = _benchmark("phi_recall")
    rng = random.Random(7)
    result = bench.measure([bench.make_report(rng) for _ in range(40)])
    forms = result["per_form"].values()
    planted = sum(t["planted"] for t in forms)
    assert sum(t["planted"] - t["gate"] for t in forms) == 0
    assert result["partly_through_texts"] == 0
    assert sum(t["detector"] for t in forms) >= 0.9 * planted
    assert result["clinical_preserved"] >= 0.99 * result["clinical_total"]
    assert result["redacted_texts"] > 0  # the detector's layer is at work, not idle


def test_clean_reports_pass_every_sender_and_keep_their_content() -> None:
    """The false-refusal targets on a clean draw docs/phi.md does not report (seed 11, seven
    house styles): <= 2% refused by the gate and by each sender's own gate (rewriting, QC,
    judge, API evaluation), >= 99% of the clinical strings kept verbatim."""
    bench = _benchmark("phi_recall")
    corpus = _benchmark("phi_clean_corpus").make_corpus(11, 70)
    result = bench.measure_clean(corpus, 11)
    assert len(result["by_style"]) == 7
    assert result["refused"] <= 0.02 * result["reports"]
    for name, counts in result["senders"].items():
        assert counts["inputs"] == 70, name
        assert counts["inputs"] - counts.get("passed", 0) <= 0.02 * 70, name
    assert result["clinical_kept"] >= 0.99 * result["clinical_total"]


# ----------------------------------------------------------------------------- the gate


def test_gate_redacts_what_the_detector_sees_and_keeps_clean_text() -> None:
    """A name the scrubber cannot see (no title, no label) is redacted as a whole token run;
    a clean sentence passes unchanged; the findings carry shapes, never text."""
    text = "Family history: her cousin Pemberton, Priya had a similar scan. LVEF 55%."
    gated = gate(text)
    assert gated.text == "Family history: her cousin [NAME] had a similar scan. LVEF 55%."
    assert [str(f) for f in gated.redacted] == ["detector: name 'Xxxx+, Xxxx+'"]
    assert gated.refused == ()
    clean = "Review in 3/12. Native T1 1,102 ms (local normal 950-1050 ms) at 1.5 T; segs 8-9."
    assert gate(clean) == GateResult(clean)


def test_gate_takes_the_whole_token_and_the_other_half_of_a_name() -> None:
    """A date the detector flags in part goes whole; a surname beside a scrubbed known given
    name goes too ("Kowalczyk, [NAME]"): no part of an identifier is left beside its
    placeholder."""
    gated = gate("Sister of Kowalczyk, Zelda had a scan.", known=["ZELDA^ANNA"])
    assert gated.text == "Sister of [NAME] had a scan."
    assert span_shape("13/07/2022") == "dd/dd/ddd+" and span_shape("Anna") == "Xxxx"
    out = gate("Seen at the clinic 13/07/2022 and again 2022-07-14.").text
    assert "2022" not in out and "13" not in out and out.count("[DATE]") == 2


# ----------------------------------------------------------------------------- accents, scripts

# Every rule was written for plain letters and English titles: each of these passed the gate
# whole before the rules read the folded text (accents off, letter for letter), took words of
# any script in a labelled name field, and knew other languages' titles.
OTHER_FORMS = {
    "Referred by Dr Łukasz Wróbel. Apical trabeculation.": (
        "Referred by [PHYSICIAN]. Apical trabeculation."
    ),
    "Patient: Zoë Brontë-Ångström  DOB: 04.03.1961": "Patient: [NAME]  DOB: [DATE]",
    "Signed by Björn Ødegård.": "Signed by [PHYSICIAN].",
    "Mrs Müller attended. Mid-wall LGE.": "[NAME] attended. Mid-wall LGE.",
    "Header copied in: ŠIMKOVÁ^ŽOFIA, septal LGE.": "Header copied in: [NAME], septal LGE.",
    # decomposed text (a letter, then its combining accent), as some systems export it
    "Dr Zoe\u0308 Bronte\u0308 reviewed the LGE.": "[PHYSICIAN] reviewed the LGE.",
    "Name: Иван Петров\nDOB: 1961-03-04": "Name: [NAME]\nDOB: [DATE]",
    "Patient: 李伟\nLGE inferior wall.": "Patient: [NAME]\nLGE inferior wall.",
    "Frau Schmidt attended.": "[NAME] attended.",
    "Sra. García attended.": "[NAME] attended.",
    "Mme Dupont-Lefèvre, née le 03/04/1961.": "[NAME], née le [DATE].",
    "Sig.ra Rossi attended.": "[NAME] attended.",
}


@pytest.mark.parametrize("text", list(OTHER_FORMS))
def test_names_with_accents_other_scripts_and_titles(text: str) -> None:
    assert gate(text).text == OTHER_FORMS[text]


def test_clinical_shorthand_is_not_a_title() -> None:
    """Clinical shorthand: "Sig." is "significant" in some notes, "MR" mitral regurgitation."""
    for clean in ("Sig. LGE in the basal septum.", "MR Moderate, no LGE."):
        assert scrub(clean) == clean


def test_a_known_name_is_found_with_or_without_its_accents() -> None:
    """The DICOM header says NÚÑEZ^JOSÉ; a report may type it with or without the accents."""
    known = ["NÚÑEZ^JOSÉ"]
    for text in ("Pt José Núñez, 67 y/o M.", "Pt Jose Nunez, 67 y/o M.", "Pt JOSE NUNEZ, 67M."):
        out = scrub(text, known=known)
        assert out.startswith("Pt [NAME], 67"), out
        assert find_phi(out, known=known) == []
    assert find_phi("Filed under Nunez.", known=known) == ["known list: known identifier"]


def test_accented_clinical_text_passes_unchanged() -> None:
    clean = (
        "Löffler endocarditis considered; café-au-lait spots not relevant. T1 1,102 ms at 1.5 T."
    )
    assert gate(clean) == GateResult(clean)


def test_a_degree_after_a_scrubbed_name_is_not_refused() -> None:
    """philter's salutation rule read the scrubber's own "[PHYSICIAN], MD." as a name before
    a degree: the gate mangled it and refused the whole text."""
    assert gate("Reported by Anna Berg, MD.") == GateResult("Reported by [PHYSICIAN], MD.")


def test_refusal_names_layer_category_and_shape() -> None:
    """What neither the scrubber nor the detector removes but the exact known list still sees
    (this patient's MRN re-typed in other groups) refuses the text; the reason names the layer,
    category and shape only."""
    gated = gate("Filed as 95 92 820 here.", known=["H-9592820"])
    assert gated.text is None
    assert gated.reason == (
        "PHI detected after scrubbing: known list: known identifier 're-typed number'"
    )
    assert "820" not in gated.reason
    # the detector's layer, too: a redaction's record is the category and shape
    gated = gate("Old number 959.2820 on file.", known=["H-9592820"])
    assert gated.text == "Old number [CONTACT] on file."
    assert [str(f) for f in gated.redacted] == ["detector: contact 'ddd.ddd+'"]


def test_site_safe_list_keeps_its_terms_and_refuses_what_would_hide_identifiers(
    tmp_path: Path,
) -> None:
    text = "Impression: DIFFUSE T2* < 20 MS INDICATES IRON LOADING."
    assert gate(text).redacted  # philter reads the capitals as a salutation
    good = tmp_path / "safe.yaml"
    good.write_text("terms: [INDICATES IRON LOADING]\npatterns: ['\\bIRON LOAD\\w*']\n")
    safe = SafeList.load(good)
    assert gate(text, safe=safe) == GateResult(text)
    assert find_phi(text, safe=safe) == []
    cases = {
        "patterns: ['[A-Z][a-z]+ [A-Z][a-z]+']": "would hide identifiers",
        "patterns: ['\\d+/\\d+/\\d+']": "would hide identifiers",
        "terms: ['Smith']": "would hide identifiers",
        "patterns: ['(']": "not a regular expression",
        "patterns: ['x*']": "matches empty or blank text",
        "terms: ['']": "expected a non-empty string",
        "words: [a]": "expected a mapping with keys terms and/or patterns",
        "terms: [a": "not valid YAML",
    }
    for body, message in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(body + "\n")
        with pytest.raises(SafeListError, match=re.escape(message)) as error:
            SafeList.load(bad)
        assert str(bad) in str(error.value)
    with pytest.raises(SafeListError, match="cannot read"):
        SafeList.load(tmp_path / "absent.yaml")


def test_workflow_refuses_a_bad_safe_list_naming_file_and_entry(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    bad = tmp_path / "site_safe.yaml"
    bad.write_text("terms: [Smith]\n")
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"phi": {"safe_list": str(bad)}}))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
         str(REPO / "config/config.yaml"), str(overlay)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"phi.safe_list: {bad}: terms[0]: would hide identifiers" in out
    assert "Traceback" not in out
