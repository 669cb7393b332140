"""PHI gate for free-text reports: three layers before any text leaves the site.

1. `scrub` rewrites the text with typed placeholders, using generic rules for hospital reports
   (labelled header fields, date and identifier formats, "Dr. Name", DICOM person names,
   institution lines, addresses, phone numbers, e-mails) plus the identifiers the caller
   already knows for this patient.
2. `phi_detector` (UCSF's philter) reads the scrubbed text again. It shares no code and no
   pattern with `scrub`, so the two layers do not share their blind spots.
3. `known_identifiers` looks for this patient's known identifiers, exactly and as numbers
   re-typed with separators.

`find_phi` runs layers 2 and 3; a request is refused when either flags it. Only the layer and
the category are reported, never the matched text, because the result goes to logs.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cmr_rd.rewrite import phi_detector
from cmr_rd.rewrite.phi_detector import fold

PLACEHOLDERS = (
    "[NAME]",
    "[MRN]",
    "[DATE]",
    "[INSTITUTION]",
    "[ADDRESS]",
    "[PHYSICIAN]",
    "[ID]",
    "[CONTACT]",
    "[REDACTED]",
)
_PH_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))
_MASK = "\x00"  # stands in for a placeholder during detection: not a letter, digit or space

# ----------------------------------------------------------------------------- word tables


def _tu(words: Iterable[str]) -> str:
    """Title and UPPER spellings only, so lower-case prose words ('clinic visit') do not match."""
    forms: list[str] = []
    for w in words:
        forms += [w, w.upper()]
    return "|".join(sorted(set(forms), key=len, reverse=True))


_MONTHS = (
    r"Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
)
_MONTHS_FULL = _tu(
    "January February March April May June July August September October November December".split()
)
_ORD = r"(?:st|nd|rd|th)?"
_YEAR4 = r"(?:19|20)\d{2}"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_MON = r"(?:0?[1-9]|1[0-2])"

_INSTITUTION_WORDS = _tu(
    "Hospital Hospitals Institute Infirmary Clinic Clinics Centre Center Centres Centers Unit "
    "University Trust Foundation Healthcare Hospice Sanatorium Polyclinic".split()
    + ["Health System", "Medical Group", "Health Service", "Health Services"]
)
_STREET_WORDS = _tu(
    "Road Rd Street St Avenue Ave Lane Ln Way Crescent Cres Drive Dr Court Ct Place Pl "
    "Boulevard Blvd Close Terrace Square Sq Parkway Pkwy Highway Hwy Row Hill Gardens Grove "
    "Walk Mews Circle Quay Wharf".split()
)
_CAP = r"(?:[A-Z][A-Za-z'&\-]*\.?)"  # a capitalised or upper-case word
_CONNECT = r"(?:of|the|and|for|de|la|&)"
_PARTICLE = r"(?:van|von|de|der|den|la|le|du|da|di|del|al|bin|ibn|ter|ten|st\.?)"

# Words that can follow a label but are not names: roles, credentials, filler.
_NOT_NAME = frozenset(
    """
    consultant attending radiologist radiologists cardiologist cardiologists cardiac
    cardiovascular radiology cardiology imaging physician physicians registrar fellow resident
    specialist technologist radiographer sonographer nurse professor senior junior clinical
    associate assistant director head lead staff locum trainee md do mbbs mbchb frcr frcp frcpc
    facc fesc phd msc bsc mrcp on at by and the of for with in via cmr mri ct department dept
    team service general practitioner gp not stated unknown none n/a na see above below
    electronically signed verified approved reported dictated transcribed reviewed preliminary
    final report addendum am pm male female years year old yo age sex
    """.split()
)
_HONORIFIC = r"(?:Dr|DR|Doctor|DOCTOR|Prof|PROF|Professor|PROFESSOR)"
# Not MR/MS (mitral regurgitation, stenosis), nor "Sig." (short for significant in some notes);
# French, German, Spanish, Italian and Dutch forms too.
_TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Mme|Mlle|Herr|Frau|Sr|Sra|Srta|Sig\.ra|Dhr|Mevr)"

# ----------------------------------------------------------------------------- labels

# Label -> kind. Kinds: name, physician, signed (date and/or person), date, mrn, id, contact,
# address, institution. Longest first so "Hospital number" wins over "Hospital".
_LABELS: dict[str, tuple[str, ...]] = {
    "name": (
        r"patient(?:'s)?\s+name",
        r"pt\.?\s+name",
        r"pt\.?",
        r"patient",
        r"name",
        r"full\s+name",
        r"surname",
        r"forenames?",
        r"first\s+name",
        r"last\s+name",
        r"given\s+names?",
        r"family\s+name",
        r"next\s+of\s+kin",
        r"nok",
    ),
    "physician": (
        r"referring\s+(?:physician|doctor|clinician|consultant|cardiologist|provider)",
        r"referrer",
        r"referred\s+by",
        r"requested\s+by",
        r"requesting\s+(?:physician|doctor|clinician|consultant)",
        r"ordering\s+(?:physician|doctor|provider|clinician)",
        r"ordered\s+by",
        r"reported\s+by",
        r"reporting\s+(?:radiologist|physician|cardiologist|doctor|consultant)",
        r"dictated\s+by",
        r"transcribed\s+by",
        r"(?:electronically\s+)?signed\s+by",
        r"verified\s+by",
        r"approved\s+by",
        r"authori[sz]ed\s+by",
        r"reviewed\s+by",
        r"performed\s+by",
        r"attending(?:\s+physician)?",
        r"consultant",
        r"radiologist",
        r"cardiologist",
        r"technologist",
        r"radiographer",
        r"operator",
        r"cc",
        r"copy\s+to",
        r"gp",
        r"general\s+practitioner",
        r"physician",
    ),
    "signed": (
        r"electronically\s+signed(?:\s+on)?",
        r"signed(?:\s+on)?",
        r"verified(?:\s+on)?",
        r"authori[sz]ed(?:\s+on)?",
        r"approved(?:\s+on)?",
        r"dictated(?:\s+on)?",
        r"transcribed(?:\s+on)?",
        r"finali[sz]ed(?:\s+on)?",
    ),
    "date": (
        r"d\.?o\.?b\.?",
        r"date\s+of\s+birth",
        r"birth\s*date",
        r"born",
        r"(?:exam|examination|study|scan|procedure|report|admission|discharge|visit|"
        r"service|request|referral|acquisition)\s+date",
        r"date\s+of\s+(?:exam|examination|study|scan|procedure|report|admission|discharge|"
        r"service|request|referral|visit|death)",
        r"date\s+(?:reported|requested|performed|typed|dictated|signed)",
        r"date(?:\s*/\s*time)?",
        r"dod",
    ),
    "mrn": (
        r"mrn",
        r"medical\s+record\s+(?:number|no\.?|#)",
        r"med\.?\s+rec\.?\s+(?:number|no\.?|#)",
        r"record\s+(?:number|no\.?)",
        r"hospital\s+(?:number|no\.?|id|#)",
        r"hosp\.?\s+(?:number|no\.?)",
        r"patient\s+(?:id|identifier|number|no\.?)",
        r"pt\.?\s+(?:id|number|no\.?)",
        r"nhs\s+(?:number|no\.?)",
        r"chi\s+(?:number|no\.?)",
        r"ur\s+(?:number|no\.?)",
        r"unit\s+(?:number|no\.?)",
        r"health\s+card(?:\s+(?:number|no\.?))?",
        r"(?:ssn|social\s+security(?:\s+(?:number|no\.?))?)",
        r"id",
    ),
    "id": (
        r"accession(?:\s+(?:number|no\.?|#))?",
        r"acc\.?\s*(?:number|no\.?|#)",
        r"(?:study|exam|examination|order|visit|encounter|episode|requisition|request|case|"
        r"series|report)\s+(?:id|number|no\.?|#)",
        r"encounter",
        r"episode",
    ),
    "contact": (
        r"tel(?:ephone)?\.?",
        r"phone",
        r"fax",
        r"mobile",
        r"cell",
        r"pager",
        r"bleep",
        r"ext(?:ension)?\.?",
        r"e-?mail",
        r"contact",
    ),
    "address": (r"address", r"home\s+address", r"post\s*code", r"zip(?:\s+code)?"),
    "institution": (r"hospital", r"institution", r"facility", r"referring\s+hospital"),
}
_KIND_PH = {
    "name": "[NAME]",
    "physician": "[PHYSICIAN]",
    "signed": "[PHYSICIAN]",
    "date": "[DATE]",
    "mrn": "[MRN]",
    "id": "[ID]",
    "contact": "[CONTACT]",
    "address": "[ADDRESS]",
    "institution": "[INSTITUTION]",
}
_LABEL_KIND: list[tuple[str, str]] = sorted(
    ((pat, kind) for kind, pats in _LABELS.items() for pat in pats),
    key=lambda pk: len(pk[0]),
    reverse=True,
)
_LABEL_ALT = "|".join(f"(?P<k{i}>{pat})" for i, (pat, _) in enumerate(_LABEL_KIND))
_OTHER_LABELS = (
    r"sex|gender|age|height|weight|bsa|bmi|hr|heart\s+rate|bp|blood\s+pressure|modality|"
    r"indication|clinical\s+(?:indication|history|details)|history|technique|findings|"
    r"impression|conclusions?|comparison|contrast|procedure|exam|study|series|ward|location|"
    r"room|bed|status|priority|type|class|diagnosis|page|time|title|scanner|field\s+strength"
)
_ANY_LABEL = "|".join(p for p, _ in _LABEL_KIND) + "|" + _OTHER_LABELS
_LABEL_FULL_RE = re.compile(_LABEL_ALT, re.I)
_SEP_RE = re.compile(r":|#(?![ \t]*:)")  # "Accession #: 123" separates at the colon
_WORD_START_RE = re.compile(r"(?<![A-Za-z])[A-Za-z]")
# A field ends at a wide gap, a line end, a separator, or the next known "Label:" on the line.
_FIELD_END_RE = re.compile(
    rf"[ \t]{{2,}}|\t|[ \t]*[|;\r\n]|[ \t]+(?i:{_ANY_LABEL})[ \t]*[:#]|[ \t]*$", re.M
)


def _label_fields(text: str) -> list[tuple[str, int, int]]:
    """(kind, value start, value end) of every labelled field, left to right (pass it the
    folded text: the spans hold for the text itself).

    Anchored on the separators (few) rather than scanning every position for ~100 labels: the
    longest label that ends right before a ':' wins."""
    fields: list[tuple[str, int, int]] = []
    pos = 0
    for sep in _SEP_RE.finditer(text):
        c = sep.start()
        if c < pos:  # inside the previous field's value
            continue
        lo = max(text.rfind("\n", 0, c) + 1, c - 48, pos)
        hi = c
        while hi > lo and text[hi - 1] in " \t":
            hi -= 1
        for start in _WORD_START_RE.finditer(text, lo, hi):
            m = _LABEL_FULL_RE.fullmatch(text, start.start(), hi)
            if m:
                break
        else:
            continue
        vstart = c + 1
        while vstart < len(text) and text[vstart] in " \t":
            vstart += 1
        end = _FIELD_END_RE.search(text, vstart)
        pos = end.start() if end else len(text)
        fields.append((_label_kind(m), vstart, pos))
    return fields


def _label_kind(m: re.Match[str]) -> str:
    for name, val in m.groupdict().items():
        if val is not None and name.startswith("k"):
            return _LABEL_KIND[int(name[1:])][1]
    raise AssertionError("label regex matched no label")


# ----------------------------------------------------------------------------- patterns

_DATE_RES: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p, f)
    for p, f in (
        # 2022-07-13, 2022/7/13, 2022.07.13 (separators must agree)
        (
            rf"(?<![\d.])(?:{_YEAR4}-{_MON}-{_DAY}|{_YEAR4}/{_MON}/{_DAY}|{_YEAR4}\.{_MON}\.{_DAY})"
            rf"(?!\d)",
            0,
        ),
        # 13/07/2022, 07-13-2022, 13.07.22 (day/month order is ambiguous; both are dates)
        (
            rf"(?<![\d.])(?:{_DAY}/{_DAY}/(?:{_YEAR4}|\d{{2}})|{_DAY}-{_DAY}-(?:{_YEAR4}|\d{{2}})"
            rf"|{_DAY}\.{_DAY}\.(?:{_YEAR4}|\d{{2}}))(?![\d]|\.\d)",
            0,
        ),
        # DICOM DA: 20220713
        (rf"(?<!\d){_YEAR4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)", 0),
        # 13 July 2022, 1st of Oct 2022, 13-JUL-2022, 13JUL2022, 13-Jul-22
        (
            rf"(?<![\w]){_DAY}{_ORD}(?:\s+of)?[\s\-/.]*(?:{_MONTHS})\.?,?[\s\-/.]*{_YEAR4}(?!\d)",
            re.I,
        ),
        (rf"(?<![\w]){_DAY}-(?:{_MONTHS})-\d{{2}}(?!\d)", re.I),
        # July 13, 2022 / Oct. 1st 2022
        (rf"\b(?:{_MONTHS})\.?\s+{_DAY}{_ORD},?\s+{_YEAR4}(?!\d)", re.I),
        # July 2022 (month and year are still date elements)
        (rf"\b(?:{_MONTHS})\.?,?\s+{_YEAR4}(?!\d)", re.I),
        # 13 July / July 13 without a year: full month names in Title or UPPER case only
        (rf"(?<![\w.]){_DAY}{_ORD}\s+(?:of\s+)?(?:{_MONTHS_FULL})\b", 0),
        (rf"\b(?:{_MONTHS_FULL})\s+{_DAY}{_ORD}\b(?!\s*(?:mm|cm|ms|%|-))", 0),
    )
)

_EMAIL_RE = re.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")
_URL_RE = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+", re.I)
_PHONE_RES: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"(?<![\w+])\+\d{1,3}[\s.\-]?(?:\(\d{1,4}\)[\s.\-]?)?\d{2,4}(?:[\s.\-]?\d{2,4}){1,4}"
        r"(?!\d)"
    ),
    re.compile(r"(?<![\w.])(?:\(\d{3}\)\s?|\d{3}[.\-])\d{3}[.\-]\d{4}(?!\d)"),
    re.compile(r"(?<![\w.])\d{3}\s\d{3}\s\d{4}(?!\d)"),
    re.compile(r"(?<![\w.])0\d{2,4}[\s\-]?\d{3,4}[\s\-]?\d{3,4}(?!\d)"),
)
_ID_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?<![\w\-])[A-Za-z]{1,5}[\-#:]?\d{5,}[A-Za-z]?(?![\w\-])"),  # H-1234567, RX1234
    re.compile(r"(?<![\d.])\d{3}-\d{2}-\d{4}(?![\d])"),  # SSN-like
    re.compile(r"(?<![\w.])\d{6,}(?![\w]|\.\d)"),  # long digit runs
)
_POSTCODE_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?[ \t]+\d[A-Z]{2}\b"),  # UK
    re.compile(r"\b[A-Z]\d[A-Z][ \t]?\d[A-Z]\d\b"),  # Canada
    re.compile(r"\b[A-Z]{2}[ \t]+\d{5}(?:-\d{4})?\b"),  # US state + ZIP
)
_STREET_FULL = _tu("Road Street Avenue Lane Crescent Boulevard Terrace Parkway Highway".split())
_STREET_TAIL = (
    r"(?:[ \t]+(?:N|S|E|W|NE|NW|SE|SW)\b)?"  # 200 First Street SW
    rf"(?:,[ \t]*{_CAP}(?:[ \t]+{_CAP}){{0,3}}"  # , Town Name (then a comma, postcode or end)
    r"(?=[ \t]*(?:[,.]|$|\n|[A-Z]{1,2}\d|[A-Z]{2}[ \t]+\d{5})))*"
)
_STREET_RE = re.compile(
    rf"(?:(?<![\w.])\d{{1,5}}[A-Za-z]?,?[ \t]+(?:{_CAP}[ \t]+){{1,4}}(?:{_STREET_WORDS})\b\.?"
    rf"|\b(?:{_CAP}[ \t]+){{1,3}}(?:{_STREET_FULL})\b)" + _STREET_TAIL,
    re.M,
)
_POBOX_RE = re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d+\b", re.I)
_INSTITUTION_RE = re.compile(
    rf"(?:\b{_CAP}(?:[ \t]+(?:{_CONNECT}[ \t]+)*{_CAP}){{0,5}}[ \t]+(?:{_INSTITUTION_WORDS})\b"
    rf"|\b(?:{_INSTITUTION_WORDS})[ \t]+(?:of|for)[ \t]+(?:the[ \t]+)?{_CAP})"
    rf"(?:[ \t]+(?:of|for)[ \t]+(?:the[ \t]+)?{_CAP}(?:[ \t]+{_CAP}){{0,4}})?"
)
_PHYSICIAN_RE = re.compile(
    rf"\b{_HONORIFIC}\.?[ \t]+(?:[A-Z]\.[ \t]*)*(?:{_PARTICLE}[ \t]+)*[A-Z][A-Za-z'\-]+"
    rf"(?:[ \t]+(?:[A-Z]\.|(?:{_PARTICLE}[ \t]+)*[A-Z][A-Za-z'\-]+)){{0,2}}"
)
_TITLED_NAME_RE = re.compile(
    rf"\b{_TITLE}\.?[ \t]+(?:[A-Z]\.[ \t]*)*[A-Z][A-Za-z'\-]+(?:[ \t]+[A-Z][A-Za-z'\-]+){{0,2}}"
)
# Not "m^2" (mL/m^2): a caret followed by a digit is an exponent, not a name's separator.
_DICOM_PN_RE = re.compile(r"(?<![\w^])[A-Za-z][A-Za-z'\-]*(?:\^[A-Za-z'\-.]*){1,4}(?![\d^])")
# "Electronically signed by Anna J. Berg, MD" with no colon, which the label rules need.
_SIGNED_BY_RE = re.compile(
    r"(\b(?i:signed|dictated|reported|verified|approved|transcribed|reviewed|authori[sz]ed)"
    r"[ \t]+(?i:by):?[ \t]+)"
    rf"(?:{_HONORIFIC}\.?[ \t]+)?(?:[A-Z]\.[ \t]*)*(?:{_PARTICLE}[ \t]+)*[A-Z][A-Za-z'\-]+"
    r"(?:[ \t]+(?:[A-Z]\.|[A-Z][A-Za-z'\-]+)){0,3}"
)

# Generic rules in the order scrub applies them: specific shapes before broad ones.
_GENERIC: tuple[tuple[str, str, tuple[re.Pattern[str], ...]], ...] = (
    ("contact", "[CONTACT]", (_EMAIL_RE, _URL_RE)),
    ("physician", "[PHYSICIAN]", (_PHYSICIAN_RE,)),
    ("name", "[NAME]", (_TITLED_NAME_RE, _DICOM_PN_RE)),
    ("address", "[ADDRESS]", (_STREET_RE, _POBOX_RE)),
    ("institution", "[INSTITUTION]", (_INSTITUTION_RE,)),
    ("date", "[DATE]", _DATE_RES),
    ("address", "[ADDRESS]", _POSTCODE_RES),
    ("contact", "[CONTACT]", _PHONE_RES),
    ("id", "[ID]", _ID_RES),
)

# ----------------------------------------------------------------------------- label values

# A word of any script ("Петров", "李伟"): in a labelled name field it is a name, whatever letters.
_LETTERS = r"(?:[^\W\d_]|['\-.])*"  # letters of any script, apostrophes, hyphens, dots
_WORD_RE = re.compile(rf"(?<!\w)[^\W\d_]{_LETTERS}(?:\^{_LETTERS})*(?!\w)")
_GAP_RE = re.compile(r"^[\s,^]*$")
_ID_TOKENS_RE = re.compile(r"^(?:[A-Za-z0-9][\w\-/#.]*)(?:[ \t]+[A-Za-z0-9][\w\-/#.]*){0,3}")
_MONTH_WORD_RE = re.compile(rf"\b(?:{_MONTHS})\b", re.I)


def _is_name_word(word: str, prose: bool) -> bool:
    core = word.strip(".'-").lower()
    if not core or core in _NOT_NAME:
        return False
    return not prose or not word[0].islower()  # capitalised, or a script without case


def _name_spans(value: str, capitalised_only: bool = False) -> list[tuple[int, int]]:
    """Runs of name-like words (joined by spaces, commas or ^) in a labelled field value.

    After more than six words the value is a sentence rather than a name, and only capitalised
    words count; the detector always counts only those (lower-case leftovers of a scrubbed
    sentence are not names)."""
    value = _PH_RE.sub(lambda m: _MASK * len(m.group()), fold(value))  # placeholders: no names
    words = list(_WORD_RE.finditer(value))
    prose = capitalised_only or len(words) > 6
    spans: list[tuple[int, int]] = []
    for w in words:
        if not _is_name_word(w.group(), prose):
            continue
        if spans and _GAP_RE.match(value[spans[-1][1] : w.start()]):
            spans[-1] = (spans[-1][0], w.end())
        else:
            spans.append((w.start(), w.end()))
    return spans


def _replace_spans(value: str, spans: list[tuple[int, int]], placeholder: str) -> str:
    for a, b in reversed(spans):
        value = value[:a] + placeholder + value[b:]
    return value


_PAREN_NAME_RE = re.compile(
    r"\b[A-Z][a-z][A-Za-z'\-]*(?:[ \t]+[A-Z]\.?)*[ \t]+(?:[A-Z]\.[ \t]*)*[A-Z][a-z][A-Za-z'\-]*"
)


def _scrub_value(kind: str, value: str) -> str:
    """Scrub one labelled field value according to what the label says it holds."""
    ph = _KIND_PH[kind]
    if kind == "name":  # a name ends at a parenthesis: "(45M)", "(DOB ...)" are not names
        head, paren, tail = value.partition("(")
        return _replace_spans(head, _name_spans(head), ph) + paren + tail
    if kind in ("physician", "signed"):
        for rx in _DATE_RES:
            value = _sub_folded(rx, "[DATE]", value)
        # a role's qualification in parentheses ("(SCMR Level 3)") is not a name, but two
        # capitalised words there are ("(John Smith)")
        head, paren, tail = value.partition("(")
        tail = _sub_folded(_PAREN_NAME_RE, ph, tail)
        return _replace_spans(head, _name_spans(head), ph) + paren + tail
    if kind == "date":
        head, paren, tail = value.partition("(")  # keep "(age 54)" after a birth date
        if re.search(r"\d", head) or _MONTH_WORD_RE.search(head):
            return ph + (" " if paren and head.endswith(" ") else "") + paren + tail
        return value
    if kind in ("mrn", "id"):
        m = _ID_TOKENS_RE.match(value)
        if m and (re.search(r"\d", m.group()) or re.fullmatch(r"[A-Z0-9\-]{4,}", m.group())):
            return ph + value[m.end() :]
        return value
    if kind == "contact":
        return ph if re.search(r"[\d@]", value) else value
    return ph if re.search(r"[A-Za-z0-9]", value) else value  # address, institution


def _scrub_labels(text: str) -> str:
    out, pos = [], 0
    for kind, start, end in _label_fields(fold(text)):
        value = text[start:end]
        if value and not value.startswith("["):
            out += [text[pos:start], _scrub_value(kind, value)]
            pos = end
    return "".join(out) + text[pos:]


# ----------------------------------------------------------------------------- known identifiers

_KNOWN_STOP = frozenset(
    "dr mr mrs ms miss mx prof md phd jr sr ii iii iv the and von van der den del".split()
)
_BOUND_L = r"(?<![A-Za-z0-9\[])"
_BOUND_R = r"(?![A-Za-z0-9\]])"


def _date_variants(text: str) -> list[str]:
    """A DICOM (YYYYMMDD) or ISO date, written the ways reports write dates."""
    m = re.fullmatch(r"((?:19|20)\d{2})-?(\d{2})-?(\d{2})", text.strip())
    if not m:
        return []
    try:
        d = dt.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return []
    fmts = (
        "%Y%m%d",
        "%Y-%m-%d",
        "%d/%m/%Y",
        "%m/%d/%Y",
        "%d.%m.%Y",
        "%d-%m-%Y",
        "%m-%d-%Y",
        "%d %b %Y",
        "%d %B %Y",
        "%B %d, %Y",
        "%b %d, %Y",
        "%d-%b-%Y",
    )
    out = {d.strftime(f) for f in fmts}
    out |= {
        f"{d.day}/{d.month}/{d.year}",
        f"{d.month}/{d.day}/{d.year}",
        f"{d.day}.{d.month}.{d.year}",
    }
    return sorted(out)


def _known_terms(known: Iterable[str]) -> list[tuple[str, str]]:
    """(term, placeholder) pairs: whole identifiers, their name tokens, and date spellings."""
    terms: dict[str, str] = {}
    for raw in known:
        k = fold(str(raw).strip())  # "NÚÑEZ^JOSÉ" is matched in folded text: Núñez and Nunez
        if len(k) < 3:
            continue
        variants = _date_variants(k)
        if variants:
            for v in variants:
                terms.setdefault(v.lower(), "[DATE]")
            continue
        has_digit = bool(re.search(r"\d", k))
        terms.setdefault(k.lower(), "[MRN]" if has_digit else "[NAME]")
        for part in re.split(r"[\s^,_;/]+", k):
            tok = part.strip(".'-()")
            low = tok.lower()
            if low in _KNOWN_STOP or low in terms:
                continue
            if re.search(r"[A-Za-z]", tok) and len(tok) >= 3 and not re.search(r"\d", tok):
                terms[low] = "[NAME]"
            elif re.fullmatch(r"[A-Za-z\-]*\d{6,}[A-Za-z]?", tok):
                terms[low] = "[MRN]"
    return sorted(terms.items(), key=lambda kv: len(kv[0]), reverse=True)


def _term_pattern(term: str) -> str:
    parts = [re.escape(p) for p in re.split(r"[\s^,_]+", term) if p]
    return _BOUND_L + r"[\s^,_]+".join(parts) + _BOUND_R


def _known_regex(terms: list[tuple[str, str]]) -> re.Pattern[str] | None:
    if not terms:
        return None
    return re.compile("|".join(f"(?:{_term_pattern(t)})" for t, _ in terms), re.I)


def _digit_cores(known: Iterable[str]) -> list[str]:
    """Digit runs of >= 6 in known identifiers, for the known list's normalised check."""
    cores: set[str] = set()
    for raw in known:
        for run in re.findall(r"\d+", str(raw)):
            if len(run) >= 6:
                cores.add(run)
    return sorted(cores)


# ----------------------------------------------------------------------------- public API

_MERGE_RE = re.compile(r"(\[(?:NAME|PHYSICIAN|ADDRESS|INSTITUTION|DATE)\])(?:[ \t,]*\1)+")


def _sub_folded(rx: re.Pattern[str], placeholder: str, text: str, keep_group: int = 0) -> str:
    """`rx.sub(placeholder, text)` with `rx` matched in the folded text, so the rules written
    for plain letters also take "Dr Łukasz Wróbel"; what is kept is the text's own. With
    `keep_group`, that group's text (a leading "signed by ") stays before the placeholder."""
    folded = fold(text)
    if folded is text:  # plain ASCII, by far the usual case
        if keep_group:
            return rx.sub(lambda m: m.group(keep_group) + placeholder, text)
        return rx.sub(placeholder, text)
    parts, pos = [], 0
    for m in rx.finditer(folded):
        start = m.end(keep_group) if keep_group else m.start()
        parts += [text[pos:start], placeholder]
        pos = m.end()
    return "".join(parts) + text[pos:]


def _apply(text: str, placeholder: str, patterns: tuple[re.Pattern[str], ...]) -> str:
    for rx in patterns:
        text = _sub_folded(rx, placeholder, text)
    return text


def scrub(text: str, known: Iterable[str] = ()) -> str:
    """Replace PHI with placeholders. Clinical content (measurements like '20 mm', 'LVEF 66%',
    'T1 1065 ms', '0.1 mmol/kg', segment names, '1.5 T') must survive."""
    out = _scrub_labels(text)
    out = _sub_folded(_SIGNED_BY_RE, "[PHYSICIAN]", out, keep_group=1)
    # Titled and DICOM-form names first, so a known surname inside "Dr. X Y" goes as one unit.
    for _, ph, pats in _GENERIC[:3]:
        out = _apply(out, ph, pats)
    for term, ph in _known_terms(k for k in known if k is not None):
        out = _sub_folded(re.compile(_term_pattern(term), re.I), ph, out)
    for _, ph, pats in _GENERIC[3:]:
        out = _apply(out, ph, pats)
    return _MERGE_RE.sub(r"\1", out)


def known_identifiers(text: str, known: Iterable[str] = ()) -> bool:
    """The third layer, exact: does a known identifier of this patient (MRN, names from the
    DICOM headers and label sheet) survive, verbatim or as a number re-typed with spaces,
    dots or dashes inside it? Placeholders are masked first."""
    known = [str(k) for k in known if k is not None]
    masked = _PH_RE.sub(_MASK, fold(text))
    rx = _known_regex(_known_terms(known))
    if rx is not None and rx.search(masked):
        return True
    digits = re.sub(r"(?<=\d)[\s.\-/]+(?=\d)", "", masked)
    return any(re.search(rf"(?<!\d){c}(?!\d)", digits) for c in _digit_cores(known))


DETECTOR, KNOWN_LIST = "detector", "known list"


def span_shape(span: str) -> str:
    """The shape of a flagged span, for logs and refusal reasons: letters become X/x, digits d,
    runs of four or more shortened ('Xxx+'), so a site sees what kind of text was taken ('d-d',
    'XXX', 'Xxx+ Xxx+') and can add a safe-list entry, without the text itself."""
    classes = []
    for ch in span[:32]:
        if ch.isupper():
            classes.append("X")
        elif ch.islower():
            classes.append("x")
        elif ch.isdigit():
            classes.append("d")
        elif ch in " \t\n":
            classes.append(" ")
        else:
            classes.append(ch if ch in "-/.,:;'()&#+%^@" else "?")
    shape = re.sub(r"([Xxd])\1{3,}", r"\1\1\1+", "".join(classes))
    return shape + ("…" if len(span) > 32 else "")


@dataclass(frozen=True)
class Finding:
    """What one layer of the gate saw: its layer, category and the span's shape, never its text."""

    layer: str
    category: str
    shape: str

    def __str__(self) -> str:
        return f"{self.layer}: {self.category} '{self.shape}'"


class SafeListError(ValueError):
    """A site's safe-list file is missing, malformed, or would hide an identifier."""


# A site entry must not match any of these: an entry that hides a name, a date, an ID, a phone
# or an address would open the gate rather than keep clinical words.
_SAFE_LIST_CANARIES = (
    "John Smith",
    "Smith, John",
    "Dr. Anna Berg",
    "12/03/2021",
    "2021-03-12",
    "12 March 2021",
    "March 12, 2021",
    "20210312",
    "MRN 12345678",
    "H-9592820",
    "(555) 123-4567",
    "020 7946 0958",
    "221B Baker Street",
    "jane.doe@example.org",
)
_SAFE_LIST_KEYS = {"terms", "patterns"}


@dataclass(frozen=True)
class SafeList:
    """A site's own additions to the detector's cardiac-MR safe list (`phi.safe_list` in the
    config): literal `terms` (matched as whole words, case-sensitive) and regular `patterns`.
    A refusal or redaction names the category and shape of the span, so a site knows what to add.
    """

    patterns: tuple[re.Pattern[str], ...] = ()
    source: str | None = None

    @classmethod
    def load(cls, path: str | Path | None) -> SafeList:
        """Read and validate a safe-list YAML file (None: no site additions)."""
        if path is None:
            return cls()
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise SafeListError(f"{path}: cannot read the PHI safe list ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise SafeListError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict) or set(data) - _SAFE_LIST_KEYS:
            extra = sorted(set(data) - _SAFE_LIST_KEYS) if isinstance(data, dict) else data
            raise SafeListError(
                f"{path}: expected a mapping with keys terms and/or patterns, got {extra!r}"
            )
        compiled: list[re.Pattern[str]] = []
        for key in ("terms", "patterns"):
            entries = data.get(key) or []
            if not isinstance(entries, list):
                raise SafeListError(f"{path}: {key} must be a list of strings")
            for i, entry in enumerate(entries):
                where = f"{path}: {key}[{i}]"
                if not isinstance(entry, str) or not entry.strip():
                    raise SafeListError(f"{where}: expected a non-empty string, got {entry!r}")
                source = rf"(?<!\w){re.escape(entry.strip())}(?!\w)" if key == "terms" else entry
                try:
                    rx = re.compile(source)
                except re.error as exc:
                    raise SafeListError(f"{where}: not a regular expression ({exc})") from exc
                if rx.fullmatch("") is not None or rx.search(" ") is not None:
                    raise SafeListError(f"{where}: matches empty or blank text")
                hidden = [c for c in _SAFE_LIST_CANARIES if rx.search(c)]
                if hidden:
                    raise SafeListError(
                        f"{where}: would hide identifiers such as {span_shape(hidden[0])!r} "
                        "(a name, date, ID, phone or address); narrow it"
                    )
                compiled.append(rx)
        return cls(tuple(compiled), str(path))


_NO_SITE_LIST = SafeList()


def check(
    text: str, known: Iterable[str] = (), safe: SafeList = _NO_SITE_LIST, detector: bool = True
) -> list[Finding]:
    """The gate's check on text that is about to leave: what the independent detector
    (`phi_detector`, philter) and the exact known-identifier list still see ([] when clean).
    The scrubber that ran before is the first layer. Findings carry shapes, never text.
    `detector=False` skips the detector, for text it has just read and found nothing in."""
    found = {
        Finding(DETECTOR, category, span_shape(text[a:b]))
        for a, b, category in (phi_detector.spans(text, safe.patterns) if detector else ())
    }
    known = [str(k) for k in known if k is not None]
    masked = _PH_RE.sub(_MASK, fold(text))
    rx = _known_regex(_known_terms(known))
    if rx is not None:
        found |= {
            Finding(KNOWN_LIST, "known identifier", span_shape(m.group()))
            for m in rx.finditer(masked)
        }
    if not any(f.layer == KNOWN_LIST for f in found) and known_identifiers(text, known):
        found.add(Finding(KNOWN_LIST, "known identifier", "re-typed number"))
    return sorted(found, key=lambda f: (f.layer, f.category, f.shape))


def find_phi(text: str, known: Iterable[str] = (), safe: SafeList = _NO_SITE_LIST) -> list[str]:
    """`check` by layer and category: '<layer>: <category>' for each ([] when clean)."""
    return sorted({f"{f.layer}: {f.category}" for f in check(text, known, safe)})


# The placeholder a detector category's span becomes when the gate redacts it.
_DETECTOR_PLACEHOLDER = {
    "dates": "[DATE]",
    "addresses": "[ADDRESS]",
    "contact": "[CONTACT]",
    "mrn_id": "[ID]",
    "organizations": "[INSTITUTION]",
    "salutations": "[NAME]",
    "name": "[NAME]",
    "dicom name": "[NAME]",
}
# A redaction takes the whole token the detector's span sits in ('13/07/2022' when it flagged
# '07/2022'), so no part of an identifier is left beside the placeholder.
_TOKEN_CHAR = re.compile(r"[\w/\-.'^#@+&:]")


def _token_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start > 0 and _TOKEN_CHAR.match(text[start - 1]):
        start -= 1
    while end < len(text) and _TOKEN_CHAR.match(text[end]):
        end += 1
    while end > start and text[end - 1] in ".:'":
        end -= 1  # sentence punctuation stays
    return start, end


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict on one text: the text that may leave (None when refused), what the
    detector redacted, and what still stood after redaction (the refusal's reasons)."""

    text: str | None
    redacted: tuple[Finding, ...] = ()
    refused: tuple[Finding, ...] = ()

    @property
    def reason(self) -> str:
        """One line for logs and records: layer, category and shape of what refused the text."""
        return "PHI detected after scrubbing: " + ", ".join(str(f) for f in self.refused)


def redact(text: str, safe: SafeList = _NO_SITE_LIST) -> tuple[str, tuple[Finding, ...]]:
    """The detector's spans in `text` replaced by typed placeholders, whole tokens at a time."""
    hits = []
    for a, b, category in phi_detector.spans(text, safe.patterns):
        a, b = _token_span(text, a, b)
        if a < b and not _PH_RE.fullmatch(text[a:b]):
            hits.append((a, b, category))
    merged: list[list] = []
    for a, b, category in sorted(hits):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b, category])
    findings = tuple(Finding(DETECTOR, c, span_shape(text[a:b])) for a, b, c in merged)
    for a, b, category in reversed(merged):
        text = text[:a] + _DETECTOR_PLACEHOLDER.get(category, "[REDACTED]") + text[b:]
    return _MERGE_RE.sub(r"\1", text), findings


def gate(text: str, known: Iterable[str] = (), safe: SafeList = _NO_SITE_LIST) -> GateResult:
    """The PHI gate for text that leaves the site: scrub (layer 1), redact what the independent
    detector still flags (layer 2), then refuse if the detector or the exact known-identifier
    list (layer 3) still sees anything. Clean text passes unchanged; a clinical word the
    detector takes for PHI costs that word, not the report."""
    known = [k for k in known if k is not None]
    scrubbed, redacted = redact(scrub(text, known=known), safe)
    # The detector reads the text again only where it changed (the detector is deterministic).
    left = check(scrubbed, known, safe, detector=bool(redacted))
    if left:
        return GateResult(None, redacted, tuple(left))
    return GateResult(scrubbed, redacted)


def gate_request(
    system: str, prompt: str, known: Iterable[str] = (), safe: SafeList = _NO_SITE_LIST
) -> GateResult:
    """The gate on a request about to be sent (rewriting, judge, API evaluation): the prompt,
    built from text that was scrubbed already, has what the detector flags redacted; the system
    prompt, our own instructions, is only checked. Refused if anything is left."""
    prompt, redacted = redact(prompt, safe)
    left = _system_findings(system, safe) + check(prompt, known, safe, detector=bool(redacted))
    left += [f for f in check(system, known, safe, detector=False) if f not in left]
    return GateResult(None if left else prompt, redacted, tuple(left))


@functools.lru_cache(maxsize=64)
def _system_findings(system: str, safe: SafeList) -> list[Finding]:
    """The detector's reading of a system prompt: our own fixed instructions, read once."""
    return check(system, (), safe)
