"""Shared figure plumbing: one Agg canvas per Figure and byte-reproducible PNGs.

Figures are built on their own Figure with an explicit Agg canvas rather than through pyplot, so no
GUI backend is touched and no global state changes for the caller. PNGs are byte-for-byte
reproducible (fixed size and dpi, fixed class colours, no Software/date metadata), so DVC and diffs
see no spurious change when a figure is redrawn from the same inputs.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120
# tab10, fixed per class so a class has one colour in every figure.
CLASS_COLOURS = {
    "HCM": "#1f77b4",
    "DCM": "#ff7f0e",
    "CAM": "#2ca02c",
    "LVNC": "#d62728",
    "MI": "#9467bd",
    "NOR": "#8c564b",
}


def colour(cls: str) -> str:
    """The class's fixed colour; grey for anything that is not a class."""
    return CLASS_COLOURS.get(cls, "#7f7f7f")


def new_figure(width: float, height: float) -> Figure:
    """A Figure of width x height inches at DPI, with an Agg canvas attached (no pyplot)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, out_png) -> Path:
    """Write fig as a PNG without Software metadata, creating the parent folder."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png", dpi=DPI, metadata={"Software": None})
    return out_png
