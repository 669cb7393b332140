"""Reasoning templates: what the rewriter (o3 or offline) returns, and how it becomes a target."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from cmr_rd.classes import canonical_label
from cmr_rd.format import render_target

PARTS = ("observation", "localisation", "differential", "diagnosis")


@dataclass(frozen=True)
class Template:
    observation: str
    localisation: str
    differential: str
    diagnosis: str

    def think(self) -> str:
        """The clinical chain in order: observation, then localisation, then differential."""
        return " ".join(p.strip() for p in (self.observation, self.localisation, self.differential))

    def target(self, box: list[float] | tuple[float, ...]) -> str:
        answer = canonical_label(self.diagnosis) or self.diagnosis.strip()
        return render_target(self.think(), box, answer)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_reply(text: str) -> tuple[Template | None, str | None]:
    """A reply is a JSON object with the four parts as non-empty strings (a fence is tolerated)."""
    body = (text or "").strip()
    if body.startswith("```"):
        body = body.strip("`").removeprefix("json").strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None, "reply is not JSON"
    if not isinstance(data, dict):
        return None, "reply is not a JSON object"
    missing = [p for p in PARTS if not isinstance(data.get(p), str) or not data[p].strip()]
    if missing:
        return None, f"reply lacks {', '.join(missing)}"
    return Template(*(data[p].strip() for p in PARTS)), None


def validate_reply(text: str) -> str | None:
    """For the API client: None when the reply is usable, else the reason to ask again."""
    return parse_reply(text)[1]
