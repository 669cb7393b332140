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

Every rule reads `fold(text)`, the text with its accents taken off letter for letter ("Łukasz
Wróbel" as "Lukasz Wrobel"), so names written with diacritics meet the same rules and lists as
their plain spellings, and the spans found still index the text itself.

Only categories leave this module, never the matched text (callers log them).
"""

from __future__ import annotations

import importlib.resources
import re
import tomllib
import unicodedata
from collections.abc import Sequence
from functools import cache

_NAME_LISTS = frozenset({"firstnames", "lastnames", "regex_context"})


def _fold_table() -> dict[int, str]:
    """Each Latin letter with a diacritic -> its base letter (é -> e, Ñ -> N, Ł -> L), one
    character for one; a combining mark of decomposed text becomes an apostrophe, which every
    name rule takes as part of a word. Letters without a one-letter base (ß, Æ) stay."""
    table = {}
    for code in (*range(0xC0, 0x250), *range(0x1E00, 0x1F00)):
        char = chr(code)
        base = "".join(
            c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
        )
        if len(base) == 1 and base != char and base.isascii():
            table[code] = base
    table.update({ord(a): b for a, b in zip("ØøŁłĐđĦħŦŧ", "OoLlDdHhTt", strict=True)})
    table.update({code: "'" for code in range(0x300, 0x370)})
    return table


_FOLD = _fold_table()


def fold(text: str) -> str:
    """`text` without its accents, the same length, so a span of one is a span of the other."""
    return text if text.isascii() else text.translate(_FOLD)


# Units of measurement, for the safe rule below: a number with one of these is a measurement.
_UNIT = (
    r"(?:msec|ms|sec|s|mm|cm|m|mL|ml|cc|L|l|dL|dl|g|kg|mg|ug|\u00b5g|mmol|umol|\u00b5mol|nmol"
    r"|ng|pg|U|IU|bpm|mmHg|Hz|%|T|mSv|Gy|MBq|cm2|cm\u00b2|m2|m\u00b2|mm2|mm\u00b2|min|mins"
    r"|minutes|h|hrs?|hours?|days?|weeks?|months?|years?|yrs?|y)"
    r"(?:[ \t]?/[ \t]?(?:m\^?2|m\u00b2|m2|kg|min|beat|s|L|l|dL|mL|ml|h|day|d|m))?"
)

_EPONYM = r"[A-Z][A-Za-z\u00c0-\u00ff'\-]+"

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
    r"\b(?i:seg(?:ment)?s?)\.?[ \t]+\d+[ \t]*(?:[-\u2013]|to)[ \t]*\d+\b",
)

# Structural rules, so they hold for report styles nobody tuned on. Unlike the list above they
# are not handed to philter: they only drop a hit that lies wholly inside one of their matches,
# so a heading ("Name:") never shields the value after it ("Name: Anna Berg" is still a hit).
_SAFE_SPANS = (
    # the scrubber's own placeholders: philter's salutation rule read "[PHYSICIAN], MD." as a
    # name before a degree, and the gate then refused "Reported by Anna Berg, MD."
    r"\[(?:NAME|PHYSICIAN|DATE|ID|MRN|CONTACT|ADDRESS|INSTITUTION|REDACTED)\][,.;:]*",
    # field strength: "3 T", "1.5T", "3 Tesla" (philter reads "3 T" as a house number and street)
    r"\b\d(?:[.,]\d)?[ \t]?(?:T|Tesla|tesla)\b",
    # a number with its unit, spaced or not, with a denominator ("1209msec", "74 mL/m^2",
    # "52 g/m²", "2.1 m/s", "0,1 mmol/kg"): measurements, never identifiers
    rf"(?<![\w.,])\d+(?:[.,]\d+)*[ \t]?{_UNIT}(?![A-Za-z0-9])",
    # and with its measurement's abbreviation before it ("T1 1015msec", "LVEDV 174 ml")
    rf"\b[A-Z][A-Z0-9*]{{0,6}}[a-z]?[ \t]*[:=]?[ \t]*\d+(?:[.,]\d+)*[ \t]?{_UNIT}(?![A-Za-z0-9])",
    # reference ranges: "(960-1030)" whole in its brackets (not "(555) 123-4567"), and after a
    # word that says so: "normal 25-29%", "ref. 1140–1240", "normal < 50"
    r"[(\[][ \t]*(?:[<>\u2264\u2265][ \t]*)?\d+(?:[.,]\d+)*[ \t]*[-\u2013][ \t]*\d+(?:[.,]\d+)*"
    rf"[ \t]*(?:{_UNIT})?[ \t]*[)\]]",
    r"\b(?i:normal|ref|reference|range|nr|nl)\b\.?[ \t]*:?[ \t]*(?:[<>\u2264\u2265][ \t]*)?"
    r"\d+(?:[.,]\d+)*(?:[ \t]*[-\u2013][ \t]*\d+(?:[.,]\d+)*)?",
    # counted segments of the AHA model ("3/17 segments", "segment 5/17")
    r"(?<![\d/.\-])\d{1,2}[ \t]?/[ \t]?17\b(?![/.\-]\d)",
    # British clinical intervals after a preposition: "in 3/12" (months), "6/52" (weeks), "2/7"
    r"\b(?i:in|for|within|after|over|every|next)[ \t]+\d{1,2}/(?:12|52|7)\b(?![/.\-]\d)",
    # eponyms and named entities of cardiology: a capitalised name (or two, joined by "and", "/"
    # or "-") before the noun that makes it a criterion, disease, sign, procedure or score
    rf"\b{_EPONYM}(?:[ \t]*(?:[-/]|\band\b|&)[ \t]*{_EPONYM})*"
    r"(?:'s)?[ \t]+(?i:criteria|criterion|disease|syndrome|anomaly|sign|classification|score|"
    r"procedure|operation|circulation|shunt|repair|equation|formula|method|technique|"
    r"phenomenon|ratio|grade|grading|stage|staging|protocol|consensus|rule|effect|manoeuvre|"
    r"maneuver|ataxia|dystrophy|myopathy|endocarditis|arteritis|conduit|baffle|physiology|"
    r"malformation|aneurysm|triad|tetralogy|pentalogy)\b",
    # cardiology acronyms that philter's lists hold as names or places (views, rhythms, scores)
    r"\b(?:SA|SAX|LAX|VLA|HLA|2CH|3CH|4CH|2C|3C|4C|NYHA|CCS|ECG|EKG|ICD|CRT|CRT-D|LBBB|RBBB|AF"
    r"|VT|NSVT|SVT|PVC|VE|VEs|HFpEF|HFrEF|HFmrEF|CAD|PCI|CABG|STEMI|NSTEMI|ACS|MINOCA|ATTR|AL"
    r"|ARVC|ALVC|LVH|RCA|LAD|LCx|LCX|PDA|OM|TAPSE|MAPSE|LAVI|LAVi|SV|CO|CI|BSA|BMI|PA|MPA|RPA"
    r"|LPA|Qp|Qs|PISA|AVA|EF|LVEDV|LVESV|LVEDVi|LVESVi|RVEDV|RVESV|RVEDVi|RVESVi|LVM|LVMi|WT"
    r"|IVS|PW|LVIDd|AHA|ESC|ACC|JCS|SCD|HCM|ICC|EGPA|SLE|MRI|CMR|MR|CT|CTCA|PET|SPECT|FDG|TTE"
    r"|TOE|TEE|IV|LGE|PSIR|MAG|IR|GRE|FFE|FIESTA|SSFP|bSSFP|STIR|T2W|T1W|TSE|FSE|HASTE|VENC"
    r"|PC|MOLLI|ShMOLLI|SASHA|SAPPHIRE|ECV|EGE|TIMI|NT-proBNP|BNP|CK|CRP|ESR|Hb|eGFR|GFR)\b",
    # section headings at the start of a line ("Clinical Details:", "FINDINGS:")
    r"(?m)^[ \t]*[A-Z][A-Za-z /&\-]{2,40}:",
)
_STRUCTURAL = tuple(re.compile(p) for p in _SAFE_SPANS)

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
    whitelist = frozenset().union(
        *(f.data for f in filters if not f.exclude and isinstance(getattr(f, "data", None), set))
    )
    return philter_lite.detect_phi, filters, categories, safe, whitelist


_NAME_WORD = r"[A-Z][a-z][A-Za-z'\-]*"
_BESIDE_NAME = re.compile(
    rf"\b(?P<before>{_NAME_WORD})[ \t]*,?[ \t]*\[(?:NAME|PHYSICIAN)\]"
    rf"|\[(?:NAME|PHYSICIAN)\][ \t]*,?[ \t]*(?P<after>{_NAME_WORD})\b"
)

# What may stand between the two words of a name: "Anna Berg", "Berg, Anna", "Anna J. Berg".
_PAIR_GAP = re.compile(r"^(?:[ \t]+|[ \t]*,[ \t]*|[ \t]+[A-Z]\.?[ \t]+)$")


def spans(text: str, site_safe: Sequence[re.Pattern[str]] = ()) -> list[tuple[int, int, str]]:
    """(start, end, category) of every suspected identifier, name-list words paired.

    `site_safe`: a site's own additions to the safe list (`phi.SafeList`); a hit inside one of
    their matches is dropped, as for the built-in list."""
    detect, filters, categories, safe, whitelist = _philter()
    written, text = text, fold(text)
    _, _, tracker = detect(text, patterns=filters, phi_type_list=categories)
    safe_spans = [m.span() for rx in (*safe, *_STRUCTURAL, *site_safe) for m in rx.finditer(text)]
    if written is not text:  # a site's entry may be written with its accents ("Löffler")
        safe_spans += [m.span() for rx in site_safe for m in rx.finditer(written)]
    hits = sorted(
        (p.start, p.stop, p.phi_type)
        for p in tracker.phi
        if not any(a <= p.start and p.stop <= b for a, b in safe_spans)
    )
    out = [h for h in hits if h[2] not in _NAME_LISTS]
    out += [(*m.span(), "dicom name") for m in _DICOM_NAME.finditer(text)]
    names = [h for h in hits if h[2] in _NAME_LISTS]
    for left, right in zip(names, names[1:], strict=False):
        if not _PAIR_GAP.match(text[left[1] : right[0]]):
            continue
        words = (text[left[0] : left[1]], text[right[0] : right[1]])
        # Capitals are the one case in which the shape rule cannot tell a name from a word:
        # "REGIONAL DYSKINESIA" is two common words that the name lists also hold.
        if all(w.isupper() and w.lower() in whitelist for w in words):
            continue
        out.append((left[0], right[1], "name"))
    # The other half of a name whose first half the scrubber took ("Kowalczyk, [NAME]", where
    # the given name was a known identifier): an uncommon capitalised word beside a name
    # placeholder is a name, in or out of the lists.
    for m in _BESIDE_NAME.finditer(text):
        word = m.group("before") or m.group("after")
        start = m.start("before") if m.group("before") else m.start("after")
        if word.lower() not in whitelist:
            out.append((start, start + len(word), "name"))
    return sorted(out)


def categories(text: str, site_safe: Sequence[re.Pattern[str]] = ()) -> list[str]:
    """The categories of PHI philter finds in `text` ([] when clean); never the text itself."""
    return sorted({category for _, _, category in spans(text, site_safe)})
