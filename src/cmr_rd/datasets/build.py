"""Datasets for the training and evaluation stages, in TRL's conversational VLM form.

Every record: {"id", "source", "images": [path], "messages": [...], "label", "box"}. SFT records
carry the assistant turn (the target); prompt records (GPPO, probe, test) carry only the user
turn, plus the label and box the rewards and metrics need.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmr_rd.prompts import DIAGNOSTIC_QUERY


def user_turn(query: str = DIAGNOSTIC_QUERY) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query}]}


def central_slices(rows: pd.DataFrame, per_patient: int | None) -> pd.DataFrame:
    """Each patient's `per_patient` slices nearest the stack centre (ties to the lower rank);
    None keeps every ingested slice."""
    if per_patient is None:
        return rows
    ranked = rows.assign(_off=rows["slice_position_mm"].abs()).sort_values(
        ["patient", "_off", "slice_rank"]
    )
    return ranked.groupby("patient", sort=False).head(per_patient).drop(columns="_off")


def prompt_records(
    manifest: pd.DataFrame, split: str, image_root: str, per_patient: int | None = None
) -> list[dict]:
    """The slices of one split (per patient, the `per_patient` most central; None: all), in a
    stable order (patient, slice)."""
    rows = central_slices(manifest[manifest["split"] == split], per_patient)
    rows = rows.sort_values(["patient", "slice_rank"])
    return [
        {
            "id": f"{row.patient}_z{row.slice_rank:02d}",
            "source": "cmr",
            "patient": row.patient,
            "images": [f"{image_root}/{row.image}"],
            "messages": [user_turn()],
            "label": row.label,
            "box": list(row.box) if row.box is not None else None,
        }
        for row in rows.itertuples(index=False)
    ]


def coldstart_records(accepted: list[dict], image_root: str) -> list[dict]:
    """Accepted templates paired with their slice: the cold-start SFT set."""
    return [
        {
            "id": item["id"],
            "source": "cmr",
            "patient": item["patient"],
            "images": [f"{image_root}/{item['image']}"],
            "messages": [
                user_turn(),
                {"role": "assistant", "content": [{"type": "text", "text": item["target"]}]},
            ],
            "label": item["label"],
            "box": item["box"],
        }
        for item in sorted(accepted, key=lambda a: a["id"])
    ]


def image_rows(manifest: pd.DataFrame, split: str, image_root: str) -> list[dict]:
    """Rows for the alignment captions: one per slice of the split."""
    rows = manifest[manifest["split"] == split].sort_values(["patient", "slice_rank"])
    return [
        {
            "id": f"{r.patient}_z{r.slice_rank:02d}",
            "patient": r.patient,
            "image": f"{image_root}/{r.image}",
            "label": r.label,
        }
        for r in rows.itertuples(index=False)
    ]


def image_root_of(manifest_path: str | Path) -> str:
    return Path(manifest_path).parent.as_posix()
