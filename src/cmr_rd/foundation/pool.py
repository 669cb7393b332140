"""The foundation stage's pretraining pool: synthetic LGE slices and their findings.

A real backbone (MedGemma-4B) arrives having seen images and followed instructions. The offline
tiny backbone is pretrained by the pipeline itself on a pool drawn from the project's own
generator under its own seed: other patients than the cohort's, rendered through ingestion's
own pixel path (stack-wide percentile normalisation, the square field of view or crop, the PNG
writer), so the pool's images look exactly like the ingested ones.

What each image carries are *findings* read off the rendered slice and its anatomy (cavity size,
wall thickness, where enhancement sits, trabeculation, slice level), never the diagnosis: the
general questions of `questions.py` are built from them.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cmr_rd.classes import CLASSES
from cmr_rd.ingest.pixels import normalise, resample, square_frame, to_png_bytes
from cmr_rd.synth import phantom as ph
from cmr_rd.synth.cohort import Delivery, PatientJob, SynthConfig, box_of, plan_patient, render_lge
from cmr_rd.synth.report import slice_level

# A slice shows enhancement when this many source pixels of myocardium carry at least
# ENHANCED_SHARE of the scar signal: below that a reader would not call it.
ENHANCED_SHARE = 0.35
MIN_ENHANCED_PIXELS = 8
WALLS = ("lateral", "anterior", "septal", "inferior")  # 90-degree sectors from phi = 0


@dataclass(frozen=True)
class PoolConfig:
    """Size and seed of the pool; mirrored by `foundation.pool` in the config schema."""

    patients: int = 240
    slices_per_patient: int = 4
    seed: int = 0
    lge_slices: int = 10
    matrix: int = 160

    def validate(self) -> None:
        if self.patients < len(CLASSES):
            raise ValueError(f"foundation.pool.patients must be at least {len(CLASSES)}")
        if not 1 <= self.slices_per_patient <= self.lge_slices:
            raise ValueError("foundation.pool.slices_per_patient must be in [1, lge_slices]")


@dataclass(frozen=True)
class Findings:
    """What one pool image shows, in the 256 frame; the source of every general question."""

    image: str  # path relative to the pool folder
    patient: str  # pool id, "pool<seed>-<index>": never a cohort pseudonym
    sha256: str
    level: str  # basal | mid | apical
    cavity: str  # small | normal | dilated
    cavity_mm: float
    thickness: str  # thin | normal | thick
    septum_mm: float
    lateral_mm: float
    thickest: str  # septum | uniform
    enhancement: bool
    enhanced_wall: str  # one of WALLS, "circumferential", or "" when none
    trabeculated: bool
    lv_box: list[float]
    enhanced_box: list[float] | None


def pool_jobs(cfg: PoolConfig, out_dir: Path) -> list[PatientJob]:
    """Patients drawn under the pool's seed, the classes' anatomies in turn: a general pool has
    every kind of heart, in equal measure (the class is the generator's input, not a target)."""
    synth = SynthConfig(lge_slices=cfg.lge_slices, matrix=cfg.matrix)
    return [
        PatientJob(synth, cfg.seed, i, CLASSES[i % len(CLASSES)], Delivery(), str(out_dir))
        for i in range(cfg.patients)
    ]


def _cavity_words(edd_mm: float) -> str:
    # The report generator's thresholds (synth.report._size_words), folded to three words.
    return "small" if edd_mm < 40 else "normal" if edd_mm <= 59 else "dilated"


def _thickness_words(max_mm: float) -> str:
    return "thin" if max_mm < 7.5 else "normal" if max_mm <= 12.0 else "thick"


def _enhanced_wall(enhanced: np.ndarray, lv: np.ndarray) -> str:
    """The wall an enhanced region sits on, from its pixels' angles round the LV centre.

    The SAX image's rows are the heart's X axis (lateral to the right) and its columns run
    against Y (anterior up), so the angle in the image is the anatomy's phi. Pixels spread all
    round (mean resultant length under 0.35) are circumferential.
    """
    cy, cx = (float(v.mean()) for v in np.nonzero(lv))
    ys, xs = np.nonzero(enhanced)
    angles = np.arctan2(-(ys - cy), xs - cx)
    resultant = math.hypot(float(np.cos(angles).mean()), float(np.sin(angles).mean()))
    if resultant < 0.35:
        return "circumferential"
    centre = math.degrees(math.atan2(float(np.sin(angles).mean()), float(np.cos(angles).mean())))
    return WALLS[int(((centre + 45.0) % 360.0) // 90.0)]


def _pool_slices(rng: np.random.Generator, n_slices: int, count: int) -> list[int]:
    """Slices from base to apex (levels are a question), the first and last left out."""
    candidates = np.arange(1, n_slices - 1)
    return sorted(int(k) for k in rng.choice(candidates, size=count, replace=False))


def render_patient(
    job: PatientJob,
    cfg: PoolConfig,
    out_dir: Path,
    image_size: int,
    crop_fov_mm: float | None,
    percentiles: tuple[float, float],
) -> list[Findings]:
    """Render one pool patient's PSIR stack and write the chosen slices as ingestion would."""
    plan = plan_patient(job)
    anat = plan.anatomy
    stack = render_lge(plan, np.random.default_rng(plan.noise_seed))
    normalised = normalise(stack.psir, percentiles)
    rows, cols = stack.psir[0].shape
    frame = square_frame(rows, cols, plan.geometry.spacing, image_size, crop_fov_mm)
    patient = f"pool{job.seed}-{job.index:05d}"
    folder = out_dir / "images" / patient
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    choose = np.random.default_rng([job.seed, job.index, 17])
    for k in _pool_slices(choose, anat.n_slices, min(cfg.slices_per_patient, anat.n_slices - 2)):
        maps = stack.maps[k]
        myo = maps.labels == ph.LV_MYO
        lv = myo | (maps.labels == ph.LV_BLOOD)
        lv_box = box_of(myo)
        if lv_box is None:
            continue  # past the apex: no ventricle to ask about
        png = to_png_bytes(resample(normalised[k], frame))
        rel = Path("images") / patient / f"{patient}_z{k:02d}.png"
        (out_dir / rel).write_bytes(png)
        enhanced = myo & (maps.enh >= ENHANCED_SHARE)
        has_enh = int(enhanced.sum()) >= MIN_ENHANCED_PIXELS
        enh_box = box_of(enhanced) if has_enh else None
        out_lv = frame.box(*lv_box)
        out_enh = frame.box(*enh_box) if enh_box else None
        if out_enh and not (out_enh[0] < out_enh[2] and out_enh[1] < out_enh[3]):
            out_enh = None
        out.append(
            Findings(
                image=rel.as_posix(),
                patient=patient,
                sha256=hashlib.sha256(png).hexdigest(),
                level=slice_level(k, anat.n_slices),
                cavity=_cavity_words(anat.edd_mm),
                cavity_mm=round(anat.edd_mm, 1),
                thickness=_thickness_words(anat.max_thickness),
                septum_mm=round(anat.t_sept, 1),
                lateral_mm=round(anat.t_free, 1),
                thickest="septum" if anat.t_sept - anat.t_free >= 3.0 else "uniform",
                enhancement=bool(has_enh and out_enh),
                enhanced_wall=_enhanced_wall(enhanced, lv) if has_enh and out_enh else "",
                trabeculated=bool(anat.lvnc_ratio > 0 and k >= anat.lvnc_from),
                lv_box=list(out_lv),
                enhanced_box=list(out_enh) if out_enh else None,
            )
        )
    return out


def _render(args: tuple) -> list[dict]:
    """One patient's findings records (top level, so spawn-based pools can run it)."""
    return [asdict(f) for f in render_patient(*args)]


def build_pool(
    cfg: PoolConfig,
    out_dir: Path,
    image_size: int = 256,
    crop_fov_mm: float | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    workers: int = 1,
) -> list[dict]:
    """Render the whole pool under out_dir/images; return one findings record per image, in
    patient order (the same bytes whatever the number of workers)."""
    cfg.validate()
    out_dir = Path(out_dir)
    tasks = [
        (job, cfg, out_dir, image_size, crop_fov_mm, tuple(percentiles))
        for job in pool_jobs(cfg, out_dir)
    ]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            per_patient = pool.map(_render, tasks, chunksize=4)
    else:
        per_patient = [_render(t) for t in tasks]
    return [record for records in per_patient for record in records]
