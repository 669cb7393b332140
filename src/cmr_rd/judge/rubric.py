"""The offline judge: a deterministic rubric over what can be checked from data. Not a clinician.

- accuracy: the share of findings the chain states that match the reference report's findings,
  by finding-level matching as RadMatch does (a finding that matches in kind but names a wrong
  place or extent earns half), mapped to 1-5; the errors are counted in the GREEN / RadMatch
  categories: a stated finding the reference lacks (or contradicts), a diagnostic reference
  finding missed, a wrong location, a wrong extent or severity;
- coherence: whether observation, localisation and diagnosis follow from each other: the class the
  chain's findings point to, the class its last sentence names, the box and the answer;
- readability: repetition (repeated word trigrams), length, and markup left in the reasoning.

Each score is an integer 1-5 with a one-line reason, so a rating can be audited down to the
finding behind it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from cmr_rd.classes import mentioned_classes
from cmr_rd.format import IMAGE_SIZE, box_iou, parse_box, parse_completion
from cmr_rd.judge.findings import (
    COMPATIBLE,
    CONTRADICTS,
    KEY_KINDS,
    Finding,
    extract,
    findings_of_reference,
    pattern,
)

AXES = ("accuracy", "coherence", "readability")
ERRORS = ("unsupported_finding", "missed_finding", "wrong_location", "wrong_severity")
NO_LESION_BOX = (0.0, 0.0, float(IMAGE_SIZE), float(IMAGE_SIZE))
LESION_CLASSES = frozenset({"MI"})  # the classes whose answer carries a focal lesion box
MIN_WORDS, MAX_WORDS = 25, 220  # the cold-start QC's bounds on a template's reasoning
_TAG = re.compile(r"</?\s*(think|location|answer)\s*>", re.I)


@dataclass(frozen=True)
class Chain:
    """A completion read leniently: a judge rates what a model wrote, format or not."""

    think: str
    location: str
    answer: str
    box: tuple[float, ...] | None
    label: str | None  # the answer's class, None if not exactly one
    valid: bool  # the completion is exactly the answer format

    def text(self) -> str:
        """What a judge reads: the reasoning, the location and the answer, labelled."""
        return (
            f"Reasoning: {self.think or '(none)'}\n"
            f"Location: {self.location or '(none)'}\n"
            f"Answer: {self.answer or '(none)'}"
        )


def _between(text: str, tag: str) -> str:
    match = re.search(rf"<{tag}>(.*?)(?:</{tag}>|<(?:think|location|answer)>|\Z)", text, re.S)
    return match.group(1).strip() if match else ""


def read_chain(completion: str | None) -> Chain:
    """The strict parse where the completion has the format, else each tag's text as found."""
    text = completion or ""
    parsed = parse_completion(text)
    if parsed.valid:
        location = re.search(r"<location>(.*?)</location>", text, re.S).group(1).strip()
        return Chain(parsed.think, location, parsed.answer_text, parsed.box, parsed.label, True)
    think = _between(text, "think") if "<think>" in text else text.strip()
    location = _between(text, "location")
    answer = _between(text, "answer")
    box, _ = parse_box(location) if location else (None, None)
    classes = mentioned_classes(answer) if answer else []
    return Chain(think, location, answer, box, classes[0] if len(classes) == 1 else None, False)


@dataclass
class Rating:
    accuracy: int
    coherence: int
    readability: int
    reasons: dict[str, str]
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERRORS, 0))


def _clamp(score: float) -> int:
    return int(min(5, max(1, score)))


def _severity_conflict(stated: Finding, ref: Finding) -> bool:
    layers = stated.layers and ref.layers and not stated.layers & ref.layers
    extent = {frozenset(stated.extent), frozenset(ref.extent)} == {
        frozenset({"diffuse"}),
        frozenset({"focal"}),
    }
    grade = stated.grade and ref.grade and not stated.grade & ref.grade
    return bool(layers or extent or grade)


def match_findings(
    stated: dict[str, Finding], reference: dict[str, Finding]
) -> tuple[float, dict[str, int], list[str]]:
    """(credit summed over stated findings, error counts, notes naming each error's finding)."""
    errors, notes, credit = dict.fromkeys(ERRORS, 0), [], 0.0
    for kind, finding in stated.items():
        ref = reference.get(kind)
        if ref is None:
            errors["unsupported_finding"] += 1
            against = CONTRADICTS.get(kind)
            notes.append(
                f"unsupported: {kind}" + (f" (report: {against})" if against in reference else "")
            )
            continue
        score = 1.0
        wrong = sorted(p for p in finding.places if ref.places and not COMPATIBLE[p] & ref.places)
        if wrong:
            errors["wrong_location"] += 1
            notes.append(f"wrong location: {kind} at {', '.join(wrong)}")
            score -= 0.5
        if _severity_conflict(finding, ref):
            errors["wrong_severity"] += 1
            notes.append(f"wrong extent: {finding.describe()} (report: {ref.describe()})")
            score -= 0.5
        credit += score
    for kind in KEY_KINDS:
        if kind in reference and kind not in stated:
            errors["missed_finding"] += 1
            notes.append(f"missed: {kind}")
    return credit, errors, notes


def _accuracy(chain: Chain, reference: dict[str, Finding]) -> tuple[int, str, dict[str, int]]:
    stated = extract(_TAG.sub(" ", chain.think))
    credit, errors, notes = match_findings(stated, reference)
    if not stated:
        missed = f"; {', '.join(notes)}" if notes else ""
        return 1, f"states no finding{missed}", errors
    share = credit / len(stated)
    score = 1 + math.floor(4 * share + 0.5)
    detail = f"; {', '.join(notes)}" if notes else ""
    return score, f"{share:.0%} of {len(stated)} stated finding(s) match the report{detail}", errors


def _coherence(chain: Chain, no_lesion_box: tuple[float, ...]) -> tuple[int, str]:
    if chain.label is None:
        return 1, "the answer names no single class"
    think = _TAG.sub(" ", chain.think)
    named, support = pattern(extract(think))
    problems, penalty = [], 0
    if named is None:
        penalty += 1
        problems.append("the findings point to no single class")
    elif named != chain.label:
        penalty += 2
        problems.append(f"the findings point to {named}, the answer is {chain.label}")
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", think.strip()) if s]
    last = mentioned_classes(sentences[-1]) if sentences else []
    if len(last) == 1 and last[0] != chain.label:
        penalty += 1
        problems.append(f"the reasoning concludes {last[0]}")
    if chain.box is None:
        penalty += 1
        problems.append("no valid box")
    else:
        whole = box_iou(chain.box, no_lesion_box) >= 0.9
        if chain.label in LESION_CLASSES and whole:
            penalty += 1
            problems.append(f"{chain.label} answered with the no-lesion box")
        elif chain.label not in LESION_CLASSES and not whole:
            penalty += 1
            problems.append(f"a focal lesion box for {chain.label}")
    if not problems:
        return 5, f"findings, box and answer agree on {chain.label}"
    return _clamp(5 - penalty), "; ".join(problems)


def _readability(chain: Chain) -> tuple[int, str]:
    words = _TAG.sub(" ", chain.think).split()
    if not words:
        return 1, "no reasoning text"
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    repeated = 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    penalty, problems = 0, []
    if repeated > 0.1:
        penalty += 1 + (repeated > 0.25) + (repeated > 0.5)
        problems.append(f"{repeated:.0%} repeated trigrams")
    if len(words) < 10:
        penalty += 2
        problems.append(f"{len(words)} words")
    elif not MIN_WORDS <= len(words) <= MAX_WORDS:
        penalty += 1
        problems.append(f"{len(words)} words, outside [{MIN_WORDS}, {MAX_WORDS}]")
    if _TAG.search(chain.think) or not chain.valid:
        penalty += 1
        problems.append("markup or broken format")
    if not problems:
        return 5, f"{len(words)} words, no repetition"
    return _clamp(5 - penalty), "; ".join(problems)


def rate(
    completion: str | None, report: str, no_lesion_box: tuple[float, ...] = NO_LESION_BOX
) -> Rating:
    """The rubric's rating of one chain against its case's scrubbed report."""
    chain = read_chain(completion)
    if not (completion or "").strip():
        reason = "empty reply"
        return Rating(1, 1, 1, dict.fromkeys(AXES, reason))
    accuracy, why_a, errors = _accuracy(chain, findings_of_reference(report))
    coherence, why_c = _coherence(chain, no_lesion_box)
    readability, why_r = _readability(chain)
    reasons = {"accuracy": why_a, "coherence": why_c, "readability": why_r}
    return Rating(accuracy, coherence, readability, reasons, errors)
