"""The clinician sheet: the blinded items for radiologists to rate, and a filled copy read back.

The sheet lists each item's opaque id, the image to open and the chain (reasoning, location,
answer), in a seeded order of its own, with empty columns accuracy, coherence and readability
(integers 1-5) and comment. A filled copy (`judge.clinician_ratings`) is joined on the next run,
without any API call. A row left blank is not rated (counted, not an error); a row with an unknown
or repeated id, or a score that is not an integer 1-5, stops the stage naming the file and row.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from cmr_rd.judge.rubric import AXES

SHEET_COLUMNS = ("id", "image", "chain", *AXES, "comment")


class RatingsSheetError(ValueError):
    """A filled clinician sheet with a row the stage cannot use."""


def write_sheet(rows: list[dict], path: Path) -> None:
    """rows: {id, image, chain} in the order the clinicians should see them."""
    frame = pd.DataFrame.from_records(rows, columns=["id", "image", "chain"])
    for column in (*AXES, "comment"):
        frame[column] = ""
    frame.to_csv(path, index=False, columns=list(SHEET_COLUMNS), lineterminator="\n")


def _score(text: str) -> int | None:
    """'4' or '4.0' -> 4; '' -> None; anything else raises ValueError."""
    text = text.strip()
    if not text:
        return None
    value = float(text)
    if not math.isfinite(value) or value != int(value) or not 1 <= value <= 5:
        raise ValueError(text)
    return int(value)


def read_sheet(path: str | Path, known: set[str]) -> tuple[list[dict], int]:
    """(ratings {id, accuracy, coherence, readability, comment}, rows left unrated)."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("id", *AXES) if c not in table.columns]
    if missing:
        raise RatingsSheetError(f"{path}: missing column(s) {missing}")
    ratings, problems, seen, unrated = [], [], set(), 0
    for line, row in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        ident = row["id"].strip()
        cells = {axis: row[axis] for axis in AXES}
        if not ident and not any(v.strip() for v in cells.values()):
            continue  # a blank row, as spreadsheets leave them
        if ident not in known:
            problems.append(f"row {line}: unknown id {ident!r}")
            continue
        if ident in seen:
            problems.append(f"row {line}: id {ident} appears twice")
            continue
        seen.add(ident)
        scores = {}
        for axis, text in cells.items():
            try:
                scores[axis] = _score(text)
            except ValueError:
                problems.append(f"row {line}: {axis} {text.strip()!r} is not an integer 1-5")
        if all(v is None for v in scores.values()):
            unrated += 1
            continue
        ratings.append({"id": ident, **scores, "comment": row.get("comment", "").strip()})
    if problems:
        raise RatingsSheetError(f"{path}: " + "; ".join(problems))
    return ratings, unrated
