"""The ingestion stage end to end: index, classify, select, render, de-identify, split.

Every input file ends in exactly one outcome (ingested, skipped or quarantined, with a reason),
so the counts reconcile. Outcomes that name source paths or identifiers go only to the private
log folder; everything under the output folder is keyed by pseudonyms and hashed file ids.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom

from cmr_rd.classes import CLASSES, canonical_label
from cmr_rd.ingest import nifti
from cmr_rd.ingest.burned_in import (
    BURNED_IN_TAG,
    OCR_SLICES,
    POLICIES,
    require_ocr,
    screen_burned_in,
)
from cmr_rd.ingest.deid import DeidKey
from cmr_rd.ingest.index import index_files, list_files, read_header
from cmr_rd.ingest.pixels import (
    display_polarity,
    modality_values,
    normalise,
    resample,
    spacing_or_default,
    square_frame,
    to_png_bytes,
)
from cmr_rd.ingest.series import SeriesVerdict, Slice, choose_stack, classify_series, slices_of
from cmr_rd.ingest.split import SplitConfig, assign_splits

log = logging.getLogger(__name__)

INGESTED, SKIPPED, QUARANTINED = "ingested", "skipped", "quarantined"
MASKED = "masked"  # a finding only: the images were written with burned-in text blacked out
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]


class InputError(ValueError):
    """A user mistake in the inputs, reported with the file and key it concerns."""


@dataclass(frozen=True)
class IngestConfig:
    prefer: str = "psir"
    min_stack_positions: int = 5
    parallel_tolerance_deg: float = 3.0
    max_axis_component: float = 0.985
    normalize_percentiles: tuple[float, float] = (0.5, 99.5)
    image_size: int = 256
    crop_fov_mm: float | None = None
    slice_mode: str = "central"
    slice_count: int = 3
    slice_window: tuple[float, float] = (0.25, 0.75)
    burned_in_policy: str = "quarantine"  # or "mask": black out the text regions OCR finds
    burned_in_ocr_slices: str = "one"  # or "all": OCR every slice to be written, not the middle

    @classmethod
    def from_config(cls, ingest: dict) -> IngestConfig:
        slices = ingest.get("slices", {})
        return cls(
            prefer=ingest.get("prefer", cls.prefer),
            min_stack_positions=ingest.get("min_stack_positions", cls.min_stack_positions),
            parallel_tolerance_deg=ingest.get("parallel_tolerance_deg", 3.0),
            max_axis_component=ingest.get("max_axis_component", 0.985),
            normalize_percentiles=tuple(ingest.get("normalize_percentiles", (0.5, 99.5))),
            image_size=ingest.get("image_size", 256),
            crop_fov_mm=ingest.get("crop_fov_mm"),
            slice_mode=slices.get("mode", "central"),
            slice_count=slices.get("count", 3),
            slice_window=tuple(slices.get("window", (0.25, 0.75))),
            burned_in_policy=ingest.get("burned_in", {}).get("policy", "quarantine"),
            burned_in_ocr_slices=ingest.get("burned_in", {}).get("ocr_slices", "one"),
        )

    def check(self) -> None:
        """Refuse settings no stack could be rendered with, and a missing OCR engine, before
        any file is read (InputError, OcrUnavailable)."""
        if self.burned_in_policy not in POLICIES:
            raise InputError(
                f"ingest.burned_in.policy: {self.burned_in_policy!r} is not one of {POLICIES}"
            )
        if self.burned_in_ocr_slices not in OCR_SLICES:
            raise InputError(
                f"ingest.burned_in.ocr_slices: {self.burned_in_ocr_slices!r} is not one of "
                f"{OCR_SLICES}"
            )
        require_ocr()


@dataclass
class Outcomes:
    """One row per input file, plus patient- and row-level findings."""

    files: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (outcome, reason)
    # kind, subject, outcome, reason. Subjects of kind patient and label_row are raw patient ids
    # (pseudonymised on output); other kinds name a row, such as 'boxes.csv:7'.
    findings: list[dict] = field(default_factory=list)

    def file(self, path: str, outcome: str, reason: str) -> None:
        # A multi-frame file is ingested if any of its frames is; otherwise the first reason wins.
        if path not in self.files or outcome == INGESTED:
            self.files[path] = (outcome, reason)

    def finding(self, kind: str, subject: str, outcome: str, reason: str) -> None:
        self.findings.append(
            {"kind": kind, "subject": subject, "outcome": outcome, "reason": reason}
        )


# ----------------------------------------------------------------------------- inputs


def read_table(path: Path, key: str) -> pd.DataFrame:
    """A CSV as strings, every line with the header's number of fields, or one InputError that
    names the file and the config key. pandas would otherwise take extra leading fields of the
    first rows as an index (shifting every column of those rows), and a file saved in a legacy
    encoding (an Excel export in Windows-1252) would stop ingestion with a traceback."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, header=None)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{key}: '{path}' is not UTF-8 text ({_first_non_utf8(path)}); save it as UTF-8 "
            "(in Excel: 'CSV UTF-8')"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise InputError(f"{key}: '{path}' is empty") from exc
    except pd.errors.ParserError as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{key}: '{path}' is not a well-formed CSV: {reason}") from exc
    header = list(raw.iloc[0])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"{key}: '{path}' has repeated column(s) {repeated}")
    table = raw.iloc[1:].reset_index(drop=True)
    table.columns = header
    return table


def _first_non_utf8(path: Path) -> str:
    """Where a file stops being UTF-8: its first such line and byte (pandas decodes in chunks,
    so its own error cannot say)."""
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"line {number}: byte {line[exc.start]:#04x}"
    return "a character split across lines"


def read_labels(path: str | Path, outcomes: Outcomes) -> tuple[dict[str, str], dict[str, str]]:
    """patient_id -> class, and patient_id -> report text. Bad rows become findings."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data.labels_csv: file '{path}' does not exist")
    table = read_table(path, "data.labels_csv")
    missing = {"patient_id", "label"} - set(table.columns)
    if missing:
        raise InputError(
            f"{path}: missing required column(s) {sorted(missing)}; found {list(table.columns)}"
        )
    labels: dict[str, str] = {}
    reports: dict[str, str] = {}
    for line, row in enumerate(table.itertuples(index=False), start=2):
        pid = row.patient_id.strip()
        if not pid:
            outcomes.finding("label_line", f"{path.name}:{line}", QUARANTINED, "empty patient_id")
            continue
        label = canonical_label(row.label)
        if label is None:
            outcomes.finding(
                "label_row", pid, QUARANTINED,
                f"unknown class {row.label!r} (expected one of {', '.join(CLASSES)} or full names)",
            )  # fmt: skip
            continue
        if pid in labels and labels[pid] != label:
            outcomes.finding("label_row", pid, QUARANTINED, "conflicting labels for one patient")
            labels[pid] = "__conflict__"
            continue
        labels[pid] = label
        if "report" in table.columns and row.report.strip():
            reports[pid] = row.report
    labels = {p: c for p, c in labels.items() if c != "__conflict__"}
    return labels, reports


class Boxes(dict):
    """Boxes keyed by ('sop', uid, frame) for DICOM and ('nifti', patient_id, index) for NIfTI,
    with the boxes.csv row each came from (`where`), so a row nothing uses can be reported."""

    def __init__(self) -> None:
        super().__init__()
        self.where: dict[tuple, str] = {}


def read_boxes(path: str | Path | None, outcomes: Outcomes) -> Boxes:
    """Every valid box row of boxes.csv by slice key; invalid and repeated rows are findings."""
    boxes = Boxes()
    if not path:
        return boxes
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data.boxes_csv: file '{path}' does not exist")
    table = read_table(path, "data.boxes_csv")
    missing = {"patient_id", *BOX_COLUMNS} - set(table.columns)
    if missing:
        raise InputError(f"{path}: missing required column(s) {sorted(missing)}")
    for line, row in enumerate(table.to_dict("records"), start=2):
        where = f"{path.name}:{line}"
        try:
            box = tuple(float(row[c]) for c in BOX_COLUMNS)
        except ValueError:
            outcomes.finding("box_row", where, QUARANTINED, "non-numeric box coordinate")
            continue
        if not (np.all(np.isfinite(box)) and box[0] < box[2] and box[1] < box[3]):
            outcomes.finding("box_row", where, QUARANTINED, "box needs x1 < x2 and y1 < y2")
            continue
        uid, frame, index = (
            row.get(k, "").strip() for k in ("sop_instance_uid", "frame", "slice_index")
        )
        if (frame and not frame.isdigit()) or (index and not index.isdigit()):
            outcomes.finding("box_row", where, QUARANTINED, "frame/slice_index is not an integer")
            continue
        if frame and int(frame) == 0:
            outcomes.finding("box_row", where, QUARANTINED, "frame numbers start at 1")
            continue
        if uid:
            slice_key = ("sop", uid, int(frame) - 1 if frame else None)
        elif index:
            slice_key = ("nifti", row["patient_id"].strip(), int(index))
        else:
            outcomes.finding(
                "box_row",
                where,
                QUARANTINED,
                "box row names neither sop_instance_uid nor slice_index",
            )
            continue
        if slice_key in boxes:  # one box per slice: a second row would silently replace it
            outcomes.finding(
                "box_row", where, QUARANTINED,
                f"a second box for the slice of {boxes.where[slice_key]}: that row's box is used",
            )  # fmt: skip
            continue
        boxes[slice_key] = box
        boxes.where[slice_key] = where
    return boxes


def unmatched_boxes(
    boxes: Boxes, instances: dict[str, int], volumes: dict[str, int]
) -> list[tuple[str, str]]:
    """(row, reason) for each box row that names no slice of the inputs.

    `instances`: SOP Instance UID -> number of frames, for every readable DICOM file;
    `volumes`: patient id -> number of slices, for every readable NIfTI volume. A box on a slice
    that exists but is not ingested (another series, a quarantined file) is not reported here:
    that slice's own outcome says why.
    """
    unmatched = []
    for (kind, ident, index), where in boxes.where.items():
        if kind == "sop":
            frames = instances.get(ident)
            if frames is None:
                unmatched.append((where, "box row names a SOP Instance UID no DICOM file has"))
            elif index is None and frames > 1:  # which frame? the box would fit none of them
                unmatched.append(
                    (where, f"box row names an instance of {frames} frames but not its frame")
                )
            elif index is not None and index >= frames:
                unmatched.append(
                    (where, f"box row names frame {index + 1} of an instance with {frames}")
                )
        else:
            slices = volumes.get(ident)
            if slices is None:
                unmatched.append((where, "box row names a patient without a NIfTI volume"))
            elif index >= slices:
                unmatched.append(
                    (where, f"box row names slice_index {index} of a volume with {slices} slices")
                )
    return unmatched


# ----------------------------------------------------------------------------- selection


def select_positions(n: int, cfg: IngestConfig) -> list[int]:
    """Indices (into the spatially ordered distinct positions) that become images."""
    if cfg.slice_mode == "all" or n == 0:
        return list(range(n))
    if cfg.slice_mode == "window":
        lo, hi = cfg.slice_window
        rel = [i / (n - 1) if n > 1 else 0.5 for i in range(n)]
        return [i for i, r in enumerate(rel) if lo <= r <= hi]
    count = min(cfg.slice_count, n)
    start = (n - count) // 2
    return list(range(start, start + count))


def _distinct_positions(slices: list[Slice]) -> tuple[list[Slice], list[Slice]]:
    kept, duplicates, seen = [], [], set()
    for s in slices:
        key = round(s.location_mm, 1)
        (duplicates if key in seen else kept).append(s)
        seen.add(key)
    return kept, duplicates


# ----------------------------------------------------------------------------- rendering


@dataclass
class PatientJob:
    patient_id: str
    pseudonym: str
    label: str
    source_kind: str  # dicom | dicom-enhanced | nifti
    lge_kind: str
    out_dir: str
    cfg: IngestConfig
    slices: list[Slice] = field(default_factory=list)  # DICOM
    nifti_path: str | None = None
    nifti_indices: list[int] = field(default_factory=list)
    boxes: dict = field(default_factory=dict)  # rank -> box in original pixels
    ranks: list[int] = field(default_factory=list)  # position rank of each selected slice
    n_positions: int = 0
    centre_mm: float = 0.0
    # The stack's files, quarantined whole if OCR finds burned-in text in it.
    series_files: list[str] = field(default_factory=list)
    # Outcomes (path, outcome, reason) that hold only if this stack is the one used.
    if_used: list[tuple[str, str, str]] = field(default_factory=list)
    tagged_burned_in: bool = False  # BurnedInAnnotation YES (kept only under the mask policy)
    fallback: PatientJob | None = None  # the next-preferred stack, tried if this one is refused


def _decode(slices: list[Slice]) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Stored pixels per slice, reading each file once; failures become reasons."""
    arrays: list[np.ndarray | None] = [None] * len(slices)
    errors: list[str | None] = [None] * len(slices)
    by_path: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(slices):
        by_path[s.path].append(i)
    for path, idxs in by_path.items():
        try:
            ds = pydicom.dcmread(path)
            if "PixelData" not in ds and "FloatPixelData" not in ds:
                raise LookupError("no pixel data")
            data = ds.pixel_array
        except LookupError:
            for i in idxs:
                errors[i] = "no pixel data element"
            continue
        except Exception as exc:  # corrupt codestreams raise a zoo of types
            for i in idxs:
                errors[i] = f"pixel data could not be decoded ({type(exc).__name__})"
            continue
        for i in idxs:
            frame = slices[i].frame
            arr = data[frame] if frame is not None and data.ndim >= 3 else data
            if arr.ndim == 3 and arr.shape[-1] in (3, 4):
                errors[i] = "colour pixel data (not a grayscale MR image)"
            elif arr.ndim != 2:
                errors[i] = f"unexpected pixel array shape {tuple(arr.shape)} (not grayscale 2D)"
            elif arr.shape != (slices[i].rows, slices[i].columns) and slices[i].rows:
                errors[i] = "pixel array shape disagrees with Rows/Columns"
            else:
                arrays[i] = arr
    return arrays, errors


def render_patient(job: PatientJob) -> dict:
    """Render the patient's preferred LGE stack; if it carries burned-in text, the next one.

    Returns rows, failures, `used` (how far down the fallback chain the rows come from, None if
    no stack was rendered) and `refused`: the stacks quarantined for burned-in text, in order.
    """
    refused: list[dict] = []
    current, depth = job, 0
    while current is not None:
        result = _render_stack(current)
        if result["burned_in"] is None:
            return {**result, "used": depth, "refused": refused}
        refused.append({"files": current.series_files, "reason": result["burned_in"]})
        current, depth = current.fallback, depth + 1
    return {"rows": [], "failures": [], "masked": 0, "dropped_boxes": 0, "used": None,
            "refused": refused}  # fmt: skip


def _render_stack(job: PatientJob) -> dict:
    """Decode, normalise, screen for burned-in text, resample one stack's selected slices."""
    cfg = job.cfg
    results, failures = [], []
    if job.nifti_path:
        stack = nifti.read_stack(Path(job.nifti_path))
        images = [stack.image(i) for i in job.nifti_indices]
        spacings = [stack.spacing] * len(images)
        spacing_sources = ["affine"] * len(images)
    else:
        stored, errors = _decode(job.slices)
        images, spacings, spacing_sources = [], [], []
        for s, arr, err in zip(job.slices, stored, errors, strict=True):
            if err:
                failures.append({"path": s.path, "reason": err})
                images.append(None)
                spacings.append(None)
                spacing_sources.append(None)
                continue
            values = display_polarity(modality_values(arr, s.slope, s.intercept), s.photometric)
            spacing, source = spacing_or_default(s.spacing)
            images.append(values)
            spacings.append(spacing)
            spacing_sources.append(source)
    good = [i for i, img in enumerate(images) if img is not None]
    if not good:
        return {"rows": [], "failures": failures, "burned_in": None, "masked": 0,
                "dropped_boxes": 0}  # fmt: skip
    normalised = normalise([images[i] for i in good], cfg.normalize_percentiles)
    # Before anything is written: text in the pixels (names, dates) refuses or masks the stack.
    screen = screen_burned_in(
        normalised, cfg.burned_in_policy, job.tagged_burned_in, cfg.burned_in_ocr_slices
    )
    if screen.refused:
        return {"rows": [], "failures": failures, "burned_in": screen.reason, "masked": 0,
                "dropped_boxes": 0}  # fmt: skip
    normalised = screen.images
    folder = Path(job.out_dir) / "images" / job.pseudonym
    folder.mkdir(parents=True, exist_ok=True)
    dropped_boxes = 0
    for i, image01 in zip(good, normalised, strict=True):
        rows, cols = image01.shape
        frame = square_frame(rows, cols, spacings[i], cfg.image_size, cfg.crop_fov_mm)
        png = to_png_bytes(resample(image01, frame))
        rank = job.ranks[i]
        rel = Path("images") / job.pseudonym / f"{job.pseudonym}_z{rank:02d}.png"
        (Path(job.out_dir) / rel).write_bytes(png)
        digest = hashlib.sha256(png).hexdigest()
        box = job.boxes.get(rank)
        out_box = frame.box(*box) if box else None
        if out_box and not (out_box[0] < out_box[2] and out_box[1] < out_box[3]):
            out_box = None  # the box lies outside the cropped field of view: reported
            dropped_boxes += 1
        location = (
            stack.locations_mm[job.nifti_indices[i]]
            if job.nifti_path
            else job.slices[i].location_mm
        )
        results.append(
            {
                "image": rel.as_posix(),
                "patient": job.pseudonym,
                "label": job.label,
                "box": list(out_box) if out_box else None,
                "slice_rank": rank,
                "stack_positions": job.n_positions,
                "slice_position_mm": round(location - job.centre_mm, 2),
                "source_kind": job.source_kind,
                "lge_kind": job.lge_kind,
                "spacing_source": spacing_sources[i],
                "sha256": digest,
                "path": job.nifti_path or job.slices[i].path,
            }
        )
    return {"rows": results, "failures": failures, "burned_in": None, "masked": screen.masked,
            "dropped_boxes": dropped_boxes}  # fmt: skip


# ----------------------------------------------------------------------------- the stage


def _series_key(rec: dict) -> str:
    return rec["series_uid"] or f"file:{rec['path']}"


@dataclass
class SeriesIndex:
    """A DICOM tree's series, classified: what ingestion and `cmr_rd.predict` both start from."""

    series: list[tuple[dict, SeriesVerdict]]  # (first header record, verdict), every series
    candidates: dict[str, list[SeriesVerdict]]  # patient id -> its LGE short-axis stacks
    patients_seen: set[str]  # every patient id of a readable series
    tagged: set[str]  # files tagged BurnedInAnnotation YES
    instances: dict[str, int] = field(default_factory=dict)  # SOP Instance UID -> frames


def index_series(
    dicom_dir: Path, cfg: IngestConfig, outcomes: Outcomes, workers: int = 1
) -> SeriesIndex:
    """Index every file below dicom_dir and classify each (patient, series) from its raw
    headers; unreadable files are quarantined, non-LGE series skipped, with their reasons."""
    files = []
    for path in list_files(dicom_dir):
        if path.name.startswith("."):  # .DS_Store, .snakemake_timestamp and the like
            outcomes.file(str(path), SKIPPED, "hidden file")
        else:
            files.append(path)
    records = index_files(files, workers=workers)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for rec in records:
        if rec["status"] != "ok":
            outcomes.file(rec["path"], QUARANTINED, rec["reason"])
        else:
            groups[(rec["patient_id"], _series_key(rec))].append(rec)
    found = SeriesIndex([], defaultdict(list), set(), set())
    for (pid, skey), recs in sorted(groups.items()):
        recs.sort(key=lambda r: r["path"])
        verdict = classify_series(
            skey, recs, cfg.min_stack_positions, cfg.parallel_tolerance_deg, cfg.max_axis_component
        )
        found.series.append((recs[0], verdict))
        if pid:
            found.patients_seen.add(pid)
        if not verdict.is_lge_sax:
            for path in verdict.files:
                outcomes.file(path, SKIPPED, verdict.reason)
        elif not pid:
            for path in verdict.files:
                outcomes.file(path, QUARANTINED, "LGE stack without PatientID")
        else:
            found.candidates[pid].append(verdict)
    found.tagged = {rec["path"] for rec in records if rec.get("burned_in") == "YES"}
    found.instances = {
        rec["sop_instance_uid"]: rec["n_frames"]
        for rec in records
        if rec["status"] == "ok" and rec["sop_instance_uid"]
    }
    return found


def untagged_stacks(
    stacks: list[SeriesVerdict], tagged: set[str], cfg: IngestConfig, outcomes: Outcomes
) -> list[SeriesVerdict]:
    """Under the quarantine policy, a stack tagged as carrying burned-in text is quarantined
    unread; under the mask policy every stack stays (its text is found and masked)."""
    if cfg.burned_in_policy != "quarantine":
        return stacks
    for v in stacks:
        if tagged.intersection(v.files):
            for path in v.files:
                outcomes.file(path, QUARANTINED, BURNED_IN_TAG)
    return [v for v in stacks if not tagged.intersection(v.files)]


def stack_chain(
    pid: str,
    label: str | None,
    stacks: list[SeriesVerdict],
    tagged: set[str],
    boxes: dict,
    key: DeidKey,
    cfg: IngestConfig,
    out_dir: Path,
) -> PatientJob:
    """The render job of a patient's preferred LGE stack, the next-preferred as its fallback
    (tried if burned-in text refuses it), and so on down the list."""
    ordered = []  # preferred first; the rest are fallbacks if burned-in text refuses it
    while stacks:
        ordered.append(choose_stack(stacks, cfg.prefer))
        stacks = [v for v in stacks if v is not ordered[-1]]
    job = None
    for i in reversed(range(len(ordered))):
        fallback, others = job, ordered[:i] + ordered[i + 1 :]
        job = _stack_job(pid, label, ordered[i], others, tagged, boxes, key, cfg, out_dir)
        job.fallback = fallback
    return job


def _dicom_jobs(
    dicom_dir: Path | None,
    labels: dict[str, str],
    boxes: dict,
    key: DeidKey,
    cfg: IngestConfig,
    out_dir: Path,
    outcomes: Outcomes,
    workers: int,
) -> tuple[list[PatientJob], set[str], dict[str, int]]:
    if dicom_dir is None or not dicom_dir.exists():
        return [], set(), {}
    found = index_series(dicom_dir, cfg, outcomes, workers)
    jobs = []
    for pid in sorted(found.candidates):
        stacks = untagged_stacks(found.candidates[pid], found.tagged, cfg, outcomes)
        if not stacks:
            outcomes.finding("patient", pid, QUARANTINED, "every LGE stack " + BURNED_IN_TAG)
            continue
        label = labels.get(pid)
        if label is None:
            chosen = choose_stack(stacks, cfg.prefer)
            for path in chosen.files:
                outcomes.file(path, QUARANTINED, "no usable label row for this patient")
            for other in stacks:
                reason = f"alternative LGE stack ({other.kind}) not chosen; {chosen.kind} used"
                for path in other.files if other is not chosen else ():
                    outcomes.file(path, SKIPPED, reason)
            outcomes.finding("patient", pid, QUARANTINED, "LGE stack found but no usable label")
            continue
        jobs.append(stack_chain(pid, label, stacks, found.tagged, boxes, key, cfg, out_dir))
    return jobs, found.patients_seen | set(found.candidates), found.instances


def _stack_job(pid, label, chosen, others, tagged, boxes, key, cfg, out_dir) -> PatientJob:
    """The render job for one LGE stack; the skips it implies apply only if it is used."""
    if_used = []
    for other in others:
        reason = f"alternative LGE stack ({other.kind}) not chosen; {chosen.kind} used"
        if_used += [(path, SKIPPED, reason) for path in other.files]
    kept, duplicates = _distinct_positions(chosen.slices)
    if_used += [(s.path, SKIPPED, "duplicate slice position in the LGE stack") for s in duplicates]
    selected = select_positions(len(kept), cfg)
    reason = f"slice outside the selection ({cfg.slice_mode})"
    if_used += [(s.path, SKIPPED, reason) for rank, s in enumerate(kept) if rank not in selected]
    job_boxes = {}
    for rank in selected:
        s = kept[rank]
        box = boxes.get(("sop", s.sop_instance_uid, s.frame))
        if box is None and s.frame is None:
            box = boxes.get(("sop", s.sop_instance_uid, None))
        if box is not None:
            job_boxes[rank] = box
    return PatientJob(
        patient_id=pid,
        pseudonym=key.pseudonym(pid),
        label=label,
        source_kind="dicom-enhanced" if chosen.enhanced else "dicom",
        lge_kind=chosen.kind,
        out_dir=str(out_dir),
        cfg=cfg,
        slices=[kept[r] for r in selected],
        boxes=job_boxes,
        ranks=list(selected),
        n_positions=len(kept),
        centre_mm=float(np.mean([s.location_mm for s in kept])),
        series_files=list(chosen.files),
        if_used=if_used,
        tagged_burned_in=bool(tagged.intersection(chosen.files)),
    )


def nifti_job(
    path: Path,
    pid: str,
    label: str | None,
    stack: nifti.NiftiStack,
    boxes: dict,
    key: DeidKey,
    cfg: IngestConfig,
    out_dir: Path,
) -> PatientJob:
    """The render job of one NIfTI volume: its slices in spatial order, then the selection."""
    order = sorted(range(len(stack.locations_mm)), key=lambda k: stack.locations_mm[k])
    selected = select_positions(len(order), cfg)
    indices = [order[r] for r in selected]
    job_boxes = {
        r: boxes[("nifti", pid, order[r])] for r in selected if ("nifti", pid, order[r]) in boxes
    }
    return PatientJob(
        patient_id=pid,
        pseudonym=key.pseudonym(pid),
        label=label,
        source_kind="nifti",
        lge_kind="unknown",
        out_dir=str(out_dir),
        cfg=cfg,
        nifti_path=str(path),
        nifti_indices=indices,
        series_files=[str(path)],
        boxes=job_boxes,
        ranks=list(selected),
        n_positions=len(order),
        centre_mm=float(np.mean(stack.locations_mm)),
    )


def _nifti_jobs(
    nifti_dir: Path | None,
    labels: dict[str, str],
    boxes: dict,
    key: DeidKey,
    cfg: IngestConfig,
    out_dir: Path,
    outcomes: Outcomes,
) -> tuple[list[PatientJob], set[str], dict[str, int]]:
    if nifti_dir is None or not nifti_dir.exists():
        return [], set(), {}
    jobs, seen, volumes = [], set(), {}
    for path in list_files(nifti_dir):
        pid = nifti.patient_id_of(path)
        if path.name.startswith("."):
            outcomes.file(str(path), SKIPPED, "hidden file")
            continue
        if pid is None:
            outcomes.file(str(path), SKIPPED, "not a NIfTI file (.nii or .nii.gz)")
            continue
        seen.add(pid)
        try:
            stack = nifti.read_stack(path)
        except Exception as exc:  # nibabel raises many types for broken files
            outcomes.file(str(path), QUARANTINED, f"unreadable NIfTI ({type(exc).__name__})")
            continue
        volumes[pid] = len(stack.locations_mm)
        label = labels.get(pid)
        if label is None:
            outcomes.file(str(path), QUARANTINED, "no usable label row for this patient")
            outcomes.finding("patient", pid, QUARANTINED, "NIfTI volume found but no usable label")
            continue
        jobs.append(nifti_job(path, pid, label, stack, boxes, key, cfg, out_dir))
    return jobs, seen, volumes


def run_ingest(
    *,
    dicom_dir: str | Path | None,
    nifti_dir: str | Path | None,
    labels_csv: str | Path,
    boxes_csv: str | Path | None,
    out_dir: str | Path,
    private_dir: str | Path,
    key: DeidKey,
    cfg: IngestConfig,
    split_cfg: SplitConfig,
    seed: int,
    workers: int = 1,
    timings: dict[str, float] | None = None,
) -> dict:
    """Run the whole stage. Returns the reconciliation summary (also written to disk).

    `timings`, if given, receives wall seconds per phase (index, render, write); they are kept
    out of the outputs so that reruns stay byte-identical.
    """
    clock = time.perf_counter()
    timings = {} if timings is None else timings
    cfg.check()
    out_dir, private_dir = Path(out_dir), Path(private_dir)
    if (out_dir / "images").exists():
        shutil.rmtree(out_dir / "images")  # stale images of a previous run must not linger
    out_dir.mkdir(parents=True, exist_ok=True)
    private_dir.mkdir(parents=True, exist_ok=True)
    outcomes = Outcomes()
    labels, _reports = read_labels(labels_csv, outcomes)
    boxes = read_boxes(boxes_csv, outcomes)
    dicom_dir = Path(dicom_dir) if dicom_dir else None
    nifti_dir = Path(nifti_dir) if nifti_dir else None
    dicom_jobs, dicom_seen, instances = _dicom_jobs(
        dicom_dir, labels, boxes, key, cfg, out_dir, outcomes, workers
    )
    nifti_jobs, nifti_seen, volumes = _nifti_jobs(
        nifti_dir, labels, boxes, key, cfg, out_dir, outcomes
    )
    for where, reason in unmatched_boxes(boxes, instances, volumes):
        outcomes.finding("box_row", where, SKIPPED, reason)
    jobs = dicom_jobs + nifti_jobs
    timings["index"] = time.perf_counter() - clock
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            rendered = list(pool.map(render_patient, jobs, chunksize=4))
    else:
        rendered = [render_patient(job) for job in jobs]

    timings["render"] = time.perf_counter() - clock - timings["index"]
    rows = []
    for job, result in zip(jobs, rendered, strict=True):
        for refused in result["refused"]:
            for path in refused["files"]:
                outcomes.file(path, QUARANTINED, refused["reason"])
        for failure in result["failures"]:
            outcomes.file(failure["path"], QUARANTINED, failure["reason"])
        for row in result["rows"]:
            outcomes.file(row["path"], INGESTED, "")
            rows.append(row)
        used = job
        for _ in range(result["used"] or 0):
            used = used.fallback
        if result["used"] is not None:
            for path, outcome, reason in used.if_used:
                outcomes.file(path, outcome, reason)
        if result["masked"]:
            outcomes.finding("patient", job.patient_id, MASKED, "burned-in text masked")
        for _ in range(result["dropped_boxes"]):
            outcomes.finding(
                "patient", job.patient_id, SKIPPED,
                "lesion box outside the cropped field of view: the slice kept, the box dropped",
            )  # fmt: skip
        if result["used"] is None:
            outcomes.finding(
                "patient", job.patient_id, QUARANTINED, "burned-in text in every LGE stack"
            )
        elif not result["rows"]:
            outcomes.finding("patient", job.patient_id, QUARANTINED, "no slice could be decoded")

    ingested_patients = {row["patient"] for row in rows}
    for pid in sorted(set(labels)):
        if key.pseudonym(pid) in ingested_patients:
            continue
        if pid in dicom_seen or pid in nifti_seen:
            outcomes.finding(
                "patient", pid, QUARANTINED, "patient has no usable LGE short-axis stack"
            )
        else:
            outcomes.finding("label_row", pid, QUARANTINED, "label row has no images")

    files_on_disk = sum(len(list_files(d)) for d in (dicom_dir, nifti_dir) if d and d.exists())
    summary = _write_outputs(
        rows, outcomes, key, split_cfg, seed, out_dir, private_dir, files_on_disk
    )
    timings["total"] = time.perf_counter() - clock
    return summary


MANIFEST_COLUMNS = [
    "image", "patient", "label", "split", "box", "slice_rank", "stack_positions",
    "slice_position_mm", "source_kind", "lge_kind", "spacing_source", "sha256",
]  # fmt: skip


def _public_subject(finding: dict, key: DeidKey) -> str:
    if finding["kind"] in ("patient", "label_row"):
        return key.pseudonym(finding["subject"])
    return key.token(finding["kind"], finding["subject"])


def _public_reason(reason: str) -> str:
    """Reasons may quote a user's label text; keep only the category in public outputs."""
    return "unknown class label" if reason.startswith("unknown class") else reason


def _write_outputs(rows, outcomes, key, split_cfg, seed, out_dir, private_dir, files_on_disk):
    patients = {row["patient"]: row["label"] for row in rows}
    splits, notes = assign_splits(patients, split_cfg, seed)
    table = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS[:3], *MANIFEST_COLUMNS[4:], "path"])
    table = table.sort_values(["patient", "slice_rank"], kind="stable").reset_index(drop=True)
    table["split"] = table["patient"].map(splits)
    table[MANIFEST_COLUMNS].to_parquet(out_dir / "manifest.parquet", index=False)

    counts = []
    for label in CLASSES:
        entry = {"class": label}
        for split in ("train", "probe", "test"):
            part = table[(table["label"] == label) & (table["split"] == split)]
            entry[f"{split}_patients"] = part["patient"].nunique()
            entry[f"{split}_images"] = len(part)
        entry["note"] = notes.get(label, "")
        counts.append(entry)
    pd.DataFrame(counts).to_csv(out_dir / "counts.csv", index=False)

    # The private tables name source paths and ids (they may hold PHI: keep them out of results/).
    file_rows = sorted((path, o, r) for path, (o, r) in outcomes.files.items())
    with open(private_dir / "file_outcomes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "item", "outcome", "reason"])
        writer.writerows((p, key.token("file", p), o, r) for p, o, r in file_rows)
    with open(private_dir / "findings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "subject", "item", "outcome", "reason"])
        writer.writerows(
            (f["kind"], f["subject"], _public_subject(f, key), f["outcome"], f["reason"])
            for f in outcomes.findings
        )

    quarantine = [
        {"item": key.token("file", p), "kind": "file", "outcome": o, "reason": r}
        for p, o, r in file_rows
        if o != INGESTED
    ]
    quarantine += [
        {
            "item": _public_subject(f, key),
            "kind": f["kind"],
            "outcome": f["outcome"],
            "reason": _public_reason(f["reason"]),
        }
        for f in outcomes.findings
    ]
    pd.DataFrame(quarantine, columns=["item", "kind", "outcome", "reason"]).to_csv(
        out_dir / "quarantine.csv", index=False
    )

    tally = Counter(o for o, _ in outcomes.files.values())
    reasons = Counter(f"{o}: {r}" for o, r in outcomes.files.values() if o != INGESTED)
    findings = Counter(f"{f['kind']}: {_public_reason(f['reason'])}" for f in outcomes.findings)
    summary = {
        "files_in": files_on_disk,
        "files_accounted": len(outcomes.files),
        "ingested": tally[INGESTED],
        "skipped": tally[SKIPPED],
        "quarantined": tally[QUARANTINED],
        "images": len(table),
        "patients": len(patients),
        "file_reasons": dict(sorted(reasons.items())),
        "findings": dict(sorted(findings.items())),
    }
    summary["reconciled"] = files_on_disk == tally[INGESTED] + tally[SKIPPED] + tally[QUARANTINED]
    (out_dir / "reconcile.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def pixel_check(path: str | Path, size: int = 64) -> str | None:
    """Run one file through the whole pixel path (decode, LUT, polarity, resample).

    Returns None when every frame renders, else the reason ingestion would quarantine it with.
    Used to audit a corpus whose files would never be selected as LGE by their headers.
    """
    record = read_header(path)
    if record["status"] != "ok":
        return record["reason"]
    if not (record["rows"] and record["columns"]):
        return "not an image (no pixel matrix in header)"
    slices = slices_of([record])
    arrays, errors = _decode(slices)
    for s, arr, err in zip(slices, arrays, errors, strict=True):
        if err:
            return err
        values = display_polarity(modality_values(arr, s.slope, s.intercept), s.photometric)
        (image01,) = normalise([values], (0.5, 99.5))
        spacing, _ = spacing_or_default(s.spacing)
        resample(image01, square_frame(*image01.shape, spacing, size, None))
    return None
