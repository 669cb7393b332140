"""Stage 1a alignment data: CMR image-caption pairs mixed with PMC-VQA, as TRL records.

Alignment trains only the projector, so the CMR captions describe what is visible (LV size and
function, wall thickness, LGE, T1) and never state the diagnosis: naming the class here would
let the projector learn a shortcut that the cold-start stage is meant to teach with reasoning.
Captions come from scrubbed reports; any line still carrying a de-identification placeholder
is kept out, so nothing of a report header can reach a training target.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import numpy as np

from cmr_rd.classes import FULL_NAMES

CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe the findings in this late gadolinium enhancement cardiac MRI image.",
    "Write the findings section for this LGE cardiac MR image.",
    "Describe the left ventricle, wall thickness and myocardial enhancement in this image.",
    "What does this cardiac MRI show? Report the findings without a diagnosis.",
)
NO_PMC_NOTE = "no PMC-VQA path configured: CMR pairs only"
MAX_CAPTION_CHARS = 1200  # a caption, not a report: keeps alignment targets short

_FINDINGS = ("findings", "finding", "results", "observations")
_IMPRESSION = (
    "impression",
    "conclusion",
    "summary",
    "opinion",
    "diagnosis",
    "final diagnosis",
    "interpretation",
    "assessment",
    "comment",
    "recommendation",
)
_OTHER = (
    "clinical indication",
    "indication",
    "clinical history",
    "history",
    "clinical information",
    "clinical details",
    "technique",
    "protocol",
    "procedure",
    "comparison",
    "contrast",
    "sequences",
    "addendum",
    "signed",
)
_OTHER_PREFIXES = (
    "reason for ",
    "reported by",
    "electronically signed",
    "signed by",
    "dictated by",
    "verified by",
)
_HEADER_COLON = re.compile(r"^[#*\s]*(?P<name>[A-Za-z][A-Za-z &/()-]{0,40}?)\s*:\s*(?P<rest>.*)$")
_HEADER_BARE = re.compile(r"^[#*\s]*(?P<name>[A-Za-z][A-Za-z &/()-]{0,40}?)[\s*]*$")
_PLACEHOLDER = re.compile(r"\[[A-Za-z][A-Za-z0-9 _-]{0,24}\]")
_PHI_FIELD = re.compile(
    r"^\s*(patient|name|mrn|dob|date of birth|accession|hospital number|referr\w*|requested by|"
    r"reported by|signed|physician|address|exam date|date of exam\w*)\b[^:]{0,20}:",
    re.I,
)
_DIAGNOSIS = re.compile(
    "|".join(
        [re.escape(name) for key, name in FULL_NAMES.items() if key != "NOR"]
        + [r"cardiomyopath", r"amyloid", r"non-?compaction\b", r"\binfarction\b"]
        + [r"myocarditis", r"sarcoid", r"fabry", r"takotsubo", r"\bdiagnos"]
    ),
    re.I,
)
_CLASS_ABBR = re.compile(r"\b(HCM|DCM|LVNC|CAM|MI)\b")
_TOPIC = re.compile(
    r"\bLV(?:EF|EDD|EDVi?|ESVi?|M)?\b|left[ -]ventric|ejection fraction|systolic function"
    r"|\bwalls?\b|thick|hypertroph|\bsept(?:um|al)\b|trabecul|compact|\bNC/C\b"
    r"|\bLGE\b|enhancement|gadolinium|\bscar|fibrosis|transmural|subendocardial|mid-?wall"
    r"|\bnull|viab|\bT1\b|MOLLI|\bECV\b|extracellular volume",
    re.I,
)
_FALLBACK_TOPIC = re.compile(_TOPIC.pattern + r"|ventric", re.I)
_TECHNIQUE = re.compile(
    r"mmol/kg|\bscanner\b|\bsequences?\b|\bprotocol\b|\bperformed\b|\bacquired\b|\bPSIR\b"
    r"|inversion[- ]recovery|locali[sz]er|\bcines?\b",
    re.I,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d{1,2}[.)])\s+")


def _section_kind(name: str, bare: bool) -> str | None:
    """'findings' / 'impression' / 'other' for a known section name, else None.

    Names must match exactly (plural allowed), so a findings line such as "Contrast enhancement:
    ..." does not end the section; only impression-like names also match as prefixes with a
    colon ("Summary and recommendations:"), where excluding too much is the safe side.
    """
    if not (name.isupper() or name[:1].isupper()):
        return None
    key = re.sub(r"\s+", " ", name).strip().casefold()
    words = key.split()
    if len(words) > 4:
        return None
    stem = key.rstrip("s")
    if stem in {n.rstrip("s") for n in _FINDINGS} or (
        key.endswith(" findings") and len(words) <= 3
    ):
        return "findings"
    if stem in {n.rstrip("s") for n in _IMPRESSION} or (
        not bare and any(key.startswith(n + " ") for n in _IMPRESSION)
    ):
        return "impression"
    if stem in {n.rstrip("s") for n in _OTHER} or key.startswith(_OTHER_PREFIXES):
        return "other"
    return None


def _split_sections(text: str) -> list[tuple[str | None, str]]:
    """(section kind, content line) for every non-empty line; None = preamble or unknown.

    An indication/technique header written inline ("Technique: ...") covers its paragraph only,
    so unheaded findings after it are not mistaken for technique; findings and impression
    sections run to the next known header.
    """
    out: list[tuple[str | None, str]] = []
    kind: str | None = None
    inline = False
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            if kind == "other" and inline:
                kind = None
            continue
        m = _HEADER_COLON.match(line)
        bare = m is None
        m = m or _HEADER_BARE.match(line)
        new = _section_kind(m.group("name"), bare) if m else None
        if new is not None:
            kind = new
            rest = "" if bare else m.group("rest")
            inline = bool(rest.strip())
            if rest.strip():
                out.append((kind, rest))
            continue
        out.append((kind, line))
    return out


def _sentences(line: str) -> list[str]:
    line = _BULLET.sub("", line).strip()
    return [s.strip() for s in _SENTENCE_END.split(line) if s.strip()]


def _usable(sentence: str, topic: re.Pattern[str], fallback: bool) -> bool:
    if _PLACEHOLDER.search(sentence) or _PHI_FIELD.match(sentence):
        return False
    if _DIAGNOSIS.search(sentence) or _CLASS_ABBR.search(sentence):
        return False
    if fallback and _TECHNIQUE.search(sentence):
        return False
    if sentence.isupper() and not re.search(r"\d", sentence):  # a sub-heading ("LV FUNCTION")
        return False
    return bool(topic.search(sentence))


def findings_caption(scrubbed_report: str) -> str | None:
    """A findings caption for image-text alignment: the FINDINGS section's sentences about the LV,
    wall thickness, LGE/enhancement and T1, without the IMPRESSION (the diagnosis is not given away
    here; cold start teaches that). None when no findings section or sentences are found.

    Without a FINDINGS header, sentences outside any impression/technique/history section that
    mention enhancement, LGE, walls or the ventricle are used instead. Sentences naming a disease
    or holding a placeholder ([NAME], [DATE], ...) are always dropped.
    """
    if not scrubbed_report or not scrubbed_report.strip():
        return None
    lines = _split_sections(scrubbed_report)
    fallback = not any(kind == "findings" for kind, _ in lines)
    want = None if fallback else "findings"
    topic = _FALLBACK_TOPIC if fallback else _TOPIC
    candidates = [s for kind, line in lines if kind == want for s in _sentences(line)]
    picked: list[str] = []
    size = 0
    for sentence in candidates:
        if not _usable(sentence, topic, fallback):
            continue
        if sentence[-1] not in ".!?":
            sentence += "."
        if sentence in picked:
            continue
        if picked and size + len(sentence) + 1 > MAX_CAPTION_CHARS:
            break
        picked.append(sentence)
        size += len(sentence) + 1
    return " ".join(picked) if picked else None


def _stable_index(seed: int, key: str, n: int) -> int:
    """Index in [0, n) from (seed, key); unlike hash() it is the same in every process."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def cmr_caption_records(
    images: list[dict], reports: dict[str, str], seed: int
) -> tuple[list[dict], list[dict]]:
    """images: rows {"id", "patient", "image", "label"} (one per training slice);
    reports: patient -> scrubbed report.
    One record per image whose patient has a usable caption; the user text is one of a few fixed
    captioning prompts (chosen deterministically from the seed and id); problems list patients
    with no report or no usable caption.

    Problems are {"patient", "reason", "images": number of slices left out}, sorted by patient.
    """
    captions: dict[str, str | None] = {}
    skipped: Counter[str] = Counter()
    reasons: dict[str, str] = {}
    records: list[dict] = []
    for row in images:
        patient = str(row["patient"])
        if patient not in captions:
            report = reports.get(patient)
            if not report or not str(report).strip():
                captions[patient], reasons[patient] = None, "no report"
            else:
                captions[patient] = findings_caption(str(report))
                if captions[patient] is None:
                    reasons[patient] = "no usable findings caption in report"
        caption = captions[patient]
        if caption is None:
            skipped[patient] += 1
            continue
        rid = str(row["id"])
        prompt = CAPTION_PROMPTS[_stable_index(seed, rid, len(CAPTION_PROMPTS))]
        records.append(
            {
                "id": rid,
                "source": "cmr",
                "images": [str(row["image"])],
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": prompt}],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": caption}]},
                ],
                "label": None if row.get("label") is None else str(row["label"]),
            }
        )
    problems = [{"patient": p, "reason": reasons[p], "images": skipped[p]} for p in sorted(skipped)]
    return records, problems


def _subset(n_have: int, n_want: int, rng: np.random.Generator) -> np.ndarray:
    if n_want >= n_have:
        return np.arange(n_have)
    return np.sort(rng.choice(n_have, size=n_want, replace=False))


def mix_alignment(
    cmr: list[dict], pmc: list[dict], pmc_fraction: float, total: int | None, seed: int
) -> tuple[list[dict], dict]:
    """Deterministic mixture: `pmc_fraction` of the records from PMC-VQA (0 when pmc is empty),
    the rest CMR; total=None means all CMR records plus the matching number of PMC records.
    Interleaved in a seeded order. Returns (records, summary) with counts per source and a note
    like 'no PMC-VQA path configured: CMR pairs only' when pmc is empty.

    Records are never repeated: when a source has fewer than its share, all of it is used and
    the shortfall is stated in the note.
    """
    if not 0.0 <= pmc_fraction <= 1.0:
        raise ValueError(f"pmc_fraction must be in [0, 1], got {pmc_fraction}")
    if total is not None and total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    notes: list[str] = []
    fraction = pmc_fraction if pmc else 0.0
    if not pmc:
        notes.append(NO_PMC_NOTE)
    elif pmc_fraction == 0.0:
        notes.append("pmc_fraction is 0: CMR pairs only")
    if total is None:
        if fraction >= 1.0:
            raise ValueError("pmc_fraction=1 leaves no CMR share to size the mixture: give a total")
        want_cmr = len(cmr)
        want_pmc = round(want_cmr * fraction / (1.0 - fraction))
    else:
        want_pmc = round(total * fraction)
        want_cmr = total - want_pmc
    n_pmc, n_cmr = min(want_pmc, len(pmc)), min(want_cmr, len(cmr))
    if n_pmc < want_pmc:
        notes.append(f"only {len(pmc)} PMC-VQA records for {want_pmc} wanted")
    if n_cmr < want_cmr:
        notes.append(f"only {len(cmr)} CMR records for {want_cmr} wanted")

    rng = np.random.default_rng(seed)
    chosen = [cmr[i] for i in _subset(len(cmr), n_cmr, rng)]
    chosen += [pmc[i] for i in _subset(len(pmc), n_pmc, rng)]
    records = [chosen[i] for i in rng.permutation(len(chosen))]
    counts = Counter(str(r.get("source")) for r in records)
    summary = {
        "total": len(records),
        "counts": {"cmr": counts.get("cmr", 0), "pmcvqa": counts.get("pmcvqa", 0)},
        "available": {"cmr": len(cmr), "pmcvqa": len(pmc)},
        "pmc_fraction": pmc_fraction,
        "pmc_fraction_actual": round(n_pmc / len(records), 4) if records else 0.0,
        "seed": seed,
        "note": "; ".join(notes),
    }
    return records, summary
