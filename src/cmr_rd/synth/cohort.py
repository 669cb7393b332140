"""Generate the synthetic LGE cohort: DICOM exams, NIfTI volumes, labels, boxes, PHI list.

The cohort stands in for a user's data in CI and on laptops, so it is built to exercise what
real exports throw at the ingestion: mixed series per exam, three vendors, double-oblique
geometry with non-spatial instance order, Enhanced MR multi-frame, compressed transfer syntaxes,
MONOCHROME1, NIfTI with varying slice axis, and PHI in headers, paths and report text.

Each patient draws from its own `default_rng([seed, patient_index])`, so the output is
byte-identical for a given (config, seed) whatever the number of workers.

Outputs under out_dir:
- `dicom/<LAST>_<FIRST>_<MRN>/<StudyDate>_CMR/<SeriesNumber>_<description>/<LAST>_<S>_<I>.dcm`
- `nifti/<MRN>.nii.gz`: one 3D LGE SAX volume (PSIR or magnitude); slice axis from the affine.
- `labels.csv` (patient_id, label, report): patient_id is the MRN = PatientID = NIfTI stem.
- `boxes.csv`: one row per LGE SAX image showing the MI lesion (PSIR and magnitude series, or
  the NIfTI slice). Boxes are tight, on pixel edges (pixel i spans [i, i+1)), in the stored
  image's pixel coordinates: x = column, y = row for DICOM (`frame` is 1-based for multi-frame
  files). For NIfTI, `slice_index` is the 0-based index along the array's slice axis; after
  removing that axis, y indexes the first remaining array axis and x the second.
- `phi_strings.json`: every PHI string planted anywhere (ground truth for leak tests), and under
  `burned_in` the overlays stamped into PSIR stacks' pixels (patient, tagged or not, lines).
- `cohort.json`: seed, config, counts; no PHI.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import multiprocessing
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from cmr_rd.classes import PAPER_COUNTS
from cmr_rd.synth import phantom as ph
from cmr_rd.synth.dicom_series import (
    VENDORS,
    Exam,
    Image2D,
    PixelCoding,
    SeriesSpec,
    StackGeometry,
    Vendor,
    Written,
    draw_geometry,
    write_series,
)
from cmr_rd.synth.overlay import font_size, overlay_lines, stamp
from cmr_rd.synth.report import Phi, label_text, make_phi, write_report

BOX_COLUMNS = (
    "patient_id",
    "series_kind",
    "sop_instance_uid",
    "frame",
    "slice_index",
    "x1",
    "y1",
    "x2",
    "y2",
)
# NIfTI array layouts, as permutations of the base axes (column, row, slice).
NIFTI_LAYOUTS: tuple[tuple[int, int, int], ...] = (
    (2, 0, 1),
    (0, 2, 1),
    (0, 1, 2),
    (2, 1, 0),
    (1, 2, 0),
    (1, 0, 2),
)
MIN_LESION_PIXELS = 4
_OUTPUTS = ("dicom", "nifti", "labels.csv", "boxes.csv", "phi_strings.json", "cohort.json")


@dataclass(frozen=True)
class SynthConfig:
    """Cohort size and delivery mix; mirrored by the `synthetic` block of the config schema."""

    scale: float = 0.02
    min_patients_per_class: int = 48
    lge_slices: int = 10
    matrix: int = 160
    nifti_share: float = 0.1
    enhanced_share: float = 0.15
    compressed_share: float = 0.15
    monochrome1_share: float = 0.05
    lax_share: float = 0.3
    cine_phases: int = 2
    burned_in_share: float = 0.0

    def validate(self) -> None:
        if self.lge_slices < 5:
            raise ValueError("lge_slices must be at least 5")
        if self.matrix < 64 or self.matrix % 2:
            raise ValueError("matrix must be an even number >= 64")
        if self.cine_phases < 1:
            raise ValueError("cine_phases must be at least 1")
        if self.scale < 0 or self.min_patients_per_class < 0:
            raise ValueError("scale and min_patients_per_class must be >= 0")
        for name in (
            "nifti_share",
            "enhanced_share",
            "compressed_share",
            "monochrome1_share",
            "lax_share",
            "burned_in_share",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")


def patients_per_class(cfg: SynthConfig) -> dict[str, int]:
    """Paper counts times scale, floored so every class fills test and probe splits."""
    return {
        c: max(cfg.min_patients_per_class, int(round(PAPER_COUNTS[c] * cfg.scale)))
        for c in ph.CLASSES
    }


@dataclass(frozen=True)
class Delivery:
    """How one patient reaches the user: the formats the ingestion must cope with."""

    nifti: bool = False
    enhanced: bool = False
    compression: str = ""  # "" | "rle" | "j2k"
    monochrome1: bool = False
    lax: bool = False
    nifti_kind: str = ""  # psir | magnitude
    nifti_layout: int = 0
    nifti_flip: bool = False
    # Text stamped into the PSIR stack: "" | "tagged" (BurnedInAnnotation YES) | "untagged" (NO)
    burned_in: str = ""


def plan_deliveries(cfg: SynthConfig, n: int, seed: int) -> list[Delivery]:
    """Exact shares (rounded) drawn at cohort level, so small cohorts still get every format."""
    rng = np.random.default_rng([seed, 1 << 40])
    order = rng.permutation(n)
    n_nifti = int(round(cfg.nifti_share * n))
    nifti = sorted(int(i) for i in order[:n_nifti])
    dicom = np.array(sorted(int(i) for i in order[n_nifti:]), dtype=int)

    def pick(share: float) -> list[int]:
        chosen = rng.permutation(dicom)[: int(round(share * dicom.size))]
        return sorted(int(i) for i in chosen)

    enhanced, compressed = set(pick(cfg.enhanced_share)), pick(cfg.compressed_share)
    mono, lax = set(pick(cfg.monochrome1_share)), set(pick(cfg.lax_share))
    codec = {i: ("rle", "j2k")[rank % 2] for rank, i in enumerate(compressed)}
    # Drawn last, so that adding burned-in text leaves every earlier draw of the cohort as it was.
    burned_ranks = enumerate(pick(cfg.burned_in_share))
    burned = {i: ("tagged", "untagged")[rank % 2] for rank, i in burned_ranks}
    out: list[Delivery] = []
    nifti_rank = {i: rank for rank, i in enumerate(nifti)}
    for i in range(n):
        if i in nifti_rank:
            r = nifti_rank[i]
            out.append(
                Delivery(
                    nifti=True,
                    nifti_kind=("psir", "magnitude")[r % 2],
                    nifti_layout=r % len(NIFTI_LAYOUTS),
                    nifti_flip=r % 4 == 3,
                )
            )
        else:
            out.append(
                Delivery(
                    enhanced=i in enhanced,
                    compression=codec.get(i, ""),
                    monochrome1=i in mono,
                    lax=i in lax,
                    burned_in=burned.get(i, ""),
                )
            )
    return out


@dataclass(frozen=True)
class PatientJob:
    cfg: SynthConfig
    seed: int
    index: int
    label: str
    delivery: Delivery
    out_dir: str


@dataclass(frozen=True)
class PatientPlan:
    """Everything drawn for one patient before any pixel is rendered."""

    job: PatientJob
    anatomy: ph.Anatomy
    body: ph.Body
    geometry: StackGeometry
    phi: Phi
    vendor: Vendor
    model: str
    field_strength: float
    label_text: str
    report: str
    order: tuple[int, ...]  # spatial slice index per InstanceNumber (or frame) position
    lge_desc: tuple[str, str]
    signal_scale: float
    noise_sigma: float
    shade: tuple[float, float]
    inversion_time: float
    study_description: str
    lge_comment: str
    series_step: tuple[int, ...]
    n_ti: int
    lax_angles: tuple[float, ...]
    lax_tilts: tuple[float, ...]
    station: str
    variant: int
    noise_seed: int


@dataclass
class PatientResult:
    index: int
    patient_id: str
    label_text: str
    report: str
    phi: list[str]
    boxes: list[tuple[object, ...]] = field(default_factory=list)
    files: int = 0
    delivery: Delivery = field(default_factory=Delivery)
    burned_in: dict | None = None  # the overlay planted in the pixels, if any


def _instance_order(rng: np.random.Generator, n: int) -> tuple[int, ...]:
    """Exports number slices base-to-apex, apex-to-base, interleaved or in acquisition order."""
    kind = rng.choice(["forward", "reverse", "interleaved", "shuffled"], p=[0.45, 0.35, 0.1, 0.1])
    if kind == "forward":
        return tuple(range(n))
    if kind == "reverse":
        return tuple(range(n - 1, -1, -1))
    if kind == "interleaved":
        return tuple(list(range(0, n, 2)) + list(range(1, n, 2)))
    return tuple(int(i) for i in rng.permutation(n))


def plan_patient(job: PatientJob) -> PatientPlan:
    """Draw anatomy, geometry, PHI, report and acquisition choices from the patient's rng."""
    rng = np.random.default_rng([job.seed, job.index])
    a_rng, g_rng, p_rng, r_rng, d_rng, n_rng = rng.spawn(6)
    anat = ph.draw_anatomy(job.label, a_rng, job.cfg.lge_slices)
    body = ph.draw_body(g_rng)
    geometry = draw_geometry(g_rng, job.cfg.matrix)
    phi = make_phi(p_rng, job.label, job.index, job.seed)
    vendor = VENDORS[phi.vendor]
    field_strength = 3.0 if d_rng.random() < 0.4 else 1.5
    report = write_report(anat, phi, r_rng, field_strength, vendor.manufacturer)
    study_description = (
        f"CMR VIABILITY {phi.patient.last.upper()}"
        if d_rng.random() < 0.35
        else str(
            d_rng.choice(
                [
                    "CARDIAC MRI^VIABILITY",
                    "MR HEART W WO CONTRAST",
                    "Cardiac^CMR_LGE",
                    "CMR STRESS/VIABILITY",
                ]
            )
        )
    )
    comment_style = int(d_rng.integers(3))
    lge_comment = (
        f"{phi.patient.dicom} {phi.mrn} LGE 10 min post contrast",
        "10 min post contrast",
        "",
    )[comment_style]
    step = vendor.series_step
    steps = tuple(
        step * int(d_rng.integers(1, 3)) if vendor.key == "siemens" else step for _ in range(7)
    )
    n_lax = int(d_rng.integers(2, 4))
    return PatientPlan(
        job=job,
        anatomy=anat,
        body=body,
        geometry=geometry,
        phi=phi,
        vendor=vendor,
        model=str(d_rng.choice(vendor.models)),
        field_strength=field_strength,
        label_text=label_text(job.label, d_rng),
        report=report,
        order=_instance_order(d_rng, job.cfg.lge_slices),
        lge_desc=vendor.lge[int(d_rng.integers(len(vendor.lge)))],
        signal_scale=1100.0 * float(d_rng.uniform(0.75, 1.25)),
        noise_sigma=float(d_rng.uniform(0.025, 0.05)),
        shade=(float(d_rng.uniform(-0.12, 0.12)), float(d_rng.uniform(-0.12, 0.12))),
        inversion_time=float(round(d_rng.uniform(250, 350))),
        study_description=study_description,
        lge_comment=lge_comment,
        series_step=steps,
        n_ti=int(d_rng.integers(6, 9)),
        lax_angles=tuple(float(a + d_rng.uniform(-12, 12)) for a in (0.0, 90.0, 130.0)[:n_lax]),
        lax_tilts=tuple(float(d_rng.uniform(-20, 20)) for _ in range(n_lax)),
        station=f"{vendor.key[:2].upper()}MR{int(d_rng.integers(10000, 99999))}",
        variant=int(d_rng.integers(1 << 16)),
        noise_seed=int(n_rng.integers(1 << 62)),
    )


# ----------------------------------------------------------------------------- rendering


def _plane(
    anat: ph.Anatomy,
    body: ph.Body,
    frame: ph.Frame,
    top_left: np.ndarray,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    rows: int,
    cols: int,
    spacing: tuple[float, float],
    contraction: float = 0.0,
) -> ph.TissueMaps:
    pts = ph.plane_points(top_left, row_dir, col_dir, rows, cols, spacing)
    return ph.render_points(anat, body, frame, pts, contraction)


@dataclass
class LgeStack:
    psir: list[np.ndarray]  # real-world PSIR values per spatial slice
    magnitude: list[np.ndarray]
    lesion: list[np.ndarray]
    maps: list[ph.TissueMaps]


def render_lge(plan: PatientPlan, rng: np.random.Generator) -> LgeStack:
    """The LGE SAX stack in real units; magnitude is |PSIR + complex noise| (Rician)."""
    g, anat = plan.geometry, plan.anatomy
    frame = g.frame()
    shade = ph.shading((g.rows, g.cols), *plan.shade)
    out = LgeStack([], [], [], [])
    for k in range(anat.n_slices):
        maps = _plane(
            anat, plan.body, frame, g.top_left(k), g.row_dir, g.col_dir, g.rows, g.cols, g.spacing
        )
        true = ph.blur(ph.lge_signal(maps, anat, plan.body)) * shade * plan.signal_scale
        real, mag = ph.complex_noise(true, plan.noise_sigma * plan.signal_scale, rng)
        out.psir.append(real)
        out.magnitude.append(mag)
        out.lesion.append(maps.lesion)
        out.maps.append(maps)
    return out


def box_of(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight box (x = second axis, y = first axis), pixel edges: pixel i spans [i, i+1)."""
    if int(mask.sum()) < MIN_LESION_PIXELS:
        return None
    ys, xs = np.nonzero(mask)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def _rician(true: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return ph.complex_noise(true, sigma, rng)[1]


def _series_numbers(plan: PatientPlan) -> list[int]:
    numbers, current = [], 0
    for step in plan.series_step:
        current += step
        numbers.append(current + (1 if plan.vendor.key == "philips" else 0))
    return numbers


def build_exam(plan: PatientPlan) -> Exam:
    phi, job = plan.phi, plan.job
    return Exam(
        seed=job.seed,
        index=job.index,
        patient_name=phi.patient.dicom,
        patient_id=phi.mrn,
        birth_date=phi.dicom_date(phi.birth),
        sex=phi.sex,
        age=f"{phi.age:03d}Y",
        weight=float(phi.weight_kg),
        height=phi.height_m,
        study_date=phi.dicom_date(phi.study),
        study_time=phi.study_time,
        accession=phi.accession,
        study_description=plan.study_description,
        institution=phi.institution,
        address=phi.address,
        referring=phi.referring_dicom,
        performing=phi.radiologist_dicom,
        operator=phi.operator.dicom,
        vendor=plan.vendor,
        model=plan.model,
        field_strength=plan.field_strength,
        station=plan.station,
        private_note=f"scanned for {phi.patient.full}",
        file_stem=phi.patient.last.upper(),
        compression=job.delivery.compression,
        monochrome1=job.delivery.monochrome1,
    )


def _dicom_series(plan: PatientPlan, stack: LgeStack, rng: np.random.Generator) -> list[SeriesSpec]:
    """The exam's series, in acquisition order, like a real CMR viability protocol."""
    g, anat, vendor, body = plan.geometry, plan.anatomy, plan.vendor, plan.body
    frame = g.frame()
    n = anat.n_slices
    mid = anat.mid_slice
    numbers = _series_numbers(plan)
    shade = ph.shading((g.rows, g.cols), *plan.shade)
    mag = PixelCoding(
        vendor.magnitude.slope, vendor.magnitude.intercept, 12, vendor.magnitude.rescale
    )
    d = plan.variant  # picks the description variants of this patient's series

    def pick(options: tuple[str, ...]) -> str:
        return options[d % len(options)]

    def sax_image(real: np.ndarray, k: int, attrs: dict[str, object] | None = None) -> Image2D:
        return Image2D(real, g.top_left(k), g.row_dir, g.col_dir, g.spacing, k, attrs or {})

    specs: list[SeriesSpec] = []
    # 1. localizer: three orthogonal planes through the heart
    centre = g.lv_base + 0.5 * anat.length * g.apex_dir
    m = g.rows
    sp = round(380.0 / m, 4)
    planes = (
        (np.array([1.0, 0, 0]), np.array([0, 1.0, 0])),
        (np.array([1.0, 0, 0]), np.array([0, 0, -1.0])),
        (np.array([0, 1.0, 0]), np.array([0, 0, -1.0])),
    )
    loc_images = []
    for i, (r, c) in enumerate(planes):
        tl = centre - 0.5 * (m - 1) * sp * (r + c)
        maps = _plane(anat, body, frame, tl, r, c, m, m, (sp, sp))
        real = _rician(ph.blur(ph.cine_signal(maps)) * 600.0, 18.0, rng)
        loc_images.append(Image2D(real, tl, r, c, (sp, sp), i))
    loc_desc = pick(vendor.localizer)
    specs.append(
        SeriesSpec(
            "localizer",
            "other",
            numbers[0],
            loc_desc,
            vendor.protocol.format(d=loc_desc),
            ("ORIGINAL", "PRIMARY", "M"),
            "GR",
            vendor.cine_sequence,
            loc_images,
            mag,
            minutes=0.0,
            slice_thickness=10.0,
            attrs={"RepetitionTime": 3.2, "EchoTime": 1.4, "FlipAngle": 50.0},
        )
    )
    # 2. cine SAX bSSFP: phases per slice, end-diastole (shared maps) to end-systole
    phases = plan.job.cfg.cine_phases
    rr = 60000.0 / 68.0
    cine_images = []
    cine_scale = 700.0 * plan.signal_scale / 1100.0
    for k in range(n):
        for p in range(phases):
            contraction = 0.5 * (1.0 - np.cos(2.0 * np.pi * p / phases)) if phases > 1 else 0.0
            maps = (
                stack.maps[k]
                if p == 0
                else _plane(
                    anat,
                    body,
                    frame,
                    g.top_left(k),
                    g.row_dir,
                    g.col_dir,
                    g.rows,
                    g.cols,
                    g.spacing,
                    contraction,
                )
            )
            real = _rician(ph.blur(ph.cine_signal(maps)) * shade * cine_scale, 20.0, rng)
            cine_images.append(sax_image(real, k, {"TriggerTime": round(p * rr / phases, 1)}))
    cine_desc = pick(vendor.cine)
    specs.append(
        SeriesSpec(
            "cine_sax",
            "other",
            numbers[1],
            cine_desc,
            vendor.protocol.format(d=cine_desc),
            ("ORIGINAL", "PRIMARY", "M"),
            "GR",
            vendor.cine_sequence,
            cine_images,
            mag,
            minutes=4.0,
            spacing_between=10.0,
            attrs={
                "RepetitionTime": 3.1,
                "EchoTime": 1.3,
                "FlipAngle": 60.0,
                "CardiacNumberOfImages": phases,
            },
        )
    )
    # 3. native T1 map (MOLLI): base, mid, apex
    t1_images = []
    for k in sorted({1, mid, n - 2}):
        t1 = ph.t1_signal(stack.maps[k], anat)
        noisy = t1 + rng.normal(0.0, 25.0, t1.shape).astype(np.float32) * (t1 > 0)
        t1_images.append(sax_image(np.clip(ph.blur(noisy, 0.5), 0, 4000), k))
    t1_desc = pick(vendor.t1map)
    specs.append(
        SeriesSpec(
            "t1_map",
            "other",
            numbers[2],
            t1_desc,
            vendor.protocol.format(d=t1_desc),
            vendor.t1_image_type,
            "GR",
            "*tfi2d1_192",
            t1_images,
            PixelCoding(),
            minutes=12.0,
            attrs={"RepetitionTime": 2.6, "EchoTime": 1.1, "FlipAngle": 35.0},
        )
    )
    # 4. TI scout (Look-Locker) at the mid slice
    ti_images = []
    for ti in np.linspace(100.0, 400.0, plan.n_ti):
        sig = ph.ti_signal(stack.maps[mid], anat, float(ti))
        real = _rician(ph.blur(sig) * shade * 900.0, 20.0, rng)
        ti_images.append(
            Image2D(
                real,
                g.top_left(mid),
                g.row_dir,
                g.col_dir,
                g.spacing,
                mid,
                {"InversionTime": float(round(ti)), "TriggerTime": 0.0},
            )
        )
    ti_desc = pick(vendor.ti_scout)
    specs.append(
        SeriesSpec(
            "ti_scout",
            "other",
            numbers[3],
            ti_desc,
            vendor.protocol.format(d=ti_desc),
            ("ORIGINAL", "PRIMARY", "M"),
            "GR\\IR",
            vendor.cine_sequence,
            ti_images,
            mag,
            minutes=24.0,
            attrs={"RepetitionTime": 2.8, "EchoTime": 1.2, "FlipAngle": 20.0},
        )
    )
    # 5-6. LGE SAX PSIR and magnitude, same slices, in the patient's instance order
    psir_desc, mag_desc = plan.lge_desc
    scanning = vendor.lge_scanning[d % len(vendor.lge_scanning)]
    lge_attrs = {
        "InversionTime": plan.inversion_time,
        "RepetitionTime": 700.0,
        "EchoTime": 1.2 if vendor.key == "siemens" else 3.1,
        "FlipAngle": 25.0 if vendor.key != "ge" else 20.0,
        "TriggerTime": 390.0,
        "ContrastBolusAgent": "Gadobutrol",
    }
    enhanced = plan.job.delivery.enhanced
    burned_in = plan.job.delivery.burned_in
    psir_images = stack.psir
    if burned_in:
        lines, size = overlay_lines(plan.phi, plan.job.index), font_size(g.rows)
        psir_images = [stamp(real, lines, size) for real in stack.psir]
    for key, kind, desc, images, coding, ctype, itype, minutes in (
        ("lge_psir", "psir", psir_desc, psir_images, vendor.psir, "REAL", "R", 30.0),
        ("lge_magnitude", "magnitude", mag_desc, stack.magnitude, mag, "MAGNITUDE", "M", 30.0),
    ):
        attrs = dict(lge_attrs)
        if key == "lge_psir" and burned_in == "tagged":
            attrs["BurnedInAnnotation"] = "YES"
        specs.append(
            SeriesSpec(
                key,
                kind,
                numbers[4 if kind == "psir" else 5],
                desc,
                vendor.protocol.format(d=psir_desc),
                ("ORIGINAL", "PRIMARY", itype),
                scanning,
                vendor.lge_sequence,
                [sax_image(images[k], k) for k in plan.order],
                coding,
                complex_component=ctype,
                enhanced=enhanced,
                minutes=minutes,
                spacing_between=10.0,
                attrs=attrs,
                comments=plan.lge_comment,
            )
        )
    # 7. LGE long-axis views (not parallel), for some patients
    if plan.job.delivery.lax:
        lax_images = []
        ez, ex, ey = frame.ez, frame.ex, frame.ey
        lax_centre = frame.origin + 0.35 * anat.length * ez
        for i, (ang, tilt) in enumerate(zip(plan.lax_angles, plan.lax_tilts, strict=True)):
            u = np.cos(np.radians(ang)) * ex + np.sin(np.radians(ang)) * ey
            w = -ez
            t = np.radians(tilt)
            r = np.cos(t) * u + np.sin(t) * w
            c = -np.sin(t) * u + np.cos(t) * w
            tl = (
                lax_centre
                - 0.5 * (g.cols - 1) * g.spacing[1] * r
                - 0.5 * (g.rows - 1) * g.spacing[0] * c
            )
            maps = _plane(anat, body, frame, tl, r, c, g.rows, g.cols, g.spacing)
            true = ph.blur(ph.lge_signal(maps, anat, body)) * shade * plan.signal_scale
            real = _rician(true, plan.noise_sigma * plan.signal_scale, rng)
            lax_images.append(Image2D(real, tl, r, c, g.spacing, i))
        lax_desc = pick(vendor.lax)
        specs.append(
            SeriesSpec(
                "lge_lax",
                "other",
                numbers[6],
                lax_desc,
                vendor.protocol.format(d=lax_desc),
                ("ORIGINAL", "PRIMARY", "M"),
                scanning,
                vendor.lge_sequence,
                lax_images,
                mag,
                minutes=36.0,
                attrs=dict(lge_attrs),
            )
        )
    return specs


def _write_nifti(plan: PatientPlan, stack: LgeStack, path: Path) -> list[tuple[object, ...]]:
    """One 3D LGE volume; the affine carries the oblique geometry, the slice axis varies.

    Boxes: `slice_index` indexes the array's slice axis; after removing that axis, y indexes
    the first remaining array axis and x the second (pixel edges, as for DICOM).
    """
    g, dl = plan.geometry, plan.job.delivery
    data = np.stack(stack.psir if dl.nifti_kind == "psir" else stack.magnitude)  # (k, row, col)
    lesion = np.stack(stack.lesion)
    base = data.transpose(2, 1, 0)  # (col, row, slice): NIfTI i, j, k
    base_lesion = lesion.transpose(2, 1, 0)
    cols = np.stack(
        [g.row_dir * g.spacing[1], g.col_dir * g.spacing[0], g.apex_dir * ph.SLICE_GAP_MM], axis=1
    )
    offset = g.top_left(0)
    if dl.nifti_flip:
        base, base_lesion = base[:, :, ::-1], base_lesion[:, :, ::-1]
        offset = offset + cols[:, 2] * (base.shape[2] - 1)
        cols = cols.copy()
        cols[:, 2] = -cols[:, 2]
    perm = NIFTI_LAYOUTS[dl.nifti_layout]
    arr = np.ascontiguousarray(base.transpose(perm))
    les = base_lesion.transpose(perm)
    affine = np.eye(4)
    affine[:3, :3] = cols[:, list(perm)]
    affine[:3, 3] = offset
    affine[:2, :] *= -1.0  # LPS -> RAS
    if dl.nifti_kind == "psir":
        arr = np.round(arr, 1).astype(np.float32)
    else:
        arr = np.clip(np.rint(arr), 0, 32767).astype(np.int16)
    img = nib.Nifti1Image(arr, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = f"LGE SAX {dl.nifti_kind.upper()}".encode()
    buf = io.BytesIO()
    buf.write(img.to_bytes())
    path.write_bytes(gzip.compress(buf.getvalue(), compresslevel=6, mtime=0))
    slice_axis = perm.index(2)
    rows: list[tuple[object, ...]] = []
    if plan.anatomy.label != "MI":
        return rows
    for s in range(les.shape[slice_axis]):
        box = box_of(np.take(les, s, axis=slice_axis))
        if box:
            rows.append((plan.phi.mrn, "nifti", "", "", s, *box))
    return rows


def build_patient(job: PatientJob) -> PatientResult:
    """Render and write one patient (a top-level function, so spawn-based pools can run it)."""
    plan = plan_patient(job)
    rng = np.random.default_rng(plan.noise_seed)
    stack = render_lge(plan, rng)
    out_dir = Path(job.out_dir)
    result = PatientResult(
        job.index,
        plan.phi.mrn,
        plan.label_text,
        plan.report,
        plan.phi.strings(),
        delivery=job.delivery,
    )
    if job.delivery.burned_in:
        lines = overlay_lines(plan.phi, job.index)
        result.phi = sorted({*result.phi, *lines})
        result.burned_in = {
            "patient_id": plan.phi.mrn,
            "series": "lge_psir",
            "tagged": job.delivery.burned_in == "tagged",
            "lines": lines,
        }
    if job.delivery.nifti:
        result.boxes = _write_nifti(plan, stack, out_dir / "nifti" / f"{plan.phi.mrn}.nii.gz")
        result.files = 1
        return result
    exam = build_exam(plan)
    study_dir = (
        out_dir / "dicom" / plan.phi.folder_name / f"{plan.phi.dicom_date(plan.phi.study)}_CMR"
    )
    written: list[Written] = []
    for spec in _dicom_series(plan, stack, rng):
        written.extend(write_series(exam, spec, study_dir))
    result.files = len({w.path for w in written})
    if plan.anatomy.label == "MI":
        for w in written:
            if w.kind not in ("psir", "magnitude"):
                continue
            box = box_of(stack.lesion[w.spatial_index])
            if box:
                result.boxes.append(
                    (plan.phi.mrn, w.kind, w.sop_uid, "" if w.frame is None else w.frame, "", *box)
                )
    return result


# ----------------------------------------------------------------------------- cohort


def _clean(out_dir: Path) -> None:
    """Remove only what a previous generation wrote: never anything else in out_dir."""
    for name in _OUTPUTS:
        p = out_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def _fmt(v: object) -> object:
    return f"{v:.1f}" if isinstance(v, float) else v


def patient_jobs(cfg: SynthConfig, seed: int, out_dir: Path) -> list[PatientJob]:
    """One job per patient, classes in the canonical order; the index seeds its rng."""
    counts = patients_per_class(cfg)
    labels = [c for c in ph.CLASSES for _ in range(counts[c])]
    deliveries = plan_deliveries(cfg, len(labels), seed)
    return [
        PatientJob(cfg, seed, i, lab, deliveries[i], str(out_dir)) for i, lab in enumerate(labels)
    ]


def generate_cohort(cfg: SynthConfig, out_dir: Path, seed: int, workers: int = 1) -> dict:
    """Write the cohort under out_dir and return the summary also saved as cohort.json."""
    cfg.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clean(out_dir)
    (out_dir / "dicom").mkdir()
    (out_dir / "nifti").mkdir()
    counts = patients_per_class(cfg)
    jobs = patient_jobs(cfg, seed, out_dir)
    if workers > 1 and len(jobs) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs))) as pool:
            results = list(pool.imap(build_patient, jobs, chunksize=2))
    else:
        results = [build_patient(j) for j in jobs]
    results.sort(key=lambda r: r.index)

    with open(out_dir / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["patient_id", "label", "report"])
        for r in results:
            w.writerow([r.patient_id, r.label_text, r.report])
    with open(out_dir / "boxes.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(BOX_COLUMNS)
        for r in results:
            for row in r.boxes:
                w.writerow([_fmt(v) for v in row])
    phi = sorted({s for r in results for s in r.phi})
    burned_in = [r.burned_in for r in results if r.burned_in]
    (out_dir / "phi_strings.json").write_text(
        json.dumps({"strings": phi, "burned_in": burned_in}, indent=1) + "\n", encoding="utf-8"
    )
    dl = [r.delivery for r in results]
    summary = {
        "seed": seed,
        "config": asdict(cfg),
        "patients_per_class": counts,
        "patients": len(results),
        "delivery": {
            "dicom": sum(not d.nifti for d in dl),
            "nifti": sum(d.nifti for d in dl),
            "enhanced": sum(d.enhanced for d in dl),
            "compressed_rle": sum(d.compression == "rle" for d in dl),
            "compressed_j2k": sum(d.compression == "j2k" for d in dl),
            "monochrome1": sum(d.monochrome1 for d in dl),
            "lax": sum(d.lax for d in dl),
            "burned_in_tagged": sum(d.burned_in == "tagged" for d in dl),
            "burned_in_untagged": sum(d.burned_in == "untagged" for d in dl),
        },
        "files_written": {
            "dicom": sum(r.files for r in results if not r.delivery.nifti),
            "nifti": sum(r.files for r in results if r.delivery.nifti),
        },
        "mi_boxes": sum(len(r.boxes) for r in results),
    }
    (out_dir / "cohort.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary
