"""Findings, read from a report or a chain the same way, for finding-level matching (RadMatch).

The synthetic reports are written from the drawn anatomy (`cmr_rd.synth.report`), so a report's
findings are the generator's ground truth; the offline rewriter composes chains from the same
sentences and the trained models imitate them. One extractor therefore reads both sides.

A text becomes at most one `Finding` per kind (what is there: enhancement, its absence,
hypertrophy, thin walls, dilatation, trabeculation, abnormal nulling, a normal wall or size),
each with the attributes the error categories need: the enhancement's layers and extent and the
places named with it (walls, segments, insertion points, apex), a dilatation's grade.

Only affirmed statements count. A clause with a hypothetical (would, could, may, might) says
nothing about this image, and a negation ("no LGE", "without enhancement") turns an unqualified
enhancement word into the finding that there is none; a qualified negation ("no subendocardial
scar") rules out one pattern and states nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cmr_rd.classes import CLASSES

LGE, NO_LGE = "enhancement", "no enhancement"
HYPERTROPHY, THIN, DILATED = "hypertrophy", "thin walls", "dilated ventricle"
TRABECULATION, NULLING = "trabeculation", "abnormal nulling"
NORMAL_WALL, NORMAL_SIZE = "normal wall thickness", "normal ventricular size"
ATRIA = "dilated atria"
# Findings a chain must not miss when the reference has them (the diagnostic ones).
KEY_KINDS = (LGE, NO_LGE, HYPERTROPHY, THIN, DILATED, TRABECULATION, NULLING)
# Pairs that cannot both be true of one heart: stating one where the reference has the other is
# an unsupported finding.
CONTRADICTS = {
    LGE: NO_LGE,
    NO_LGE: LGE,
    HYPERTROPHY: NORMAL_WALL,
    NORMAL_WALL: HYPERTROPHY,
    DILATED: NORMAL_SIZE,
    NORMAL_SIZE: DILATED,
}

_HYPOTHETICAL = re.compile(r"\b(would|could(?! not)|might|may|if|any)\b", re.I)
# What follows these is contrasted, not stated ("... rather than dilated or hypertrophic disease").
_CONTRAST = re.compile(r"\b(rather than|instead of|unlike|as in|argues? against|like)\b.*", re.I)
# Class names are the answer, not findings: "dilated cardiomyopathy" states no dilatation.
_CLASS_NAMES = re.compile(
    r"\b((?i:hypertrophic (?:cardiomyopathy|pattern|phenotype|disease)|dilated cardiomyopathy|"
    r"cardiac amyloidosis|amyloid\w*|(?:left ventricular )?non-?compaction(?: cardiomyopathy)?|"
    r"myocardial infarction|infarct\w*)|HCM|DCM|CAM|LVNC|MI|NOR)\b"
)
_NEGATION = re.compile(r"\b(no|not|without|absent|none|nor)\b", re.I)
_CLAUSE_SPLIT = re.compile(r";|:\s|,\s*(?:which|but|whereas)\b|\s(?:but|whereas)\s", re.I)
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[])|\n+")
# Words about the box or the image itself, not findings: "No focal lesion box applies to this
# slice", "On the LGE image:", "Looking first at the enhancement pattern".
_NOT_FINDINGS = re.compile(
    r"\b(?:focal )?lesion box\b[^.]*|\b(?:lge|late[- ]enhancement|late gadolinium enhancement) "
    r"imag(?:e|ing)\b|\benhancement pattern\b|\bshows the key finding\b",
    re.I,
)

_LGE_WORDS = re.compile(
    r"\b(lge|enhanc\w*|scar\w*|fibrosis|late gadolinium|enhancing lesion|lesion lies)\b", re.I
)
# The offline rewriter's localisation sentence ("The abnormality involves ...") places whatever
# the chain's main finding is: enhancement if it states one, else trabeculation.
_ABNORMALITY = re.compile(r"\babnormality\b", re.I)
_HYPERTROPHY = re.compile(
    r"\b(hypertroph\w*|thickened|thickening|thick walls?)\b|\bwalls? (?:are |is )?\w* ?thick\b",
    re.I,
)
_THIN = re.compile(r"\b(thin(?:-walled)?|wall thickness is reduced|thinning)\b", re.I)
_DILATED = re.compile(r"\b(dilat\w*|large,? thin-walled|enlarged)\b", re.I)
_TRABECULATION = re.compile(
    r"\b(trabecul\w*|hypertrabecul\w*|non-?compact\w*|nc/c|two-layered)\b", re.I
)
_NULLING = re.compile(
    r"\b(difficult\w*|poor|abnormal|could not be achieved|early)\b[^.;]*\bnull|"
    r"\bnull\w*[^.;]*\b(before|precedes|early|difficult|could not)\b|"
    r"abnormal gadolinium kinetics|null point precedes",
    re.I,
)
_NORMAL_WALL = re.compile(
    r"normal wall thickness|wall thickness is normal|within normal limits|"
    r"no abnormal thickening",
    re.I,
)
_NORMAL_SIZE = re.compile(r"\bnormal in size\b|\bnot dilated\b|\bno dilatation\b", re.I)
_ATRIA = re.compile(r"\batri(?:a|um|al)\b", re.I)
_RIGHT = re.compile(r"\b(rv|right ventric\w*)\b(?! insertion)", re.I)
_DILATION_GRADE = re.compile(r"\b(mildly|moderately|severely)\s+dilated\b", re.I)

LAYERS = {
    "subendocardial": re.compile(r"subendocard\w*|subendocardial-based", re.I),
    "mid-wall": re.compile(r"mid-?wall|mid-?myocardial|septal stripe", re.I),
    # "near-transmural" is transmural; "40% transmural" and "transmurality" give an extent
    "transmural": re.compile(r"(?<!% )\btransmural(?:ly)?\b", re.I),
    "subepicardial": re.compile(r"subepicard\w*", re.I),
}
_DIFFUSE = re.compile(r"\b(diffuse|global|circumferential|all segments|at all levels)\b", re.I)
_FOCAL = re.compile(r"\b(focal|patchy|stripe|linear|territor\w*|lies within)", re.I)
_TERRITORY = re.compile(r"\b(lad|rca|lcx|coronary territory|territory distribution)\b", re.I)

# Canonical places and what each is compatible with (a wall matches its neighbours' names in the
# coarser four-wall apical scheme, "septum" matches either septal segment).
_PLACES = (
    ("insertion point", r"insertion points?"),
    ("anteroseptal", r"anteroseptal|anteroseptum"),
    ("inferoseptal", r"inferoseptal"),
    ("anterolateral", r"anterolateral"),
    ("inferolateral", r"inferolateral"),
    ("septum", r"septum|septal|interventricular"),
    ("anterior", r"anterior"),
    ("inferior", r"inferior"),
    ("lateral", r"lateral|free wall"),
    ("apex", r"apex|apical"),
)
_PLACE_RE = re.compile(
    r"\b(" + "|".join(f"(?P<p{i}>{pattern})" for i, (_, pattern) in enumerate(_PLACES)) + r")\b",
    re.I,
)
COMPATIBLE = {
    "insertion point": {"insertion point", "septum", "anteroseptal", "inferoseptal"},
    "anteroseptal": {"anteroseptal", "septum", "anterior", "insertion point"},
    "inferoseptal": {"inferoseptal", "septum", "inferior", "insertion point"},
    "anterolateral": {"anterolateral", "lateral", "anterior"},
    "inferolateral": {"inferolateral", "lateral", "inferior"},
    "septum": {"septum", "anteroseptal", "inferoseptal", "insertion point"},
    "anterior": {"anterior", "anteroseptal", "anterolateral"},
    "inferior": {"inferior", "inferoseptal", "inferolateral"},
    "lateral": {"lateral", "anterolateral", "inferolateral"},
    "apex": {"apex"},
}


@dataclass
class Finding:
    kind: str
    layers: set[str] = field(default_factory=set)
    places: set[str] = field(default_factory=set)
    extent: set[str] = field(default_factory=set)  # {"diffuse"}, {"focal"} or both
    grade: set[str] = field(default_factory=set)  # a dilatation's mild/moderate/severe
    territorial: bool = False

    def describe(self) -> str:
        parts = [*sorted(self.extent), *sorted(self.layers)]
        text = " ".join([*parts, self.kind]) if parts else self.kind
        if self.places:
            text += " at " + ", ".join(sorted(self.places))
        return text


def clauses(text: str) -> list[str]:
    """Sentences cut into clauses; hypotheticals dropped (they say nothing about this image)."""
    text = _NOT_FINDINGS.sub("", text or "")
    out = []
    for sentence in _SENTENCE_SPLIT.split(text):
        sentence = _CLASS_NAMES.sub("", sentence)
        for clause in _CLAUSE_SPLIT.split(sentence):
            clause = _CONTRAST.sub("", clause).strip(" ,.;")
            if clause and not _HYPOTHETICAL.search(clause):
                out.append(clause)
    return out


def _places(text: str) -> set[str]:
    found = set()
    for match in _PLACE_RE.finditer(text):
        for i, (name, _) in enumerate(_PLACES):
            if match.group(f"p{i}"):
                found.add(name)
                break
    return found


def _wall_numbers(clause: str) -> list[float]:
    """Wall thicknesses in mm a clause states (not the LV diameter)."""
    if re.search(r"lvedd|diameter", clause, re.I) or not re.search(
        r"thick|wall|sept", clause, re.I
    ):
        return []
    return [float(v) for v in re.findall(r"(\d+(?:\.\d+)?)\s*mm\b", clause)]


def extract(text: str) -> dict[str, Finding]:
    """Kind -> the text's finding of that kind, attributes pooled over its clauses."""
    found: dict[str, Finding] = {}
    pending_places: set[str] = set()
    pending_layers: set[str] = set()

    def add(kind: str) -> Finding:
        return found.setdefault(kind, Finding(kind))

    for clause in clauses(text):
        negation = _NEGATION.search(clause)
        affirmed = clause[: negation.start()] if negation else clause
        negated = clause[negation.start() :] if negation else ""
        lge = _LGE_WORDS.search(affirmed)
        if lge:
            finding = add(LGE)
            finding.layers |= {name for name, rx in LAYERS.items() if rx.search(affirmed)}
            finding.places |= _places(affirmed)
            if _DIFFUSE.search(affirmed):
                finding.extent.add("diffuse")
            if _FOCAL.search(affirmed):
                finding.extent.add("focal")
            finding.territorial |= bool(_TERRITORY.search(affirmed))
        elif _ABNORMALITY.search(affirmed):
            pending_places |= _places(affirmed)
            pending_layers |= {name for name, rx in LAYERS.items() if rx.search(affirmed)}
        if negated and _LGE_WORDS.search(negated) and not lge:
            # "no subendocardial scar" rules out one pattern; "no focal or diffuse LGE", all
            kinds = {m.lower() for m in re.findall(r"\b(focal|diffuse)\b", negated, re.I)}
            qualified = (
                any(rx.search(negated) for rx in LAYERS.values())
                or re.search(r"territorial|ischaemic", negated, re.I)
                or len(kinds) == 1
            )
            if not qualified:
                add(NO_LGE)
        if _TERRITORY.search(affirmed) and LGE in found:
            found[LGE].territorial = True
        if _ATRIA.search(affirmed):
            if _DILATED.search(affirmed):
                add(ATRIA)
            continue  # atrial sentences say nothing about the ventricle
        right_only = _RIGHT.search(affirmed) and not re.search(r"\b(lv|left)\b", affirmed, re.I)
        if _TRABECULATION.search(affirmed):
            trabeculation = add(TRABECULATION)
            trabeculation.places |= _places(affirmed)
        if _NULLING.search(clause):  # its cues are negative phrasing ("could not be nulled")
            add(NULLING)
        if right_only:
            continue  # RV findings are secondary: not the left ventricle's wall or size
        if _HYPERTROPHY.search(affirmed) and not _TRABECULATION.search(affirmed):
            add(HYPERTROPHY)
        if _THIN.search(affirmed):
            add(THIN)
        if _DILATED.search(affirmed):
            dilated = add(DILATED)
            dilated.grade |= {m.lower() for m in _DILATION_GRADE.findall(affirmed)}
        if _NORMAL_WALL.search(clause):
            add(NORMAL_WALL)
        if _NORMAL_SIZE.search(clause) and not _DILATED.search(affirmed):
            add(NORMAL_SIZE)
        numbers = _wall_numbers(affirmed)
        if numbers:
            if max(numbers) >= 13 and HYPERTROPHY not in found:
                add(HYPERTROPHY)
            elif max(numbers) < 8 and THIN not in found:
                add(THIN)
    target = found.get(LGE) or found.get(TRABECULATION)
    if target is not None:
        target.places |= pending_places
        if target.kind == LGE:
            target.layers |= pending_layers
    return found


def pattern(findings: dict[str, Finding]) -> tuple[str | None, dict[str, int]]:
    """The class the findings point to (None when no class leads) and each class's support."""
    lge = findings.get(LGE)
    has = findings.__contains__
    support = dict.fromkeys(CLASSES, 0)
    if lge:
        ischaemic = lge.layers & {"subendocardial", "transmural"}
        if ischaemic and "diffuse" not in lge.extent and "mid-wall" not in lge.layers:
            support["MI"] += 3
        if lge.territorial:
            support["MI"] += 1
        if "diffuse" in lge.extent and "subendocardial" in lge.layers:
            support["CAM"] += 2
        if "mid-wall" in lge.layers and lge.places & {"insertion point"}:
            support["HCM"] += 2
        elif "mid-wall" in lge.layers and lge.places & {"septum"}:
            support["DCM"] += 1
    if has(NULLING):
        support["CAM"] += 2
    if has(HYPERTROPHY):
        support["HCM"] += 2
        support["CAM"] += 1
    if has(DILATED):
        support["DCM"] += 2
    if has(THIN) and not has(TRABECULATION):  # a thin compact layer is non-compaction's
        support["DCM"] += 2
    if has(TRABECULATION):
        support["LVNC"] += 5
    abnormal = any(has(k) for k in (LGE, HYPERTROPHY, THIN, DILATED, TRABECULATION, NULLING))
    if not abnormal:
        support["NOR"] += 2 * has(NO_LGE) + has(NORMAL_WALL) + has(NORMAL_SIZE)
    best = max(support.values())
    leaders = [c for c in CLASSES if support[c] == best]
    return (leaders[0] if best >= 2 and len(leaders) == 1 else None), support


def reference_text(report: str) -> str:
    """The findings and impression of a scrubbed report: what a judge compares a chain with
    (header, indication, technique and sign-off carry no findings)."""
    text = (report or "").replace("\r", "")
    findings = re.search(r"FINDINGS:?\s*\n(.*?)(?:\n\s*IMPRESSION|\Z)", text, re.S | re.I)
    impression = re.search(r"IMPRESSION:?\s*\n(.*?)(?:\n\s*\n|\Z)", text, re.S | re.I)
    body = findings.group(1).strip() if findings else text.strip()
    lines = [line.strip() for line in body.splitlines() if line.strip() and "[" not in line]
    out = "Findings:\n" + "\n".join(lines)
    if impression:
        out += "\n\nImpression:\n" + impression.group(1).strip()
    return out


def findings_of_reference(report: str) -> dict[str, Finding]:
    """The reference's findings: its FINDINGS section only (the impression names the diagnosis,
    which is the answer, not a finding)."""
    text = reference_text(report).split("\n\nImpression:")[0].removeprefix("Findings:\n")
    return extract(text)
