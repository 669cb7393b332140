"""The answer format, parsed in one place: cold-start QC uses it now, GPPO's rewards later.

`<think>reasoning</think><location>[x1,y1,x2,y2]</location><answer>NAME</answer>`, exactly:
each tag once, in that order, only whitespace outside them, non-empty think and answer, four
ASCII numbers with x1 < x2 and y1 < y2 inside [0, image_size]. Anything else is not the format,
whatever it looks like (nested tags, look-alike characters, truncation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cmr_rd.classes import canonical_label

IMAGE_SIZE = 256
TAGS = ("<think>", "</think>", "<location>", "</location>", "<answer>", "</answer>")
_LAYOUT = re.compile(
    r"\A\s*<think>(?P<think>.*)</think>\s*<location>(?P<location>.*)</location>\s*"
    r"<answer>(?P<answer>.*)</answer>\s*\Z",
    re.DOTALL,
)
_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_BOX = re.compile(
    rf"\A\s*\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]\s*\Z"
)


@dataclass(frozen=True)
class Parsed:
    valid: bool  # the whole completion is exactly the format
    reason: str | None  # why not, when not
    think: str | None = None
    box: tuple[float, float, float, float] | None = None
    answer_text: str | None = None
    label: str | None = None  # canonical class of the answer; None if not exactly one class


def parse_box(
    text: str, image_size: int = IMAGE_SIZE
) -> tuple[tuple[float, ...] | None, str | None]:
    match = _BOX.match(text)
    if not match:
        return None, "location is not [x1,y1,x2,y2] with four numbers"
    x1, y1, x2, y2 = (float(v) for v in match.groups())
    if not (x1 < x2 and y1 < y2):
        return None, "location needs x1 < x2 and y1 < y2"
    if min(x1, y1) < 0 or max(x2, y2) > image_size:
        return None, f"location outside [0, {image_size}]"
    return (x1, y1, x2, y2), None


def parse_completion(text: str, image_size: int = IMAGE_SIZE) -> Parsed:
    """Parse a completion strictly. Never raises."""
    if not isinstance(text, str) or not text.strip():
        return Parsed(False, "empty completion")
    for tag in TAGS:
        count = text.count(tag)
        if count != 1:
            return Parsed(False, f"tag {tag} appears {count} times")
    match = _LAYOUT.match(text)
    if not match:
        return Parsed(False, "tags out of order or text outside the tags")
    think, location, answer = (match.group(k) for k in ("think", "location", "answer"))
    if not think.strip():
        return Parsed(False, "empty think")
    if not answer.strip():
        return Parsed(False, "empty answer")
    box, problem = parse_box(location, image_size)
    if problem:
        return Parsed(False, problem, think=think.strip(), answer_text=answer.strip())
    answer_text = answer.strip()
    return Parsed(True, None, think.strip(), box, answer_text, canonical_label(answer_text))


def render_target(think: str, box: tuple[float, ...] | list[float], answer: str) -> str:
    """The exact training target; box coordinates are written as integers."""
    coords = ",".join(str(int(round(v))) for v in box)
    return f"<think>{think.strip()}</think><location>[{coords}]</location><answer>{answer}</answer>"


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
