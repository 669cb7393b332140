"""A study folder -> the de-identified LGE slices the model reads, through ingestion's own code.

The folder is what a scanner exports: every series of one exam, DICOM (any vendor variant,
Enhanced MR, compressed, MONOCHROME1) or a NIfTI volume. The series are indexed and classified
from their raw headers, the LGE short-axis stack chosen, its slices selected, screened for
burned-in text, rendered and written under the output folder's `images/` by the same functions
the ingest stage runs (`cmr_rd.ingest.pipeline`), so a study reaches the model exactly as a
training or test patient did. Only the pseudonym, pseudonymous file names and the stack's
geometry leave this module: never a source path, a name, a date or an identifier.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cmr_rd.ingest import nifti
from cmr_rd.ingest.burned_in import BURNED_IN_TAG
from cmr_rd.ingest.deid import DeidKey
from cmr_rd.ingest.index import list_files
from cmr_rd.ingest.pipeline import (
    IngestConfig,
    Outcomes,
    PatientJob,
    SeriesIndex,
    index_series,
    nifti_job,
    render_patient,
    stack_chain,
    untagged_stacks,
)

log = logging.getLogger("cmr_rd.predict")

# What an image row may carry out of this module: no source path, no label.
ROW_KEYS = (
    "image", "slice_rank", "stack_positions", "slice_position_mm", "source_kind", "lge_kind",
    "spacing_source", "sha256",
)  # fmt: skip


class PredictInputError(Exception):
    """A study, model or setting that predict cannot use, in one line that says why (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass
class Study:
    """The slices of one study the model reads, as ingestion rendered them (PNG paths relative
    to the output folder), and how they were found."""

    pseudonym: str
    rows: list[dict]  # ROW_KEYS per slice, in slice order
    source_kind: str  # dicom | dicom-enhanced | nifti
    lge_kind: str  # psir | magnitude | unknown (NIfTI)
    stack_positions: int
    series: list[dict] = field(default_factory=list)  # description, used, reason (the log's)
    masked_text_lines: int = 0
    refused_stacks: int = 0  # stacks refused for burned-in text before the one read


def _rank(row: dict) -> int:
    return row["slice_rank"]


def _number(series: dict) -> float:
    return float("inf") if series["number"] is None else series["number"]


def _description(record: dict) -> str:
    return record["series_description"] or record["protocol_name"] or "(no description)"


def _series_list(found: SeriesIndex) -> list[dict]:
    """Every series of the study by description, number and verdict (for the log)."""
    return [
        {
            "description": _description(rec),
            "number": None if verdict.series_number is None else int(verdict.series_number),
            "lge_short_axis": verdict.is_lge_sax,
            "reason": verdict.reason
            or f"LGE short-axis stack ({verdict.kind})"
            + ("" if verdict.patient_id else " without PatientID, not read"),
        }
        for rec, verdict in found.series
    ]


def _no_lge_message(found: SeriesIndex, outcomes: Outcomes, n_files: int) -> str:
    """One line: which series were seen and why none is an LGE short-axis stack."""
    if not found.series:
        reasons = Counter(reason for _, reason in outcomes.files.values())
        why = "; ".join(f"{reason} ({n})" for reason, n in sorted(reasons.items()))
        return (
            f"no DICOM or NIfTI image in the study folder: none of its {n_files} file(s) is a "
            f"readable DICOM image or a .nii/.nii.gz volume ({why})"
        )
    seen = Counter((s["description"], s["reason"]) for s in _series_list(found))
    listed = "; ".join(
        f"{desc!r}: {reason}" + (f" (x{n})" if n > 1 else "")
        for (desc, reason), n in sorted(seen.items())
    )
    listed_files = {path for _, verdict in found.series for path in verdict.files}
    unreadable = sum(
        1 for path, (_, reason) in outcomes.files.items()
        if path not in listed_files and reason != "hidden file"
    )  # fmt: skip
    tail = f"; {unreadable} other file(s) not readable as DICOM" if unreadable else ""
    return (
        f"no LGE short-axis series in the study: {len(found.series)} series seen, none usable "
        f"({listed}){tail}"
    )


def study_files(study_dir: Path) -> list[Path]:
    """The study's files; a clear error for a path that is no study folder at all."""
    if not study_dir.exists():
        raise PredictInputError("the study folder does not exist")
    if study_dir.is_file():
        if nifti.patient_id_of(study_dir) is None:
            raise PredictInputError(
                "the study is a file that is neither a folder nor a NIfTI volume"
            )
        return [study_dir]
    files = [p for p in list_files(study_dir) if not p.name.startswith(".")]
    if not files:
        raise PredictInputError("the study folder holds no files")
    return files


def _render(job: PatientJob) -> tuple[dict, PatientJob]:
    """Ingestion's rendering of the job (and its fallbacks); the job whose slices were used."""
    result = render_patient(job)
    if result["used"] is None:
        reason = result["refused"][-1]["reason"] if result["refused"] else "burned-in text"
        raise PredictInputError(
            f"every LGE stack of the study was refused: {reason} (ingest.burned_in.policy mask "
            "blacks the text out instead)"
        )
    used = job
    for _ in range(result["used"]):
        used = used.fallback
    if not result["rows"]:
        reasons = sorted({f["reason"] for f in result["failures"]})
        raise PredictInputError(
            f"no slice of the LGE stack could be decoded ({'; '.join(reasons) or 'no pixels'})"
        )
    return result, used


def prepare_study(
    study_dir: str | Path, out_dir: str | Path, key: DeidKey, cfg: IngestConfig, workers: int = 1
) -> Study:
    """Find, de-identify and render the study's LGE slices into out_dir/images (ingestion's code
    path); PredictInputError says in one line why a study cannot be read."""
    study_dir, out_dir = Path(study_dir), Path(out_dir)
    files = study_files(study_dir)
    cfg.check()
    outcomes = Outcomes()
    nifti_files = [p for p in files if nifti.patient_id_of(p) is not None]
    dicom_root = study_dir if study_dir.is_dir() and len(nifti_files) < len(files) else None
    if dicom_root is not None:
        found = index_series(dicom_root, cfg, outcomes, workers)
    else:
        found = SeriesIndex([], {}, set(), set())
    series = _series_list(found)
    for s in sorted(series, key=_number):
        log.info(
            "series %s %r: %s",
            "?" if s["number"] is None else s["number"],
            s["description"],
            s["reason"],
        )
    if (out_dir / "images").exists():
        shutil.rmtree(out_dir / "images")  # a previous study's slices must not linger
    if found.candidates:
        if len(found.candidates) > 1:
            raise PredictInputError(
                f"the study folder holds LGE stacks of {len(found.candidates)} patients; "
                "predict reads one patient's study at a time"
            )
        ((pid, stacks),) = found.candidates.items()
        stacks = untagged_stacks(stacks, found.tagged, cfg, outcomes)
        if not stacks:
            raise PredictInputError(
                f"every LGE stack of the study is {BURNED_IN_TAG}; ingest.burned_in.policy mask "
                "would read it with the text blacked out"
            )
        job = stack_chain(pid, None, stacks, found.tagged, {}, key, cfg, out_dir)
    elif nifti_files:
        if len(nifti_files) > 1:
            raise PredictInputError(
                f"the study folder holds {len(nifti_files)} NIfTI volumes and no LGE DICOM "
                "series; predict reads one patient's volume at a time"
            )
        path = nifti_files[0]
        try:
            stack = nifti.read_stack(path)
        except Exception as exc:  # nibabel raises many types; its messages may name the file
            raise PredictInputError(f"unreadable NIfTI volume ({type(exc).__name__})") from None
        job = nifti_job(path, nifti.patient_id_of(path), None, stack, {}, key, cfg, out_dir)
    else:
        raise PredictInputError(_no_lge_message(found, outcomes, len(files)))
    result, used = _render(job)
    for s, (_, verdict) in zip(series, found.series, strict=True):
        s["used"] = bool(used.series_files) and verdict.files == used.series_files
    rows = sorted(({k: row[k] for k in ROW_KEYS} for row in result["rows"]), key=_rank)
    for s in series:
        if s["used"]:
            log.info("read: series %s %r", s["number"], s["description"])
    log.info(
        "LGE stack: %s (%s), %d slice positions; %d slice(s) selected (ingest.slices.mode %s)",
        used.source_kind, used.lge_kind, used.n_positions, len(rows), cfg.slice_mode,
    )  # fmt: skip
    if result["refused"]:
        log.info("%d LGE stack(s) refused for burned-in text first", len(result["refused"]))
    return Study(
        pseudonym=used.pseudonym,
        rows=rows,
        source_kind=used.source_kind,
        lge_kind=used.lge_kind,
        stack_positions=used.n_positions,
        series=series,
        masked_text_lines=int(result["masked"]),
        refused_stacks=len(result["refused"]),
    )
