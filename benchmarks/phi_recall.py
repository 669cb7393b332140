"""PHI recall and false refusals of the gate, per layer, on corpora nobody tuned the gate on.

The generator below has its own name, place and format lists: none of them is read from, or
was copied into, the scrubber (`rewrite/phi.py`), the detector (`rewrite/phi_detector.py`) or
the synthetic cohort. It plants PHI in the forms real reports carry (labelled header fields,
titled names in prose, "Surname, Given", signatures, four date formats, phone numbers, street
addresses, hospital names) around clinical text whose measurements must survive.

Measured, per planted string (a string counts as caught by a layer if that layer removes it,
or flags a span overlapping it):
- scrubber alone: the string is gone from `scrub(text, known)`;
- detector alone, on the raw text: a philter span overlaps the string;
- known list alone: the string is one of this patient's known identifiers and is found;
- the gate as a whole: scrub, then refuse the text if the detector or the known list still
  flags it; a string gets through only if it survives scrubbing in a text that is not refused.
Also: refused texts (the price of the second layer), clinical strings preserved verbatim, the
same gate over the synthetic cohort's reports, and milliseconds per report for each layer.

Then the false refusals: PHI-free reports in seven house styles (`phi_clean_corpus.py`, written
without reading the gate), per layer and category, the gate's refusals and redactions, the
clinical strings kept, and each sender's own gate on its clean inputs (rewriting, QC, judge,
API evaluation).

Writes results/benchmarks/phi_recall.json and phi_recall.md and prints the tables.
`--seed` and `--clean-seed` draw other corpora: docs/phi.md reports seed 2026 for both, drawn
once after development on seeds 1-3; the tests use seeds 7 and 11.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import re
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
from PIL import Image

from cmr_rd.datasets.build import user_turn
from cmr_rd.devtools import REPO
from cmr_rd.evaluate.api import build_request
from cmr_rd.format import render_target
from cmr_rd.judge import llm as judge_llm
from cmr_rd.judge.findings import reference_text
from cmr_rd.judge.rubric import read_chain
from cmr_rd.prompts import REWRITE_SYSTEM, rewrite_prompt
from cmr_rd.rewrite import phi_detector
from cmr_rd.rewrite.offline import offline_rewrite
from cmr_rd.rewrite.phi import SafeList, check, gate, gate_request, known_identifiers, scrub
from cmr_rd.synth.cohort import SynthConfig, generate_cohort

GIVEN = [
    "Adaeze", "Bartholomew", "Cressida", "Dmitri", "Eulalia", "Fergus", "Guadalupe", "Hamish",
    "Ingrid", "Jovan", "Kalinda", "Leopold", "Marisol", "Niamh", "Osvaldo", "Priya", "Quentin",
    "Rosalind", "Soren", "Tamsin", "Ulrich", "Valentina", "Wendell", "Ximena", "Yusuf", "Zelda",
    "Thandiwe", "Ignatius", "Philippa", "Anselm",
]  # fmt: skip
FAMILY = [
    "Abernathy", "Beaumont", "Castellanos", "Drummond", "Eriksen", "Fairweather", "Gallagher",
    "Haverford", "Iwasaki", "Jablonski", "Kowalczyk", "Lindqvist", "Montgomery", "Nakashima",
    "Oyelaran", "Pemberton", "Quiroga", "Rasmussen", "Sutherland", "Thornbury", "Underhill",
    "Vasquez", "Whitlock", "Yardley", "Zielinski", "Okonkwo", "Delacroix", "Brannigan",
    "Featherstone", "Maddox",
]  # fmt: skip
HOSPITALS = [
    "Saint Brigid's Hospital", "Harrowgate General Hospital", "Mercy Lakeside Medical Center",
    "Kingsbridge Royal Infirmary", "Northfield University Hospital", "Riverside Heart Institute",
    "Our Lady of Lourdes Hospital", "Westmoor Community Hospital", "Beacon Hill Clinic",
    "Ashford Cardiac Centre",
]  # fmt: skip
STREETS = [
    "Larkspur Lane", "Copperfield Road", "Wexford Avenue", "Pinecrest Drive", "Mill Race Court",
    "Harbour View Terrace", "Elmhurst Boulevard", "Foxglove Way", "Tanner Street", "Old Quarry Rd",
]  # fmt: skip
TOWNS = [
    ("Bramblewick", "OR 97030"), ("Eastcombe", "GL6 7DN"), ("Port Aldous", "ME 04101"),
    ("Wintervale", "CO 80202"), ("Saltmarsh", "NR23 1AB"), ("Kestrel Falls", "WA 98101"),
]  # fmt: skip
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]  # fmt: skip
TITLES = ["Mr.", "Mrs.", "Ms.", "Dr.", "Mr", "Ms", "Dr", "Prof."]
SIGN_OFFS = [
    "Electronically signed by {who}, MD on {date}",
    "Electronically signed by: {who} {date}",
    "Dictated by {who}; signed {date}",
    "Attending radiologist: {who}. Signed on {date}.",
]  # fmt: skip
CLINICAL = [
    "LVEF {ef}%", "RVEF {ref}%", "native T1 {t1} ms", "T2 {t2} ms", "ECV {ecv}%",
    "LVEDV {edv} mL", "maximal wall thickness {wt} mm", "basal inferoseptal segment",
    "mid anterolateral segment", "apical lateral segment", "gadobutrol 0.1 mmol/kg",
    "1.5 T scanner",
]  # fmt: skip


def _date(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(1940, 2025), rng.randint(1, 12), rng.randint(1, 28)


def _date_forms(y: int, m: int, d: int) -> dict[str, str]:
    return {
        "date YYYYMMDD": f"{y:04d}{m:02d}{d:02d}",
        "date MM/DD/YYYY": f"{m:02d}/{d:02d}/{y:04d}",
        "date D Month YYYY": f"{d} {MONTHS[m - 1]} {y}",
        "date Month D, YYYY": f"{MONTHS[m - 1]} {d}, {y}",
    }


def _phone(rng: random.Random) -> str:
    a, b, c = rng.randint(201, 989), rng.randint(200, 999), rng.randint(1000, 9999)
    return rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"+1 {a} {b} {c}", f"0{a} {b} {c}"])


def make_report(rng: random.Random) -> dict:
    """One report: its text, the planted strings with their forms, the clinical strings."""
    given, family = rng.choice(GIVEN), rng.choice(FAMILY)
    doctor = (rng.choice(GIVEN), rng.choice(FAMILY))
    relative = rng.choice(FAMILY)
    mrn = rng.choice([f"{rng.randint(10**7, 10**8 - 1)}", f"MR{rng.randint(10**6, 10**7 - 1)}"])
    accession = f"{rng.choice('ACEX')}{rng.randint(10**6, 10**7 - 1)}"
    birth, exam, signed = _date(rng), _date(rng), _date(rng)
    street = f"{rng.randint(2, 998)} {rng.choice(STREETS)}"
    town, postcode = rng.choice(TOWNS)
    hospital, referrer = rng.choice(HOSPITALS), rng.choice(HOSPITALS)
    phone = _phone(rng)
    date_forms = list(_date_forms(*exam).items())
    exam_form, exam_text = rng.choice(date_forms)
    birth_form, birth_text = rng.choice(list(_date_forms(*birth).items()))
    sign_form, sign_text = rng.choice(list(_date_forms(*signed).items()))
    planted: list[tuple[str, str]] = []

    def plant(form: str, text: str) -> str:
        planted.append((form, text))
        return text

    values = {
        "ef": rng.randint(20, 70), "ref": rng.randint(25, 65), "t1": rng.randint(950, 1150),
        "t2": rng.randint(42, 60), "ecv": rng.randint(22, 45), "edv": rng.randint(110, 290),
        "wt": rng.randint(8, 31),
    }  # fmt: skip
    clinical = [c.format(**values) for c in rng.sample(CLINICAL, 6)]
    name_field = rng.choice([f"{given} {family}", f"{family.upper()}, {given}"])
    header = [
        plant("hospital name", hospital.upper()),  # letterheads print it in capitals
        f"Patient: {plant('header Patient:', name_field)}",
        f"MRN: {plant('header MRN:', mrn)}    DOB: {plant('header DOB:', birth_text)}",
        f"Accession: {plant('header Accession:', accession)}",
        f"Address: {plant('header Address:', f'{street}, {town} {postcode}')}",
        f"Phone: {plant('header Phone:', phone)}",
        "",
    ]
    title = rng.choice(TITLES[:3] + TITLES[4:6])
    body = [
        f"CLINICAL HISTORY: {plant('titled name in prose', f'{title} {family}')} was referred "
        f"by {plant('titled name in prose', f'Dr. {doctor[1]}')} of "
        f"{plant('hospital name', referrer)} with breathlessness.",
        f"Previous study on {plant(exam_form, exam_text)} was reviewed.",
        f"FINDINGS: {clinical[0]}, {clinical[1]}. {clinical[2].capitalize()} and {clinical[3]}.",
        f"Enhancement is seen in the {clinical[4]}; {clinical[5]}.",
        f"Family history: sister of {plant('Surname, Given', f'{relative}, {rng.choice(GIVEN)}')}"
        " had a similar scan.",
        f"Results phoned to the ward on {plant('phone number in prose', _phone(rng))}; "
        f"patient lives at {plant('street address in prose', street)}.",
        "IMPRESSION: findings as above.",
        "",
        rng.choice(SIGN_OFFS).format(
            who=plant("signature", f"{doctor[0]} {doctor[1]}"), date=plant(sign_form, sign_text)
        ),
    ]
    known = [f"{family.upper()}^{given.upper()}", mrn]
    return {"text": "\n".join(header + body), "planted": planted, "clinical": clinical,
            "known": known}  # fmt: skip


def _overlaps(spans: list[tuple[int, int, str]], start: int, end: int) -> bool:
    return any(a < end and start < b for a, b, _ in spans)


def _locate(text: str, planted: str) -> tuple[int, int] | None:
    start = text.find(planted)
    return None if start < 0 else (start, start + len(planted))


# Words of the planted forms that identify no one (a street's or a hospital's kind, a month).
_GENERIC = frozenset(
    """hospital general medical center centre royal infirmary university heart institute our
    lady community clinic cardiac saint lane road avenue drive court terrace boulevard way
    street view old mill race harbour quarry the of and dr mr mrs ms prof md""".split()
    + [m.lower() for m in MONTHS]
)
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'\-]{2,}|\d{3,}")


def _leaked_tokens(text: str, planted: list[str], out: str) -> list[str]:
    """Identifying tokens of the planted strings that the gate's output still holds more often
    than the text holds them outside the planted strings (a surname left beside [NAME], the
    day of a date): a partial leak, which the verbatim check alone would not see."""
    rest = text
    for item in planted:
        rest = rest.replace(item, " ")
    leaked = []
    for item in planted:
        for token in _TOKEN.findall(item):
            low = token.lower()
            if low in _GENERIC or re.fullmatch(r"(?:19|20)\d\d", token):
                continue  # a year alone is not an identifier (HIPAA Safe Harbor keeps years)
            word = re.compile(rf"(?<![A-Za-z0-9]){re.escape(low)}(?![A-Za-z0-9])")
            if len(word.findall(out.lower())) > len(word.findall(rest.lower())):
                leaked.append(token)
    return leaked


def measure(reports: list[dict], safe: SafeList | None = None) -> dict:
    """Recall per planted form and layer, and what the gate as a whole lets through."""
    safe = safe or SafeList()
    per_form: dict[str, Counter] = defaultdict(Counter)
    refused, redacted, preserved, clinical_total, clock = 0, 0, 0, 0, Counter()
    partial = 0
    for report in reports:
        text, known = report["text"], report["known"]
        start = time.perf_counter()
        scrubbed = scrub(text, known=known)
        clock["scrubber"] += time.perf_counter() - start
        start = time.perf_counter()
        spans = phi_detector.spans(text)
        clock["detector"] += time.perf_counter() - start
        start = time.perf_counter()
        gated = gate(text, known=known, safe=safe)
        clock["gate"] += time.perf_counter() - start
        refused += gated.text is None
        redacted += bool(gated.redacted)
        out = (gated.text or "").lower()
        planted = [p for _, p in report["planted"]]
        partial += bool(gated.text is not None and _leaked_tokens(text, planted, gated.text))
        for form, item in report["planted"]:
            where = _locate(text, item)
            assert where is not None, (form, item)
            tally = per_form[form]
            tally["planted"] += 1
            tally["scrubber"] += item.lower() not in scrubbed.lower()
            tally["detector"] += _overlaps(spans, *where)
            tally["known list"] += known_identifiers(item, known)
            tally["gate"] += item.lower() not in out
        for item in report["clinical"]:
            clinical_total += 1
            preserved += item.lower() in scrubbed.lower()
    return {
        "per_form": {form: dict(t) for form, t in sorted(per_form.items())},
        "refused_texts": refused,
        "redacted_texts": redacted,
        "partly_through_texts": partial,
        "clinical_preserved": preserved,
        "clinical_total": clinical_total,
        "ms_per_report": {k: 1000 * v / len(reports) for k, v in clock.items()},
    }


# The scrubber's placeholders, by the category they stand for.
_SCRUB_CATEGORY = {
    "[NAME]": "names",
    "[PHYSICIAN]": "physicians",
    "[MRN]": "record numbers",
    "[ID]": "identifiers",
    "[DATE]": "dates",
    "[INSTITUTION]": "institutions",
    "[ADDRESS]": "addresses",
    "[CONTACT]": "contacts",
}


def _known_for(rng: random.Random) -> list[str]:
    """A patient's identifiers as the stage knows them (label sheet and DICOM), absent from a
    clean report: what the known list looks for."""
    return [
        f"{rng.choice(FAMILY).upper()}^{rng.choice(GIVEN).upper()}",
        f"{rng.randint(10**7, 10**8 - 1)}",
    ]


def measure_clean(reports: list[dict], seed: int, safe: SafeList | None = None) -> dict:
    """What each layer takes from reports that hold no PHI at all, per category: the scrubber's
    placeholders, the detector's flags on the scrubbed text (each one a refusal under the old
    gate, a redaction now), the known list's, and the gate's refusals and lost clinical strings.
    Then the same reports through each sender's own gate: the rewriting stage (report, then the
    request), QC's check of the template written from it, the judge's request (the report's
    findings and that template's chain) and the API evaluation's request."""
    safe = safe or SafeList()
    rng = random.Random(seed)
    layer = {"scrubber": Counter(), "detector": Counter(), "known list": Counter()}
    flagged = Counter()
    by_style: dict[str, Counter] = defaultdict(Counter)
    refused = redacted = kept = total = 0
    clock = Counter()
    senders = {name: Counter() for name in ("rewriting", "QC", "judge", "API evaluation")}
    image = Path(tempfile.mkdtemp(prefix="phi_clean_")) / "slice.png"
    Image.new("L", (8, 8)).save(image)
    for number, report in enumerate(reports):
        text, known = report["text"], _known_for(rng)
        scrubbed = scrub(text, known=known)
        scrub_cats = {_SCRUB_CATEGORY[m] for m in re.findall(r"\[[A-Z]+\]", scrubbed)} - {
            _SCRUB_CATEGORY[m] for m in re.findall(r"\[[A-Z]+\]", text) if m in _SCRUB_CATEGORY
        }
        detector_cats = {c for _, _, c in phi_detector.spans(scrubbed, safe.patterns)}
        known_hit = known_identifiers(scrubbed, known)
        for name, cats in (("scrubber", scrub_cats), ("detector", detector_cats)):
            layer[name].update(cats)
            flagged[name] += bool(cats)
        layer["known list"].update(["known identifier"] * known_hit)
        flagged["known list"] += known_hit
        start = time.perf_counter()
        gated = gate(text, known=known, safe=safe)
        clock["gate"] += time.perf_counter() - start
        style = by_style[report["style"]]
        style["reports"] += 1
        style["flagged"] += bool(detector_cats) or known_hit
        style["refused"] += gated.text is None
        style["redacted"] += bool(gated.redacted)
        refused += gated.text is None
        redacted += bool(gated.redacted)
        out = gated.text or ""
        total += len(report["clinical"])
        kept += sum(item in out for item in report["clinical"])
        _through_senders(senders, gated.text, known, number, image, safe, clock)
    n = len(reports)
    return {
        "reports": n,
        "flagged": dict(flagged),
        "per_category": {name: dict(sorted(c.items())) for name, c in layer.items()},
        "by_style": {s: dict(c) for s, c in sorted(by_style.items())},
        "refused": refused,
        "redacted": redacted,
        "clinical_kept": kept,
        "clinical_total": total,
        "senders": {name: dict(c) for name, c in senders.items()},
        "ms_per_report": {k: 1000 * v / n for k, v in clock.items()},
    }


def _through_senders(senders, text, known, number, image, safe, clock) -> None:
    """One clean report through each sender's gate, as each builds its request."""
    for counts in senders.values():
        counts["inputs"] += 1
    if text is None:  # refused by the stage: lost to every sender
        return
    box = [96.0, 80.0, 150.0, 140.0] if number % 2 else None
    senders["rewriting"]["passed"] += (
        gate_request(REWRITE_SYSTEM, rewrite_prompt(text, box), known, safe).text is not None
    )
    record = {"id": f"P{number:05d}", "images": [str(image)], "messages": [user_turn()]}
    request = build_request(record, number + 1)
    senders["API evaluation"]["passed"] += (
        gate_request(request.system, request.prompt, request.known, safe).text is not None
    )
    start = time.perf_counter()
    reply = json.loads(offline_rewrite(text, box, f"P{number:05d}", 0))
    clock["offline rewriter"] += time.perf_counter() - start
    # The template's chain as the rewriter wrote it (its diagnosis may be empty: the clean
    # reports' impressions need not name one of the six classes).
    chain = " ".join(reply.get(k, "") for k in ("observation", "localisation", "differential"))
    senders["QC"]["passed"] += not check(chain + "\n" + reply.get("diagnosis", ""), safe=safe)
    completion = render_target(chain, box or [0.0, 0.0, 256.0, 256.0], "NOR")
    prompt = judge_llm.user_prompt(reference_text(text), read_chain(completion).text())
    senders["judge"]["passed"] += (
        gate_request(judge_llm.SYSTEM, prompt, known, safe).text is not None
    )


def cohort_gate(root: Path, safe: SafeList | None = None) -> dict:
    """The same gate over the synthetic cohort's reports: planted strings let through."""
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    strings = [s.lower() for s in json.loads((root / "phi_strings.json").read_text())["strings"]]
    through, refused, redacted = 0, 0, 0
    for pid, report in zip(table["patient_id"], table["report"], strict=True):
        gated = gate(report, known=[pid], safe=safe or SafeList())
        redacted += bool(gated.redacted)
        if gated.text is None:
            refused += 1
            continue
        through += sum(s in gated.text.lower() for s in strings)
    return {
        "reports": len(table),
        "refused": refused,
        "redacted": redacted,
        "planted_strings_through": through,
    }


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def render(result: dict) -> str:
    rows = []
    totals = Counter()
    for form, t in result["per_form"].items():
        totals.update(t)
        rows.append((form, t))
    rows.append(("**all forms**", totals))

    def pct(t: Counter | dict, key: str) -> str:
        return _pct(t[key], t["planted"])

    lines = [
        f"Recall corpus: {result['reports']} reports (seed {result['seed']}), "
        f"{totals['planted']} planted strings.",
        "",
        "| form | planted | scrubber alone | detector alone (raw text) | known list alone "
        "| gate as a whole | let through |",
        "|---|---|---|---|---|---|---|",
    ]
    for form, t in rows:
        lines.append(
            f"| {form} | {t['planted']} | {pct(t, 'scrubber')} | {pct(t, 'detector')} "
            f"| {pct(t, 'known list')} | {pct(t, 'gate')} | {t['planted'] - t['gate']} |"
        )
    c = result
    ms = c["ms_per_report"]
    lines += [
        "",
        f"- Texts redacted by the detector after scrubbing: {c['redacted_texts']} of "
        f"{c['reports']}; refused (the detector or the known list still flags them after "
        f"redaction): {c['refused_texts']}.",
        f"- Texts sent with part of a planted string left (a surname beside [NAME], a date's "
        f"day): {c['partly_through_texts']}.",
        f"- Clinical content preserved verbatim by the scrubber: {c['clinical_preserved']} of "
        f"{c['clinical_total']} ({_pct(c['clinical_preserved'], c['clinical_total'])}).",
        f"- Synthetic cohort ({c['cohort']['reports']} reports): {c['cohort']['refused']} "
        f"refused, {c['cohort']['redacted']} redacted, {c['cohort']['planted_strings_through']} "
        "planted strings let through.",
        f"- Milliseconds per report: scrubber {ms['scrubber']:.1f}, detector "
        f"{ms['detector']:.1f}, the whole gate (scrub, redact, check) {ms['gate']:.1f}.",
        "",
    ]
    lines += render_clean(result["clean"])
    return "\n".join(lines) + "\n"


def render_clean(c: dict) -> list[str]:
    n = c["reports"]
    lines = [
        f"Clean corpus: {n} PHI-free reports (seed {c['seed']}, "
        f"`benchmarks/phi_clean_corpus.py`, {len(c['by_style'])} house styles).",
        "",
        "| layer | reports it touches | by category (reports) |",
        "|---|---|---|",
    ]
    for name in ("scrubber", "detector", "known list"):
        cats = ", ".join(f"{k} {v}" for k, v in c["per_category"][name].items()) or "none"
        hit = c["flagged"].get(name, 0)
        lines.append(f"| {name} | {hit} ({_pct(hit, n)}) | {cats} |")
    lines += [
        "",
        "| house style | reports | flagged by a layer (a refusal under refuse-on-flag) "
        "| redacted | refused |",
        "|---|---|---|---|---|",
    ]
    for style, t in c["by_style"].items():
        lines.append(
            f"| {style} | {t['reports']} | {t['flagged']} ({_pct(t['flagged'], t['reports'])}) "
            f"| {t['redacted']} | {t['refused']} |"
        )
    old = sum(t["flagged"] for t in c["by_style"].values())
    lines += [
        f"| **all** | {n} | {old} ({_pct(old, n)}) | {c['redacted']} ({_pct(c['redacted'], n)}) "
        f"| **{c['refused']} ({_pct(c['refused'], n)})** |",
        "",
        "| sender | clean inputs | passed | false refusals |",
        "|---|---|---|---|",
    ]
    for name, t in c["senders"].items():
        lost = t["inputs"] - t.get("passed", 0)
        passed = t.get("passed", 0)
        lines.append(f"| {name} | {t['inputs']} | {passed} | {lost} ({_pct(lost, t['inputs'])}) |")
    ms = c["ms_per_report"]
    lines += [
        "",
        f"- Clinical strings kept verbatim by the whole gate: {c['clinical_kept']} of "
        f"{c['clinical_total']} ({_pct(c['clinical_kept'], c['clinical_total'])}).",
        f"- Milliseconds per report: the gate {ms['gate']:.1f}, the offline rewriter "
        f"{ms.get('offline rewriter', 0.0):.1f} (an o3 request takes seconds).",
    ]
    return lines


def _clean_corpus():
    spec = importlib.util.spec_from_file_location(
        "phi_clean_corpus", Path(__file__).with_name("phi_clean_corpus.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=2026, help="the recall corpus's draw")
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--clean-seed", type=int, default=2026, help="the clean corpus's draw")
    parser.add_argument("--clean-reports", type=int, default=300)
    parser.add_argument("--safe-list", type=Path, default=None, help="a site's phi.safe_list")
    parser.add_argument("--cohort", type=Path, default=REPO / "data" / "synthetic")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks")
    args = parser.parse_args()
    safe = SafeList.load(args.safe_list)
    phi_detector.spans("warm-up")  # load philter's lists outside the timed loop
    rng = random.Random(args.seed)
    reports = [make_report(rng) for _ in range(args.reports)]
    result = {"seed": args.seed, "reports": args.reports, **measure(reports, safe)}
    clean = _clean_corpus().make_corpus(args.clean_seed, args.clean_reports)
    result["clean"] = {"seed": args.clean_seed, **measure_clean(clean, args.clean_seed, safe)}
    if not (args.cohort / "labels.csv").is_file():  # no demo run yet: a small cohort of our own
        args.cohort = Path(tempfile.mkdtemp(prefix="phi_recall_cohort_"))
        generate_cohort(SynthConfig(scale=0.0, min_patients_per_class=8), args.cohort, seed=3)
    result["cohort"] = cohort_gate(args.cohort, safe)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "phi_recall.json").write_text(json.dumps(result, indent=2) + "\n")
    table = render(result)
    (args.out / "phi_recall.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
