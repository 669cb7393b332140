"""The offline rewriter: a deterministic stand-in for o3, so the demo needs no API key.

It reads the same scrubbed report and box o3 would get and returns the same JSON, so the same
parsing and QC apply. Its text is composed from the report's own findings sentences (faithful)
with phrasings drawn per item from seeded variants (varied), and its diagnosis comes from the
report's impression, not from the label, so QC's label check is a real check.
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np

from cmr_rd.classes import FULL_NAMES, mentioned_classes

_LESION_WORDS = re.compile(
    r"\b(lge|enhanc\w*|scar|nulling|nulls|trabecula\w*|non-?compact\w*|fibrosis)\b", re.I
)
_STRUCTURE_WORDS = re.compile(r"\b(thick\w*|hypertroph\w*|thin\w*|dilat\w*|lvedd|wall)\b", re.I)
_LOCATION = re.compile(
    r"\b((?:basal|mid|apical)(?:[- ](?:to|and)[- ](?:mid|apical))?[- ])?"
    r"(anteroseptal|inferoseptal|inferolateral|anterolateral|anterior|inferior|superior|lateral|"
    r"septal|"
    r"septum|free wall|right ventricular insertion points?|RV insertion points?|apex)\b",
    re.I,
)
_INSERTION = re.compile(
    r"\b((?:(?:superior|inferior|anterior|posterior)"
    r"(?: and (?:superior|inferior|anterior|posterior))? )?"
    r"(?:right ventricular|RV) insertion points?)\b",
    re.I,
)
_LAYER = re.compile(r"\b(subendocardial|mid-?wall|transmural|subepicardial|diffuse|global)\b", re.I)

OBSERVATION_LEADS = (
    "On the LGE image: {s}",
    "Looking first at the enhancement pattern, {s_lower}",
    "Observation: {s}",
    "The late-enhancement image shows the key finding. {s}",
)
DIFFERENTIAL = {
    "HCM": (
        "The wall is hypertrophied with patchy mid-wall enhancement at the RV insertion points; "
        "amyloidosis would show diffuse subendocardial enhancement with poor nulling, and an "
        "infarct would follow a coronary territory from the subendocardium.",
        "Hypertrophy with insertion-point fibrosis is the hypertrophic pattern; the nulling is "
        "preserved, which argues against amyloid, and there is no territorial scar to suggest "
        "infarction.",
    ),
    "DCM": (
        "The ventricle is dilated with thin walls; any enhancement is mid-wall and non-ischaemic, "
        "which argues against infarction, and the compact myocardium argues against "
        "non-compaction.",
        "A large, thin-walled left ventricle without a territorial scar fits a dilated "
        "cardiomyopathy rather than ischaemic damage; the walls are not thick as in HCM or "
        "amyloid.",
    ),
    "CAM": (
        "The walls are thick like HCM, but the enhancement is diffuse and subendocardial with "
        "difficult myocardial nulling and an early-nulling blood pool, the amyloid pattern.",
        "Concentric thickening alone could be hypertrophic cardiomyopathy; global subendocardial "
        "enhancement with abnormal nulling points to infiltration by amyloid instead.",
    ),
    "LVNC": (
        "A thin compact layer lies under a prominent trabeculated layer projecting into the "
        "cavity; there is no territorial scar and no diffuse enhancement, so non-compaction "
        "fits best.",
        "The spiky inner layer with a thin compact outer layer gives a high non-compacted to "
        "compacted ratio, typical of non-compaction rather than dilated or hypertrophic disease.",
    ),
    "MI": (
        "Enhancement starts at the subendocardium and follows a single coronary territory, the "
        "ischaemic pattern; mid-wall or insertion-point enhancement would suggest a "
        "cardiomyopathy instead.",
        "A subendocardial-to-transmural scar confined to one coronary territory is an infarct, "
        "not the mid-wall or diffuse patterns of the cardiomyopathies.",
    ),
    "NOR": (
        "Wall thickness and cavity size are within normal limits and the myocardium nulls "
        "without enhancement, so none of the cardiomyopathy or infarct patterns is present.",
        "There is no scar, no abnormal thickening and no dilatation; this is a normal study.",
    ),
}
FINAL = (
    "Final diagnosis: {name} ({abbr}).",
    "The diagnosis is therefore {name} ({abbr}).",
    "Conclusion: {name} ({abbr}).",
)


def _sections(report: str) -> tuple[list[str], str]:
    """Findings sentences and the impression text; tolerant of missing headers."""
    text = report.replace("\r", "")
    findings_match = re.search(r"FINDINGS:?\s*\n(.*?)(?:\n\s*IMPRESSION|\Z)", text, re.S | re.I)
    impression_match = re.search(r"IMPRESSION:?\s*\n(.*?)(?:\n\s*\n|\Z)", text, re.S | re.I)
    body = findings_match.group(1) if findings_match else text
    sentences = [
        s.strip()
        for line in body.splitlines()
        for s in re.split(r"(?<=[.!])\s+(?=[A-Z])", line)
        if s.strip() and "[" not in s  # placeholder lines carry no findings
    ]
    return sentences, impression_match.group(1).strip() if impression_match else ""


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _place_phrase(places: list[str]) -> str:
    """'inferior, anterior' -> 'inferior and anterior walls'; nouns (septum, insertion points,
    free wall, apex) stand on their own."""
    nouns = ("septum", "wall", "point", "points", "apex")
    walls = [p for p in places if not p.endswith(nouns)]
    others = [p for p in places if p.endswith(nouns)]
    parts = [_join(walls) + (" wall" if len(walls) == 1 else " walls")] if walls else []
    return _join(parts + others)


def _rng(item_id: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def offline_rewrite(scrubbed_report: str, box: list[float] | None, item_id: str, seed: int) -> str:
    """Return the JSON reply o3 would give for this report and box."""
    rng = _rng(item_id, seed)
    sentences, impression = _sections(scrubbed_report)
    lesion = [s for s in sentences if _LESION_WORDS.search(s)]
    structure = [s for s in sentences if _STRUCTURE_WORDS.search(s) and s not in lesion]
    chosen = (lesion[:2] or ["No late gadolinium enhancement is seen."]) + structure[:1]
    first = chosen[0]
    lead = OBSERVATION_LEADS[int(rng.integers(len(OBSERVATION_LEADS)))]
    observation = " ".join(
        [lead.format(s=first, s_lower=first[0].lower() + first[1:]), *chosen[1:]]
    )

    places = []
    for s in lesion:
        for phrase in _INSERTION.findall(s):  # qualifiers belong to the insertion points
            phrase = re.sub(r"\brv\b", "RV", phrase.lower())
            if phrase not in places:
                places.append(phrase)
        for level, wall in _LOCATION.findall(_INSERTION.sub("", s)):
            phrase = (level + wall).lower().replace("rv ", "RV ")
            if phrase not in places:
                places.append(phrase)
    layers = sorted({m.lower() for s in lesion for m in _LAYER.findall(s)})
    if places:
        where = f"The abnormality involves the {_place_phrase(places[:4])}"
        where += f" ({', '.join(layers)})." if layers else "."
    elif layers:
        where = f"The abnormality is {' and '.join(layers)} rather than focal."
    else:
        where = "There is no enhancing lesion to localise."
    if box:
        coords = ", ".join(str(int(round(v))) for v in box)
        where += f" On this slice the lesion lies within [{coords}]."
    else:
        where += " No focal lesion box applies to this slice."

    classes = mentioned_classes(impression)
    diagnosis = classes[0] if len(classes) == 1 else ""
    if diagnosis:
        variants = DIFFERENTIAL[diagnosis]
        reasoning = variants[int(rng.integers(len(variants)))]
        final = FINAL[int(rng.integers(len(FINAL)))].format(
            name=FULL_NAMES[diagnosis], abbr=diagnosis
        )
        differential = f"{reasoning} {final}"
    else:
        differential = f"The report's impression does not settle one diagnosis: {impression}"
    return json.dumps(
        {
            "observation": observation,
            "localisation": where,
            "differential": differential,
            "diagnosis": diagnosis,
        },
        sort_keys=True,
    )
