"""JSON Lines, the one format every dataset and stage record of the project is stored in."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_jsonl(records: list[dict], path: Path) -> None:
    """One JSON object per line, sorted keys, utf-8, trailing newline; same input, same bytes.

    Written through a temporary file so an interrupted job never leaves a truncated output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(
        json.dumps(r, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n" for r in records
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode("utf-8"))
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
