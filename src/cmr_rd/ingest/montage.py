"""QC montage per class: a grid of ingested images with their lesion boxes, for a human look."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

TILE = 128


def class_montage(manifest: pd.DataFrame, root: Path, label: str, per_class: int) -> Image.Image:
    """Up to `per_class` images of one class (first slices of distinct patients, stable order)."""
    rows = manifest[manifest["label"] == label].sort_values(["patient", "slice_rank"])
    central = rows.groupby("patient", sort=True).nth(len(rows) and 0)  # one image per patient
    chosen = central.head(per_class) if len(central) else rows.head(per_class)
    columns = 4
    grid_rows = max(1, -(-len(chosen) // columns))
    canvas = Image.new("RGB", (columns * TILE, grid_rows * TILE + 18), "black")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, grid_rows * TILE + 3), f"{label}: {len(rows)} images", fill="white")
    for n, item in enumerate(chosen.itertuples()):
        image = Image.open(root / item.image).convert("RGB")
        scale = TILE / image.width
        tile = image.resize((TILE, TILE), Image.Resampling.BILINEAR)
        x, y = (n % columns) * TILE, (n // columns) * TILE
        canvas.paste(tile, (x, y))
        if item.box is not None and len(item.box) == 4:
            x1, y1, x2, y2 = (float(v) * scale for v in item.box)
            draw.rectangle([x + x1, y + y1, x + x2, y + y2], outline="red")
        draw.text((x + 3, y + 2), item.split, fill="yellow")
    return canvas
