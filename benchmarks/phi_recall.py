"""PHI recall of the gate, per layer, on report texts written by a generator nobody tuned on.

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

Writes results/benchmarks/phi_recall.json and phi_recall.md and prints the table.
`--seed` draws another corpus: the README reports seed 2026, drawn once, after the detector's
safe list was fixed.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from cmr_rd.devtools import REPO
from cmr_rd.rewrite import phi_detector
from cmr_rd.rewrite.phi import find_phi, known_identifiers, scrub
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


def measure(reports: list[dict]) -> dict:
    per_form: dict[str, Counter] = defaultdict(Counter)
    refused, refused_clean, preserved, clinical_total, clock = 0, 0, 0, 0, Counter()
    for report in reports:
        text, known = report["text"], report["known"]
        start = time.perf_counter()
        scrubbed = scrub(text, known=known)
        clock["scrubber"] += time.perf_counter() - start
        start = time.perf_counter()
        spans = phi_detector.spans(text)
        clock["detector"] += time.perf_counter() - start
        start = time.perf_counter()
        gate_flags = find_phi(scrubbed, known=known)
        clock["gate check"] += time.perf_counter() - start
        refused += bool(gate_flags)
        left = any(p.lower() in scrubbed.lower() for _, p in report["planted"])
        refused_clean += bool(gate_flags) and not left
        for form, planted in report["planted"]:
            where = _locate(text, planted)
            assert where is not None, (form, planted)
            survives = planted.lower() in scrubbed.lower()
            tally = per_form[form]
            tally["planted"] += 1
            tally["scrubber"] += not survives
            tally["detector"] += _overlaps(spans, *where)
            tally["known list"] += known_identifiers(planted, known)
            tally["gate"] += not survives or bool(gate_flags)
        for item in report["clinical"]:
            clinical_total += 1
            preserved += item.lower() in scrubbed.lower()
    return {
        "per_form": {form: dict(t) for form, t in sorted(per_form.items())},
        "refused_texts": refused,
        "refused_clean_texts": refused_clean,
        "clinical_preserved": preserved,
        "clinical_total": clinical_total,
        "ms_per_report": {k: 1000 * v / len(reports) for k, v in clock.items()},
    }


def cohort_gate(root: Path) -> dict:
    """The same gate over the synthetic cohort's reports: planted strings let through."""
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    strings = [s.lower() for s in json.loads((root / "phi_strings.json").read_text())["strings"]]
    through, refused = 0, 0
    for pid, report in zip(table["patient_id"], table["report"], strict=True):
        scrubbed = scrub(report, known=[pid])
        if find_phi(scrubbed, known=[pid]):
            refused += 1
            continue
        lowered = scrubbed.lower()
        through += sum(s in lowered for s in strings)
    return {"reports": len(table), "refused": refused, "planted_strings_through": through}


def render(result: dict) -> str:
    rows = []
    totals = Counter()
    for form, t in result["per_form"].items():
        totals.update(t)
        rows.append((form, t))
    rows.append(("**all forms**", totals))

    def pct(t: Counter | dict, key: str) -> str:
        return f"{100 * t[key] / t['planted']:.1f}%"

    lines = [
        f"Corpus: {result['reports']} reports (seed {result['seed']}), "
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
        f"- Texts refused after scrubbing (the second and third layers still flag them): "
        f"{c['refused_texts']} of {c['reports']}; of these, {c['refused_clean_texts']} held no "
        "planted string any more (false refusals).",
        f"- Clinical content preserved verbatim by the scrubber: {c['clinical_preserved']} of "
        f"{c['clinical_total']} ({100 * c['clinical_preserved'] / c['clinical_total']:.1f}%).",
        f"- Synthetic cohort ({c['cohort']['reports']} reports): {c['cohort']['refused']} "
        f"refused, {c['cohort']['planted_strings_through']} planted strings let through.",
        f"- Milliseconds per report: scrubber {ms['scrubber']:.1f}, detector "
        f"{ms['detector']:.1f}, gate check (detector + known list) {ms['gate check']:.1f}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--cohort", type=Path, default=REPO / "data" / "synthetic")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "benchmarks")
    args = parser.parse_args()
    phi_detector.spans("warm-up")  # load philter's lists outside the timed loop
    rng = random.Random(args.seed)
    reports = [make_report(rng) for _ in range(args.reports)]
    result = {"seed": args.seed, "reports": args.reports, **measure(reports)}
    if not (args.cohort / "labels.csv").is_file():  # no demo run yet: a small cohort of our own
        args.cohort = Path(tempfile.mkdtemp(prefix="phi_recall_cohort_"))
        generate_cohort(SynthConfig(scale=0.0, min_patients_per_class=8), args.cohort, seed=3)
    result["cohort"] = cohort_gate(args.cohort)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "phi_recall.json").write_text(json.dumps(result, indent=2) + "\n")
    table = render(result)
    (args.out / "phi_recall.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
