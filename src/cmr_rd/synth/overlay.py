"""Burned-in text: a name, an MRN and a date stamped into the pixels of an LGE series.

Real exports carry such overlays (vendor annotations, screen captures filed as MR); the
synthetic cohort plants them so that ingestion's burned-in-text check has something to find.
The lines are drawn in the image's own signal units, so they survive every pixel coding.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cmr_rd.synth.report import Phi

_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%Y%m%d", "%m/%d/%Y")


def overlay_lines(phi: Phi, variant: int) -> list[str]:
    """The text a vendor overlay would carry; `variant` picks the name and date formats."""
    p = phi.patient
    name = (p.dicom, f"{p.last.upper()}, {p.first.upper()}", p.full)[variant % 3]
    date = phi.study.strftime(_DATE_FORMATS[variant % len(_DATE_FORMATS)])
    return [name, phi.mrn, date]


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def font_size(rows: int) -> int:
    """Overlay glyph height for a matrix: about a fourteenth of the rows, never below 10 px."""
    return max(10, rows // 14)


def stamp(real: np.ndarray, lines: list[str], size: int) -> np.ndarray:
    """A copy of `real` with `lines` drawn in its top-left corner at the image's bright level."""
    canvas = Image.new("L", (real.shape[1], real.shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    y = 2
    for line in lines:
        draw.text((3, y), line, fill=255, font=_font(size))
        y += size + 2
    ink = np.asarray(canvas) >= 128
    out = real.copy()
    out[ink] = float(np.percentile(real, 99.5)) * 1.2
    return out
