"""Burned-in text: find names, IDs and dates drawn into the pixels before any PNG is written.

The `BurnedInAnnotation` tag is often missing or wrong, so ingestion also looks: RapidOCR's
text detector (a PP-OCRv4 ONNX model inside the `rapidocr-onnxruntime` wheel; nothing is
downloaded) runs over the full field of view of the middle slice about to be written (or of
every one, `ingest.burned_in.ocr_slices: all`). A detected region shaped like a line of text
refuses the stack, or under the `mask` policy is blacked out and looked for again. Only
detection runs: nothing is read, so no text can reach a log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import numpy as np

try:
    import cv2
except ImportError:  # reported by _engine with the install hint
    cv2 = None

POLICIES = ("quarantine", "mask")
OCR_SLICES = ("one", "all")
BURNED_IN_TEXT = "burned-in text"
BURNED_IN_TAG = "tagged BurnedInAnnotation YES (text burned into the pixels)"
# The detector boxes the LV ring on every short-axis slice: a text line is short and wide.
MAX_LINE_HEIGHT = 0.2  # of the short side: a 10-px font is 13% of a 76-column matrix
MIN_LINE_ASPECT = 1.5  # width over height
# The detector finds lines whose glyphs are about 20 px tall or more in its input: slices are
# upscaled by a whole factor until the short side reaches this (256 -> 512, 128 -> 384).
MIN_SHORT_SIDE = 384
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
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # onnxruntime phones home otherwise
    try:
        from rapidocr_onnxruntime import RapidOCR

        if cv2 is None:
            raise ImportError("cv2 (opencv-python-headless)")
    except ImportError as exc:
        raise OcrUnavailable(
            "the burned-in-text check needs rapidocr-onnxruntime and opencv-python-headless "
            f"(requirements-nodeps.txt, requirements.txt); they could not be imported ({exc}). "
            "`make .venv/.installed` installs them."
        ) from exc
    cv2.setNumThreads(1)
    return RapidOCR(
        intra_op_num_threads=1,
        inter_op_num_threads=1,
        use_cls=False,  # overlays are upright
        det_limit_type="max",  # no resizing of its own: text_lines sets the scale
        det_limit_side_len=4096,
        print_verbose=False,
    )


def require_ocr() -> None:
    """Fail before any work when the OCR engine cannot run (raises OcrUnavailable)."""
    _engine()


def _is_text_line(box, shape: tuple[int, ...]) -> bool:
    points = np.asarray(box, dtype=np.float32)
    width = float(np.ptp(points[:, 0]))
    height = float(np.ptp(points[:, 1]))
    return height <= MAX_LINE_HEIGHT * min(shape) and width >= MIN_LINE_ASPECT * height


def text_lines(image01: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (x1, y1, x2, y2, pixel edges) of the text lines detected in a [0, 1] slice."""
    gray = np.clip(image01 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    scale = max(1, -(-MIN_SHORT_SIDE // min(gray.shape)))
    engine = _engine()
    size = (gray.shape[1] * scale, gray.shape[0] * scale)
    big = np.ascontiguousarray(cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR))
    found, _ = engine(big, use_det=True, use_cls=False, use_rec=False)
    boxes = []
    for box in found if found is not None else ():
        if _is_text_line(box, big.shape):
            points = np.asarray(box, dtype=np.float32) / scale
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


def screen_burned_in(
    images: list[np.ndarray], policy: str, tagged: bool, slices: str = "one"
) -> Screen:
    """Look for text in a stack's slices; refuse the stack or mask the text, as `policy` says.

    `slices`: "one" looks at the middle slice to be written (an overlay is stamped on every
    image of a series), "all" at every one; masking always looks at every slice.
    `tagged`: the series says BurnedInAnnotation YES (it reaches here only under `mask`): if
    OCR then finds nothing to mask, the stack is refused all the same.
    """
    if policy != "mask" and slices == "one":
        middle = images[len(images) // 2]
        if text_lines(middle):
            return Screen(images, True, BURNED_IN_TEXT, 0)
        return Screen(images, False, None, 0)
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
        return Screen(images, True, BURNED_IN_TEXT + " (still detected after masking)", 0)
    return Screen(masked, False, None, lines)
