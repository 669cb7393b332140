"""The six diagnostic classes and the one place that maps free-text labels onto them."""

from __future__ import annotations

import re
import unicodedata

CLASSES: tuple[str, ...] = ("HCM", "DCM", "CAM", "LVNC", "MI", "NOR")

FULL_NAMES: dict[str, str] = {
    "HCM": "hypertrophic cardiomyopathy",
    "DCM": "dilated cardiomyopathy",
    "CAM": "cardiac amyloidosis",
    "LVNC": "left ventricular non-compaction",
    "MI": "myocardial infarction",
    "NOR": "normal",
}

# The paper's training-image counts, the long tail the synthetic cohort follows.
PAPER_COUNTS: dict[str, int] = {
    "HCM": 6645,
    "DCM": 3192,
    "MI": 2833,
    "NOR": 488,
    "LVNC": 465,
    "CAM": 146,
}

_EXTRA_ALIASES: dict[str, str] = {
    "left ventricular noncompaction": "LVNC",
    "lv non-compaction": "LVNC",
    "lv noncompaction": "LVNC",
    "non-compaction cardiomyopathy": "LVNC",
    "amyloidosis": "CAM",
    "cardiac amyloid": "CAM",
    "amyloid": "CAM",
    "infarction": "MI",
    "myocardial infarct": "MI",
    "normal heart": "NOR",
    "healthy": "NOR",
    "no disease": "NOR",
}


def _norm(text: str) -> str:
    # NFKC folds full-width and compatibility forms; dashes and spacing are unified.
    text = unicodedata.normalize("NFKC", text).casefold().strip()
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)
    text = re.sub(r"\s+", " ", text)
    return text.strip(" \t.,;:!?\"'()[]{}")


_ALIASES: dict[str, str] = {}
for _abbr in CLASSES:
    _ALIASES[_norm(_abbr)] = _abbr
    _ALIASES[_norm(FULL_NAMES[_abbr])] = _abbr
for _alias, _abbr in _EXTRA_ALIASES.items():
    _ALIASES[_norm(_alias)] = _abbr


def canonical_label(text: str | None) -> str | None:
    """Map an abbreviation or full name (any case, surrounding punctuation) to its class.

    Returns None for anything that is not exactly one known class name.
    """
    if text is None:
        return None
    return _ALIASES.get(_norm(str(text)))


def mentioned_classes(text: str) -> list[str]:
    """Classes named anywhere in free text (whole words/phrases), in class order."""
    norm = " " + re.sub(r"[^a-z0-9]+", " ", _norm(text)) + " "
    found = set()
    for alias, label in _ALIASES.items():
        phrase = " " + re.sub(r"[^a-z0-9]+", " ", alias).strip() + " "
        if phrase.strip() and phrase in norm:
            found.add(label)
    # "non-compaction" also contains words of no other class; "normal" inside "abnormal" cannot
    # match because matching is on whole words.
    return [c for c in CLASSES if c in found]
