"""Which series is the LGE short-axis stack: classification by header, then geometry.

Series are classified here, from the raw headers, before anything is de-identified: the
de-identified record no longer has the descriptions these rules read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

# Tokens are split on non-word characters and on "_" ("de_TrueFISP_PSIR" -> de, truefisp, psir).
LGE_TOKENS = {"lge", "de", "mde", "psir", "delayed", "late", "viability", "pag", "lategad"}
EXCLUDE_TOKENS: dict[str, set[str]] = {
    "TI scout": {"tiscout", "looklocker", "locker", "tiscan"},
    "localizer": {
        "loc",
        "localizer",
        "localiser",
        "survey",
        "smartsurvey",
        "3pl",
        "scout",
        "tripilot",
    },
    "parametric map": {"map", "maps", "molli", "shmolli", "t1map", "t2map", "ecv", "saskia"},
    "cine": {"cine", "fiesta", "retro", "sbtfe", "trufi", "ssfp"},
    "perfusion": {"perf", "perfusion", "fpp", "firstpass"},
}


def tokens(*texts: str) -> set[str]:
    words: set[str] = set()
    for text in texts:
        parts = [p for p in re.split(r"[\W_]+", text.lower()) if p]
        words.update(parts)
        # Adjacent pairs catch split compounds such as "TI Scout" or "Look Locker".
        words.update(a + b for a, b in zip(parts, parts[1:], strict=False))
    return words


@dataclass
class Slice:
    """One 2D image: a single-frame file, or one frame of a multi-frame file."""

    path: str
    frame: int | None
    sop_instance_uid: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, float] | None
    slope: float | None
    intercept: float | None
    image_type: tuple[str, ...]
    inversion_time: float | None
    instance_number: float | None
    rows: int
    columns: int
    photometric: str
    location_mm: float = 0.0  # position along the stack normal, filled in by stack_geometry


@dataclass
class SeriesVerdict:
    key: str
    patient_id: str
    files: list[str]
    is_lge_sax: bool
    reason: str | None  # why not, when not
    kind: str | None = None  # psir | magnitude
    enhanced: bool = False
    slices: list[Slice] = field(default_factory=list)
    normal: tuple[float, float, float] | None = None
    series_number: float | None = None


def slices_of(records: list[dict]) -> list[Slice]:
    out = []
    for rec in records:
        if rec["frames"]:
            for i, fr in enumerate(rec["frames"]):
                out.append(
                    Slice(
                        rec["path"], i, rec["sop_instance_uid"], fr["position"],
                        fr["orientation"], fr["spacing"] or rec["pixel_spacing"],
                        fr["slope"], fr["intercept"], fr["frame_type"] or rec["image_type"],
                        fr["inversion_time"] or rec["inversion_time"], rec["instance_number"],
                        rec["rows"], rec["columns"], rec["photometric"],
                    )
                )  # fmt: skip
        else:
            # Legacy multi-frame files (no functional groups) share one geometry for all frames.
            frames = range(rec["n_frames"]) if rec["n_frames"] > 1 else [None]
            out.extend(
                Slice(
                    rec["path"], frame, rec["sop_instance_uid"], rec["position"],
                    rec["orientation"], rec["pixel_spacing"], rec["rescale_slope"],
                    rec["rescale_intercept"], rec["image_type"], rec["inversion_time"],
                    rec["instance_number"], rec["rows"], rec["columns"], rec["photometric"],
                )
                for frame in frames
            )  # fmt: skip
    return out


def _header_reason(records: list[dict]) -> str | None:
    """Why a series is not LGE, from its headers alone; None when it may be LGE."""
    first = records[0]
    if not any(r["rows"] and r["columns"] for r in records):
        return "not an image (no pixel matrix in header)"
    if first["sop_class_uid"].startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture"
    if first["modality"] != "MR":
        return f"not MR (modality {first['modality'] or 'missing'})"
    image_type = {v.upper() for r in records for v in r["image_type"][:2]}
    if image_type & {"DERIVED", "SECONDARY"}:
        return "derived/secondary image type"
    if any(v.upper() in {"MAP", "T1 MAP", "T2 MAP", "T1MAP"} for v in first["image_type"]):
        return "parametric map (image type)"
    words = tokens(first["series_description"], first["protocol_name"], first["sequence_name"])
    for category, vocab in EXCLUDE_TOKENS.items():
        if words & vocab and not (category == "localizer" and words & {"psir", "lge", "mde"}):
            return f"{category} (series description)"
    inversion_times = {round(r["inversion_time"]) for r in records if r["inversion_time"]}
    inversion_times |= {
        round(f["inversion_time"]) for r in records for f in r["frames"] if f["inversion_time"]
    }
    if len(inversion_times) >= 3:
        return "TI scout (several inversion times in one series)"
    scanning = {v.upper() for r in records for v in r["scanning_sequence"]}
    by_sequence = "IR" in scanning and any(150 <= t <= 700 for t in inversion_times)
    if not (words & LGE_TOKENS or by_sequence):
        return "not LGE (no LGE description token, no inversion-recovery timing)"
    return None


def lge_kind(slices: list[Slice], words: set[str]) -> str:
    """PSIR (real, phase-sensitive) or magnitude: ImageType value 3 first, then the name."""
    third = {s.image_type[2].upper() for s in slices if len(s.image_type) > 2}
    if "R" in third or "REAL" in third:
        return "psir"
    if "M" in third or "MAGNITUDE" in third:
        return "magnitude"
    return "magnitude" if words & {"mag", "magn", "magnitude"} or "psir" not in words else "psir"


def stack_geometry(
    slices: list[Slice], min_positions: int, tolerance_deg: float, max_axis_component: float
) -> tuple[str | None, tuple[float, float, float] | None]:
    """Check for a parallel, double-oblique stack; sort slices along its normal in place."""
    if any(s.orientation is None or s.position is None for s in slices):
        return "no geometry (orientation or position missing)", None
    orient = np.array([s.orientation for s in slices], dtype=float)
    normals = np.cross(orient[:, :3], orient[:, 3:])
    lengths = np.linalg.norm(normals, axis=1)
    if np.any(lengths < 1e-6):
        return "degenerate ImageOrientationPatient", None
    normals /= lengths[:, None]
    reference = normals[0]
    cos_tol = np.cos(np.deg2rad(tolerance_deg))
    if np.any(np.abs(normals @ reference) < cos_tol):
        return "not a short-axis stack: slices not parallel", None
    if np.max(np.abs(reference)) > max_axis_component:
        return "not double-oblique (axis-aligned stack)", None
    location = np.array([s.position for s in slices], dtype=float) @ reference
    for s, loc in zip(slices, location, strict=True):
        s.location_mm = float(loc)
    distinct = np.unique(np.round(location, 1))
    if distinct.size < min_positions:
        return f"only {distinct.size} slice positions (fewer than {min_positions})", None
    # Spatial order, never InstanceNumber: exports number slices base-to-apex or the reverse.
    slices.sort(key=lambda s: (round(s.location_mm, 1), s.instance_number or 0, s.frame or 0))
    return None, (float(reference[0]), float(reference[1]), float(reference[2]))


def classify_series(
    key: str,
    records: list[dict],
    min_positions: int,
    tolerance_deg: float,
    max_axis_component: float,
) -> SeriesVerdict:
    first = records[0]
    verdict = SeriesVerdict(
        key=key,
        patient_id=first["patient_id"],
        files=[r["path"] for r in records],
        is_lge_sax=False,
        reason=None,
        enhanced=bool(first["frames"]),
        series_number=first["series_number"],
    )
    verdict.reason = _header_reason(records)
    if verdict.reason:
        return verdict
    slices = slices_of(records)
    words = tokens(first["series_description"], first["protocol_name"], first["sequence_name"])
    verdict.kind = lge_kind(slices, words)
    reason, normal = stack_geometry(slices, min_positions, tolerance_deg, max_axis_component)
    if reason:
        verdict.reason = f"LGE but {reason}"
        return verdict
    verdict.is_lge_sax, verdict.slices, verdict.normal = True, slices, normal
    return verdict


def choose_stack(candidates: list[SeriesVerdict], prefer: str) -> SeriesVerdict:
    """One stack per patient: the preferred reconstruction, then the most slice positions."""
    return min(
        candidates,
        key=lambda v: (
            v.kind != prefer,
            -len({round(s.location_mm, 1) for s in v.slices}),
            v.series_number if v.series_number is not None else 1e9,
            v.key,
        ),
    )
