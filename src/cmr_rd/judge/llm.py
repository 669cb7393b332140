"""The LLM judge (GPT-4o by default) through the project's client layer.

Every request goes through `cmr_rd.rewrite.client.run_requests`: the PHI gate, the content-addressed
cache (a rerun makes no call), the cost ledger, the client's retries and bounded concurrency. A
request carries only what the judge needs and nothing that names the model: the rubric (system),
the de-identified image as a data URL, the findings and impression of the case's scrubbed report,
and the chain (reasoning, location, answer). Its item id is the blinded id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from cmr_rd.judge.rubric import AXES, ERRORS

JUDGE_VERSION = "judge-v1"
SYSTEM = """You are a cardiac radiologist rating a model's diagnostic reasoning on one late \
gadolinium enhancement (LGE) cardiac MRI short-axis slice. You see the image, the reference \
findings and impression of the radiology report for the study, and the model's reasoning with \
the lesion box it gave (x1,y1,x2,y2 in a 256x256 image; [0,0,256,256] means no focal lesion) and \
its answer (HCM, DCM, CAM, LVNC, MI or NOR).

Rate three axes, each an integer from 1 (worst) to 5 (best), with a one-line reason:
- accuracy: the findings the reasoning states are supported by the reference and the image \
(5: all supported; 1: none, or no finding stated);
- coherence: observation, localisation and diagnosis follow from each other, and the answer \
matches the reasoning and the box;
- readability: clear, concise, free of repetition and broken text.
Count errors as GREEN and RadMatch do, as non-negative integers: unsupported_finding (a finding \
stated that the reference lacks or contradicts), missed_finding (a diagnostic reference finding \
not mentioned), wrong_location (a finding placed in the wrong wall, segment or level), \
wrong_severity (a wrong extent, transmurality or severity).

Reply with one JSON object and nothing else:
{"accuracy": {"score": S, "reason": "..."}, "coherence": {"score": S, "reason": "..."}, \
"readability": {"score": S, "reason": "..."}, "errors": {"unsupported_finding": N, \
"missed_finding": N, "wrong_location": N, "wrong_severity": N}}
where each S is an integer from 1 to 5 and each N a count."""
MAX_REASON = 400


def user_prompt(reference: str, chain_text: str) -> str:
    return (
        f"Reference (the study's report, de-identified):\n{reference}\n\n"
        f"The model's output:\n{chain_text}\n\n"
        "Rate it as instructed; reply with the JSON object only."
    )


@dataclass(frozen=True)
class LLMRating:
    scores: dict[str, int]
    reasons: dict[str, str]
    errors: dict[str, int]


def _body(text: str) -> str:
    body = (text or "").strip()
    if body.startswith("```"):  # a fenced object is still the object
        body = body.strip("`").removeprefix("json").strip()
    return body


def parse_rating(text: str) -> tuple[LLMRating | None, str | None]:
    """The reply as a rating, or why it is not one (exact keys, integer scores 1-5, one-line
    reasons, non-negative integer error counts)."""
    try:
        data = json.loads(_body(text))
    except json.JSONDecodeError:
        return None, "reply is not JSON"
    if not isinstance(data, dict) or set(data) != {*AXES, "errors"}:
        return None, f"reply must have exactly the keys {sorted({*AXES, 'errors'})}"
    scores, reasons = {}, {}
    for axis in AXES:
        part = data[axis]
        if not isinstance(part, dict) or set(part) != {"score", "reason"}:
            return None, f"{axis} must be {{score, reason}}"
        score, reason = part["score"], part["reason"]
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            return None, f"{axis}.score must be an integer 1-5"
        if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
            return None, f"{axis}.reason must be a non-empty line of at most {MAX_REASON} chars"
        scores[axis], reasons[axis] = score, " ".join(reason.split())
    errors = data["errors"]
    if not isinstance(errors, dict) or set(errors) != set(ERRORS):
        return None, f"errors must have exactly the keys {list(ERRORS)}"
    for name in ERRORS:
        count = errors[name]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return None, f"errors.{name} must be a non-negative integer"
    return LLMRating(scores, reasons, {name: errors[name] for name in ERRORS}), None


def validate(text: str) -> str | None:
    """For the client: None when the reply is a usable rating, else why (it is asked again)."""
    return parse_rating(text)[1]
