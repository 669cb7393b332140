"""Clinical QC of rewritten templates: automatic checks, then a clinician's overrides.

Hard checks (the target parses, the diagnosis is the label, no PHI, all parts present) cannot
be overridden by approval; a reviewer's rejection always wins. Every template ends accepted or
rejected with its reasons, and the review sheet lists them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cmr_rd.classes import canonical_label, mentioned_classes
from cmr_rd.format import box_iou, parse_completion
from cmr_rd.rewrite.templates import Template

CHECKS = ("parts", "diagnosis", "lesion_box", "localisation", "length", "phi", "hedging",
          "parse")  # fmt: skip
HARD_CHECKS = {"parts", "diagnosis", "lesion_box", "phi", "parse"}
_QUOTED_BOX = re.compile(
    r"\[\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\]"
)
_FINDING = re.compile(r"enhanc|\blge\b|scar|null|trabecul|fibros|no late gadolinium", re.I)
_PLACE = re.compile(
    r"wall|sept|anterior|inferior|lateral|segment|insertion|apex|apical|basal|subendocard|"
    r"global|diffuse|no (?:focal |enhancing )?lesion",
    re.I,
)
_HEDGE = re.compile(
    r"\b(possibl\w*|probabl\w*|may|might|cannot be excluded|cannot exclude|versus|vs|"
    r"uncertain|indeterminate|differential includes|either)\b|\?",
    re.I,
)


@dataclass(frozen=True)
class QCConfig:
    min_words: int = 25
    max_words: int = 220
    min_box_iou: float = 0.5
    no_lesion_box: tuple[float, float, float, float] = (0.0, 0.0, 256.0, 256.0)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def run_checks(
    template: Template, label: str, box: list[float] | None, cfg: QCConfig, find_phi
) -> dict[str, str | None]:
    """Each check's failure reason, or None when it passes."""
    results: dict[str, str | None] = dict.fromkeys(CHECKS)
    if not _FINDING.search(template.observation):
        results["parts"] = "observation names no enhancement finding"
    elif not _PLACE.search(template.localisation):
        results["parts"] = "localisation names no wall, segment or pattern"
    elif canonical_label(template.diagnosis) not in mentioned_classes(template.differential):
        results["parts"] = "differential does not end in the diagnosis"
    diagnosis = canonical_label(template.diagnosis)
    if diagnosis != label:
        results["diagnosis"] = f"diagnosis {template.diagnosis!r} is not the label {label}"
    quoted = [tuple(map(float, m)) for m in _QUOTED_BOX.findall(template.localisation)]
    if label == "MI" and not box:
        # The IoU reward needs the lesion: an infarct template without its box would teach the
        # no-lesion box for an infarct (the convention is for images without a lesion).
        results["lesion_box"] = "MI template without a lesion box from the annotation"
    if box and not any(box_iou(q, box) >= cfg.min_box_iou for q in quoted):
        results["localisation"] = "localisation does not quote the lesion box"
    elif not box and quoted:
        results["localisation"] = "localisation quotes a lesion box where the image has none"
    words = len(template.think().split())
    if not cfg.min_words <= words <= cfg.max_words:
        results["length"] = f"{words} words, outside [{cfg.min_words}, {cfg.max_words}]"
    leaks = find_phi(template.think() + "\n" + template.diagnosis)
    if leaks:
        results["phi"] = "PHI in template: " + ", ".join(sorted(set(leaks)))
    final = (_sentences(template.differential) or [""])[-1]
    if _HEDGE.search(final) or len(mentioned_classes(final)) > 1:
        results["hedging"] = "final statement hedges or names several classes"
    elif len(mentioned_classes(template.diagnosis)) != 1:
        results["hedging"] = "diagnosis does not name exactly one class"
    parsed = parse_completion(template.target(box or cfg.no_lesion_box))
    if not parsed.valid:
        results["parse"] = f"rendered target does not parse: {parsed.reason}"
    elif parsed.label != label:
        results["parse"] = "rendered answer does not parse to the label"
    return results


REVIEW_COLUMNS = ("item_id", "decision", "comment")


class ReviewError(ValueError):
    pass


def read_decisions(path: str | Path | None, known_items: set[str]) -> dict[str, tuple[str, str]]:
    """item_id -> (approve|reject, comment). Mistakes stop QC with the file and row named."""
    if not path or not Path(path).is_file():
        return {}
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(REVIEW_COLUMNS[:2]) - set(table.columns)
    if missing:
        raise ReviewError(f"{path}: missing column(s) {sorted(missing)}")
    decisions, problems = {}, []
    for line, row in enumerate(table.to_dict("records"), start=2):
        item, decision = row["item_id"].strip(), row["decision"].strip().lower()
        if not item and not decision:
            continue  # blank rows, as spreadsheets leave them
        if item not in known_items:
            problems.append(f"row {line}: unknown item_id {item!r}")
        elif decision not in ("approve", "reject", ""):
            problems.append(f"row {line}: decision {decision!r} is not approve or reject")
        elif decision:
            decisions[item] = (decision, row.get("comment", "").strip())
    if problems:
        raise ReviewError(f"{path}: " + "; ".join(problems))
    return decisions


def decide(checks: dict[str, str | None], review: tuple[str, str] | None) -> tuple[str, str]:
    """(accepted|rejected, reason). Approval lifts soft failures only; rejection always wins."""
    failed = [name for name in CHECKS if checks.get(name)]
    hard = [name for name in failed if name in HARD_CHECKS]
    if review and review[0] == "reject":
        return "rejected", "reviewer: " + (review[1] or "rejected")
    if hard:
        return "rejected", "; ".join(checks[n] for n in hard)
    if failed and review and review[0] == "approve":
        return "accepted", "reviewer approved despite: " + "; ".join(checks[n] for n in failed)
    if failed:
        return "rejected", "; ".join(checks[n] for n in failed)
    return "accepted", "all checks passed" + (" (reviewer approved)" if review else "")
