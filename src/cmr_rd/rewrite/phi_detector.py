"""The PHI gate's second layer: UCSF's philter (philter-lite), independent of the scrubber.

philter is a rule-and-dictionary de-identifier for clinical notes: about 330 regex, word-set
and context filters, with 97k first names, 161k surnames and a 195k-word whitelist, all in its
wheel. It shares no code and no pattern with `phi.scrub`, so a form the scrubber misses has a
second, different chance to be caught. Three adaptations, each for a measured reason:

- philter tags parts of speech with nltk, whose tagger data is a run-time download no package
  ships. It uses the tags only to keep name-list hits to proper-noun-shaped tokens, so a shape
  rule stands in (capitalised -> NNP, digits -> CD): nothing is fetched, ever.
- A cardiac-MR safe list (eponyms, vendors, sequence names, measurement ranges) runs first:
  philter's name lists hold "Locker", "Cine", "Siemens" and "Fabry".
- A bare name-list word is not enough: a person is flagged when two name-list words stand
  together ("Anna Berg", "Berg, Anna"). A name with a title, label or signature phrase is
  caught by philter's own context rules. "Find Initials" is dropped: it reads LV and RV as
  initials.

Only categories leave this module, never the matched text (callers log them).
"""

from __future__ import annotations

import importlib.resources
import re
import tomllib
from collections.abc import Sequence
from functools import cache

_NAME_LISTS = frozenset({"firstnames", "lastnames", "regex_context"})

# Terms of cardiac MR that philter's name and date rules would read as PHI.
_SAFE_PATTERNS = (
    # eponyms and named signs, syndromes, techniques
    r"\b(?:Anderson[- ]Fabry|Fabry|Lake[- ]Louise|Wolff[- ]Parkinson[- ]White|Loeys[- ]Dietz"
    r"|[Tt]etralogy of Fallot|Fallot|Ebstein|Kawasaki|Chagas|Danon|Becker|Duchenne|Marfan"
    r"|Yamaguchi|Takotsubo|Brugada|Friedreich|Noonan|Fontan|Simpson|Look[- ]Locker|Holter"
    r"|Purkinje|Valsalva|Agatston|Bernoulli|Laplace|Kussmaul|Kerley|Norwood|Bentall|Killip"
    r"|Task Force|Gadovist|Dotarem|MultiHance|Gadavist|Cine|CINE|cine)\b",
    # scanner vendors and models
    r"\b(?:Siemens(?: Healthineers)?|SIEMENS|Philips(?: Medical Systems)?|PHILIPS(?: MEDICAL"
    r" SYSTEMS)?|GE(?: Healthcare| Medical Systems| MEDICAL SYSTEMS)?|Canon|Toshiba|Magnetom"
    r"|MAGNETOM|Aera|Avanto|Skyra|Prisma|Vida|Sola|Ingenia|Achieva|Signa|SIGNA|Artist|Premier"
    r"|Discovery|Optima|Vantage|Titan|Orian|Elan)\b",
    # sequence names and cardiac acronyms
    r"\b(?:MOLLI|ShMOLLI|SASHA|SSFP|bSSFP|TrueFISP|PSIR|STIR|LGE|HASTE|FLASH|TRUFI|SAM|LV|RV"
    r"|LA|RA|LVOT|RVOT|TI|TE|TR|ECV|AHA|SCMR|JSON|LVEF|RVEF|EDV|ESV|LVNC|HCM|DCM|CAM|MI|NOR)\b",
    # measurements and ranges that look like dates or phone numbers
    r"\b(?:T1|T2\*?|TI|TE|TR|ECV)\s*(?:=|:)?\s*\d+(?:\.\d+)?\b"
    r"|\b\d+(?:\.\d+)?\s*[-\u2013]\s*\d+(?:\.\d+)?\s*(?:ms|mm|cm|ml|mL|%|bpm|g|kg|mmHg|m/s)\b",
    # a department is an organisational unit, not an identifier of a person
    r"\b[Dd]epartment of (?:[A-Z][a-z]+ ?){1,3}",
    # valve lesions in capitals (MR, MS: mitral regurgitation, stenosis), not "Mr." or "Ms."
    r"\b(?:MR|MS|TR|AR|PR|AS|PS|TS)\b(?!\.?[ \t]+[A-Z][a-z])",
    # laboratory values and counted segments: a number with its unit or its segment range
    r"(?:\b[\w\-]+[ \t]+)?\b\d+(?:\.\d+)?[ \t]*(?:ng/L|pg/mL|mg/dL|mmol/L|umol/L|U/L|g/dL"
    r"|mL/min|ml/min|mL|ml|ms|mm|cm|bpm|kg|m2|mmHg|%)(?![\w/])",
    r"\b[Ss]egments?[ \t]+\d+[ \t]*(?:[-\u2013]|to)[ \t]*\d+\b",
)

# DICOM person names ("DOE^JANE") reach reports through copied header fields; clinical notes,
# which philter was built for, never carry them.
_DICOM_NAME = re.compile(r"(?<![\w^])[A-Za-z][A-Za-z'\-]*\^[A-Za-z][A-Za-z'\-]*")


@cache
def _philter():
    """Import philter, swap its nltk tagger for the shape rule, load its filters (once)."""
    import philter_lite
    import philter_lite.philter as core
    from philter_lite.filters import RegexFilter, filter_from_dict

    def shape_tags(text: str) -> list[tuple[str, str]]:
        tags = []
        for token in core._get_clean(text):
            if token.isspace():
                tags.append((token, "SP"))
            elif token.isdigit():
                tags.append((token, "CD"))
            else:
                tags.append((token, "NNP" if token[:1].isupper() else "NN"))
        return tags

    if not hasattr(core, "_get_pos"):
        raise RuntimeError("philter-lite changed: philter_lite.philter._get_pos is gone")
    core._get_pos = shape_tags  # detect_phi looks it up at call time
    config = importlib.resources.files("philter_lite") / "configs" / "philter_delta.toml"
    with config.open("rb") as handle:
        spec = tomllib.load(handle)["filters"]
    safe = [re.compile(p) for p in _SAFE_PATTERNS]
    filters = [
        RegexFilter(title=f"cmr safe {i}", type="regex", exclude=False, phi_type="safe", data=rx)
        for i, rx in enumerate(safe)
    ]
    for entry in spec:
        if entry["title"] == "Find Initials":
            continue
        entry = dict(entry)
        if entry.get("exclude"):
            entry["phi_type"] = entry.get("keyword", entry["type"]).split(".")[0]
        filters.append(filter_from_dict(entry))
    categories = sorted({f.phi_type for f in filters if f.exclude})
    return philter_lite.detect_phi, filters, categories, safe


# What may stand between the two words of a name: "Anna Berg", "Berg, Anna", "Anna J. Berg".
_PAIR_GAP = re.compile(r"^(?:[ \t]+|[ \t]*,[ \t]*|[ \t]+[A-Z]\.?[ \t]+)$")


def spans(text: str, site_safe: Sequence[re.Pattern[str]] = ()) -> list[tuple[int, int, str]]:
    """(start, end, category) of every suspected identifier, name-list words paired.

    `site_safe`: a site's own additions to the safe list (`phi.SafeList`); a hit inside one of
    their matches is dropped, as for the built-in list."""
    detect, filters, categories, safe = _philter()
    _, _, tracker = detect(text, patterns=filters, phi_type_list=categories)
    safe_spans = [m.span() for rx in (*safe, *site_safe) for m in rx.finditer(text)]
    hits = sorted(
        (p.start, p.stop, p.phi_type)
        for p in tracker.phi
        if not any(a <= p.start and p.stop <= b for a, b in safe_spans)
    )
    out = [h for h in hits if h[2] not in _NAME_LISTS]
    out += [(*m.span(), "dicom name") for m in _DICOM_NAME.finditer(text)]
    names = [h for h in hits if h[2] in _NAME_LISTS]
    for left, right in zip(names, names[1:], strict=False):
        if _PAIR_GAP.match(text[left[1] : right[0]]):
            out.append((left[0], right[1], "name"))
    return sorted(out)


def categories(text: str, site_safe: Sequence[re.Pattern[str]] = ()) -> list[str]:
    """The categories of PHI philter finds in `text` ([] when clean); never the text itself."""
    return sorted({category for _, _, category in spans(text, site_safe)})
