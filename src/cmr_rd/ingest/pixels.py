"""From stored pixels to a 256x256 training PNG: modality LUT, polarity, intensity, geometry.

The geometry is one mapping from original pixel coordinates to the output frame (a square
field of view in millimetres, centred on the image), used for both the image and its boxes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class SquareFrame:
    """Maps original pixel coordinates (x = column, y = row, continuous) to the output frame."""

    x0: float  # source-pixel coordinate of the output's left edge
    y0: float
    width: float  # source pixels spanned by the output, horizontally and vertically
    height: float
    size: int

    def to_output(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.x0) * self.size / self.width, (y - self.y0) * self.size / self.height

    def box(self, x1: float, y1: float, x2: float, y2: float) -> tuple[float, ...]:
        ax, ay = self.to_output(x1, y1)
        bx, by = self.to_output(x2, y2)
        clip = lambda v: float(round(min(max(v, 0.0), self.size), 1))  # noqa: E731
        return clip(ax), clip(ay), clip(bx), clip(by)


def spacing_or_default(spacing) -> tuple[tuple[float, float], str]:
    """(row, column) spacing in mm and where it came from; zero or missing falls back to 1 mm."""
    if spacing and len(spacing) == 2 and all(np.isfinite(spacing)) and min(spacing) > 0:
        return (float(spacing[0]), float(spacing[1])), "header"
    return (1.0, 1.0), "assumed 1 mm (PixelSpacing missing or zero)"


def square_frame(
    rows: int, cols: int, spacing: tuple[float, float], size: int, crop_fov_mm: float | None
) -> SquareFrame:
    """A square window centred on the image: the whole FOV padded square, or a crop in mm."""
    dy, dx = spacing
    width_mm, height_mm = cols * dx, rows * dy
    side_mm = crop_fov_mm if crop_fov_mm else max(width_mm, height_mm)
    return SquareFrame(
        x0=(width_mm - side_mm) / 2 / dx,
        y0=(height_mm - side_mm) / 2 / dy,
        width=side_mm / dx,
        height=side_mm / dy,
        size=size,
    )


def modality_values(stored: np.ndarray, slope: float | None, intercept: float | None) -> np.ndarray:
    """Apply the modality LUT (rescale slope/intercept) in float32."""
    values = stored.astype(np.float32)
    if slope not in (None, 1.0):
        values *= np.float32(slope)
    if intercept not in (None, 0.0):
        values += np.float32(intercept)
    return values


def display_polarity(values: np.ndarray, photometric: str) -> np.ndarray:
    """MONOCHROME1 means high values display dark: negate so bright is always high."""
    return -values if photometric.upper() == "MONOCHROME1" else values


def normalise(stack: list[np.ndarray], percentiles: tuple[float, float]) -> list[np.ndarray]:
    """Clip to stack-wide percentiles and map to [0, 1], so slices of one patient share a scale."""
    flat = np.concatenate([s.ravel() for s in stack])
    lo, hi = np.percentile(flat, percentiles)
    scale = np.float32(1.0 / (hi - lo)) if hi > lo else np.float32(0.0)
    return [np.clip((s - np.float32(lo)) * scale, 0.0, 1.0) for s in stack]


def resample(image01: np.ndarray, frame: SquareFrame) -> np.ndarray:
    """Resample a [0, 1] image into the square output frame, zero (air) outside the FOV."""
    rows, cols = image01.shape
    left = max(0, int(np.ceil(-frame.x0)))
    top = max(0, int(np.ceil(-frame.y0)))
    right = max(0, int(np.ceil(frame.x0 + frame.width - cols)))
    bottom = max(0, int(np.ceil(frame.y0 + frame.height - rows)))
    padded = np.pad(image01, ((top, bottom), (left, right)))
    box = (
        frame.x0 + left,
        frame.y0 + top,
        frame.x0 + left + frame.width,
        frame.y0 + top + frame.height,
    )
    # resize with a box antialiases when shrinking, unlike an affine transform.
    out = Image.fromarray(padded.astype(np.float32), mode="F").resize(
        (frame.size, frame.size), Image.Resampling.BILINEAR, box=box
    )
    return np.asarray(out)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def to_png_bytes(image01: np.ndarray) -> bytes:
    """8-bit grayscale PNG: no filter, zlib level 1, no metadata.

    Written by hand because PIL's adaptive filtering costs more than decoding the DICOM slice,
    and because the bytes then depend on the pixels and zlib alone, not on the Pillow version.
    """
    pixels = np.clip(np.rint(image01 * 255.0), 0, 255).astype(np.uint8)
    height, width = pixels.shape
    scanlines = np.zeros((height, width + 1), dtype=np.uint8)  # filter byte 0 (None) per row
    scanlines[:, 1:] = pixels
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit, grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 1))
        + _png_chunk(b"IEND", b"")
    )
