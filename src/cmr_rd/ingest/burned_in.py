"""Burned-in text: find names, IDs and dates drawn into the pixels before any PNG is written.

The `BurnedInAnnotation` tag is often missing or wrong, so ingestion also looks: an OCR pass
(RapidOCR's ONNX text detector and recogniser, which ship inside the `rapidocr-onnxruntime`
wheel and run offline) over every slice it is about to write. A line of three or more letters
or digits refuses the stack, or under the `mask` policy is blacked out and looked for again.
Nothing of the recognised text is returned or logged: only that, and how much, was found.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from functools import cache

import numpy as np

log = logging.getLogger(__name__)

POLICIES = ("quarantine", "mask")
BURNED_IN_TEXT = "burned-in text"
MIN_CHARS = 3  # the LV ring alone can read as "O" or "0": a text line has several characters
DET_SIDE = 384  # the detector's input short side; small matrices are upscaled to it
MASK_MARGIN = 2  # pixels added around a detected line before it is blacked out


class OcrUnavailable(RuntimeError):
    """No OCR engine can run: ingestion stops rather than skip the burned-in-text check."""


@dataclass(frozen=True)
class Screen:
    images: list[np.ndarray]  # the slices to write (masked where text was found and masked)
    refused: bool
    reason: str | None
    masked: int  # text lines blacked out


@cache
def _engine():
    """One engine per process, single-threaded (ingestion parallelises over patients)."""
    try:
        import cv2
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:
        raise OcrUnavailable(
            "the burned-in-text check needs rapidocr-onnxruntime (in requirements.txt); "
            f"it could not be imported ({exc}). Run `make .venv/.installed` to install it."
        ) from exc
    cv2.setNumThreads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return RapidOCR(
        intra_op_num_threads=1,
        inter_op_num_threads=1,
        use_cls=False,  # overlays are upright
        det_limit_type="min",
        det_limit_side_len=DET_SIDE,
        print_verbose=False,
    )


def require_ocr() -> None:
    """Fail before any work when the OCR engine cannot run (raises OcrUnavailable)."""
    _engine()


def _is_text_line(box, text: str, shape: tuple[int, ...]) -> bool:
    points = np.asarray(box, dtype=np.float32)
    width = float(points[:, 0].max() - points[:, 0].min())
    height = float(points[:, 1].max() - points[:, 1].min())
    chars = len(re.sub(r"[^0-9A-Za-z]", "", text))
    return chars >= MIN_CHARS and height <= 0.2 * min(shape) and width >= 1.2 * height


def text_lines(image01: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (x1, y1, x2, y2, pixel edges) of the text lines OCR reads in a [0, 1] slice."""
    gray = np.ascontiguousarray(np.clip(image01 * 255.0 + 0.5, 0, 255).astype(np.uint8))
    found, _ = _engine()(gray, use_det=True, use_cls=False, use_rec=True)
    boxes = []
    for box, text, _score in found or ():
        if _is_text_line(box, text, gray.shape):
            points = np.asarray(box, dtype=np.float32)
            x1, y1 = np.floor(points.min(axis=0)).astype(int)
            x2, y2 = np.ceil(points.max(axis=0)).astype(int)
            boxes.append((int(x1), int(y1), int(x2), int(y2)))
    return boxes


def _mask(image01: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    out = image01.copy()
    rows, cols = out.shape
    for x1, y1, x2, y2 in boxes:
        out[
            max(0, y1 - MASK_MARGIN) : min(rows, y2 + MASK_MARGIN),
            max(0, x1 - MASK_MARGIN) : min(cols, x2 + MASK_MARGIN),
        ] = 0.0
    return out


def screen_burned_in(images: list[np.ndarray], policy: str, tagged: bool) -> Screen:
    """Look for text in every slice of a stack; refuse it or mask it, as `policy` says.

    `tagged`: the series says BurnedInAnnotation YES (it reaches here only under `mask`): if
    OCR then finds nothing to mask, the stack is refused all the same.
    """
    found = [text_lines(image) for image in images]
    lines = sum(len(f) for f in found)
    if lines == 0:
        if tagged:
            return Screen(images, True, "tagged BurnedInAnnotation YES, no text found to mask", 0)
        return Screen(images, False, None, 0)
    if policy != "mask":
        return Screen(images, True, BURNED_IN_TEXT, 0)
    masked = [_mask(image, boxes) for image, boxes in zip(images, found, strict=True)]
    if any(text_lines(image) for image in masked):
        return Screen(images, True, BURNED_IN_TEXT + " (still readable after masking)", 0)
    return Screen(masked, False, None, lines)
