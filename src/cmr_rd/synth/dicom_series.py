"""Building and writing DICOM series the way scanners export them.

Vendors differ in descriptions, sequence names, series numbering and how signed PSIR values
are stored (unsigned plus a rescale intercept), so the ingestion must read headers rather than
assume one scanner. Geometry is a double-oblique short-axis stack. Optional per-patient
encodings: Enhanced MR multi-frame, RLE / JPEG 2000 lossless compression, MONOCHROME1.

Everything is deterministic: UIDs hash (seed, patient, series, instance), times come from the
drawn study time, and pydicom writes elements in tag order.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from cmr_rd.synth.phantom import SLICE_GAP_MM, Frame

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
SLICE_THICKNESS_MM = 8.0
PRIVATE_CREATOR = "CMRRD SYNTH PRIV"


def make_uid(seed: int, patient: int, series: str, instance: int) -> str:
    """Deterministic UID under the 2.25 (UUID-derived) root; no entropy, no clock."""
    digest = hashlib.sha256(f"{seed}|{patient}|{series}|{instance}".encode()).hexdigest()
    return "2.25." + str(int(digest, 16))[:38]


def sanitise(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "series"


# ----------------------------------------------------------------------------- vendors


@dataclass(frozen=True)
class PixelCoding:
    """How real values become stored unsigned integers: real = slope * stored + intercept."""

    slope: float = 1.0
    intercept: float = 0.0
    bits: int = 12
    rescale: bool = False  # write RescaleSlope/Intercept (the modality LUT)

    @property
    def max_stored(self) -> int:
        return (1 << self.bits) - 1

    def encode(self, real: np.ndarray) -> np.ndarray:
        stored = np.rint((real - self.intercept) / self.slope)
        return np.clip(stored, 0, self.max_stored).astype("<u2")


@dataclass(frozen=True)
class Vendor:
    key: str
    manufacturer: str
    models: tuple[str, ...]
    software: str
    localizer: tuple[str, ...]
    cine: tuple[str, ...]
    t1map: tuple[str, ...]
    t1_image_type: tuple[str, ...]
    ti_scout: tuple[str, ...]
    lge: tuple[tuple[str, str], ...]  # (PSIR, magnitude) description pairs
    lax: tuple[str, ...]
    lge_scanning: tuple[str, ...]
    lge_sequence: str
    cine_sequence: str
    psir: PixelCoding
    magnitude: PixelCoding
    series_step: int
    protocol: str  # ProtocolName flavour, formatted with the description


VENDORS: dict[str, Vendor] = {
    "siemens": Vendor(
        "siemens",
        "SIEMENS",
        ("Aera", "Skyra", "Avanto_fit", "Prisma"),
        "syngo MR E11",
        ("localizer", "Loc_3Pl"),
        ("cine_sax", "CINE_retro_SAX", "trufi_cine_sax_retro"),
        ("MOLLI_T1_MAP", "ShMOLLI_T1MAP"),
        ("DERIVED", "PRIMARY", "T1 MAP"),
        ("TI_Scout", "TI_Scout_trufi"),
        (
            ("de_TrueFISP_PSIR_SAX", "de_TrueFISP_PSIR_SAX_MAG"),
            ("tfl_LGE_psir_sa", "tfl_LGE_psir_sa_MAG"),
        ),
        ("de_TrueFISP_PSIR_LAX", "LGE_LAX_mag"),
        ("GR\\IR", "IR\\GR"),
        "*tfi2d1_79",
        "*tfi2d1_12",
        PixelCoding(2.0, -4096.0, 12, True),
        PixelCoding(),
        1,
        "{d}",
    ),
    "ge": Vendor(
        "ge",
        "GE MEDICAL SYSTEMS",
        ("SIGNA Artist", "Optima MR450w", "Discovery MR750w"),
        "DV26.0_R03",
        ("3-plane loc", "3Plane Loc SSFP"),
        ("FIESTA CINE SAX", "Cine FIESTA SA"),
        ("T1 Map MOLLI", "MOLLI T1 map"),
        ("DERIVED", "PRIMARY", "MAP"),
        ("TI SCOUT", "TI Scout FGRE"),
        (("MDE SAX PSIR", "MDE SAX MAG"), ("2D_MDE_PSIR_SA", "2D_MDE_MAG_SA")),
        ("MDE LAX", "MDE 2-3-4CH"),
        ("GR", "IR"),
        "fgre_mde",
        "fiesta_cine",
        PixelCoding(1.0, -4096.0, 13, True),
        PixelCoding(),
        1,
        "CARDIAC/{d}",
    ),
    "philips": Vendor(
        "philips",
        "Philips Medical Systems",
        ("Ingenia", "Achieva", "Ingenia Elition X"),
        "5.6.1",
        ("Survey", "SmartSurvey"),
        ("sBTFE_SA", "BTFE_BH_SA_cine"),
        ("T1 Map MOLLI", "MOLLI_T1MAP_SA"),
        ("DERIVED", "PRIMARY", "T1 MAP"),
        ("Look_Locker_TI", "LL_TI_scout"),
        (("LGE_SA_PSIR", "LGE_SA_MAG"), ("sa_psir_tfe", "sa_psir_tfe_MAG")),
        ("LGE_4CH", "LGE_LAX"),
        ("GR",),
        "T1TFE",
        "BTFE",
        PixelCoding(1.0, -2048.0, 12, True),
        PixelCoding(1.0, 0.0, 12, True),
        100,
        "WIP {d}",
    ),
}


# ----------------------------------------------------------------------------- geometry


def _rotation(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    a = np.radians(angle_deg)
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(a) * kx + (1 - np.cos(a)) * (kx @ kx)


@dataclass(frozen=True)
class StackGeometry:
    """A double-oblique SAX stack, planned like a radiographer plans one.

    The image normal (row x column, from ImageOrientationPatient) points from the apex towards
    the base, so with anterior up the RV lies on the left of the image, as SAX stacks are read.
    Slice k (0 = base) sits 10 mm * k further towards the apex.
    """

    normal: np.ndarray
    row_dir: np.ndarray  # direction of increasing column index (IOP first triplet)
    col_dir: np.ndarray  # direction of increasing row index
    spacing: tuple[float, float]  # DICOM PixelSpacing: (between rows, between columns)
    rows: int
    cols: int
    lv_base: np.ndarray  # LV centre on the basal slice, patient LPS mm
    lv_offset: tuple[float, float]  # LV centre minus image centre: (right, down) mm

    @property
    def apex_dir(self) -> np.ndarray:
        return -self.normal

    def top_left(self, k: float) -> np.ndarray:
        dx, dy = self.lv_offset
        centre = (
            self.lv_base + SLICE_GAP_MM * k * self.apex_dir - dx * self.row_dir - dy * self.col_dir
        )
        return (
            centre
            - 0.5 * (self.cols - 1) * self.spacing[1] * self.row_dir
            - 0.5 * (self.rows - 1) * self.spacing[0] * self.col_dir
        )

    def frame(self) -> Frame:
        return Frame(self.lv_base, self.row_dir, -self.col_dir, self.apex_dir)


def draw_geometry(rng: np.random.Generator, matrix: int) -> StackGeometry:
    """Plan a SAX stack: normal along the LV long axis (oblique to every patient axis),
    anterior up, LV within 10 mm of the image centre."""
    while True:  # LV long axis, base to apex: towards patient left, anterior, inferior (LPS)
        apex = np.array([0.55, -0.45, -0.7]) + rng.uniform(-0.15, 0.15, 3)
        apex /= np.linalg.norm(apex)
        if np.max(np.abs(apex)) < 0.88 and np.min(np.abs(apex)) > 0.25:
            break
    n = -apex
    post = np.array([0.0, 1.0, 0.0])
    c = post - (post @ n) * n  # down on the image: posterior
    c = _rotation(n, float(rng.uniform(-15, 15))) @ (c / np.linalg.norm(c))
    c /= np.linalg.norm(c)
    r = np.cross(c, n)  # so that row x column = normal
    dr = round(float(rng.uniform(1.3, 1.9)), 4)
    dc = round(float(np.clip(dr * rng.uniform(0.96, 1.04), 1.3, 1.9)), 4)
    cols = int(round(0.8 * matrix / 2.0)) * 2
    base = np.array([rng.uniform(10, 40), rng.uniform(-60, -30), rng.uniform(-40, 20)])
    return StackGeometry(
        n,
        r,
        c,
        (dr, dc),
        matrix,
        cols,
        base,
        (float(rng.uniform(-10, 10)), float(rng.uniform(-10, 10))),
    )


# ----------------------------------------------------------------------------- series specs


@dataclass
class Image2D:
    """One image in real-world units, with its plane."""

    real: np.ndarray
    position: np.ndarray
    row_dir: np.ndarray
    col_dir: np.ndarray
    spacing: tuple[float, float]
    spatial_index: int
    attrs: dict[str, object] = field(default_factory=dict)


@dataclass
class SeriesSpec:
    key: str  # stable name used in UIDs ("lge_psir", ...)
    kind: str  # psir | magnitude | other (for the boxes table)
    number: int
    description: str
    protocol: str
    image_type: tuple[str, ...]
    scanning_sequence: str
    sequence_name: str
    images: list[Image2D]  # in InstanceNumber (or frame) order
    coding: PixelCoding
    complex_component: str = "MAGNITUDE"
    enhanced: bool = False
    minutes: float = 0.0  # acquisition time after the study start
    slice_thickness: float = SLICE_THICKNESS_MM
    spacing_between: float | None = None
    attrs: dict[str, object] = field(default_factory=dict)
    comments: str = ""


@dataclass(frozen=True)
class Exam:
    """Patient, study and equipment attributes shared by every file of one exam (PHI here)."""

    seed: int
    index: int
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    age: str
    weight: float
    height: float
    study_date: str
    study_time: str
    accession: str
    study_description: str
    institution: str
    address: str
    referring: str
    performing: str
    operator: str
    vendor: Vendor
    model: str
    field_strength: float
    station: str
    private_note: str
    file_stem: str  # LASTNAME, as exports name files
    compression: str = ""  # "" | "rle" | "j2k"
    monochrome1: bool = False


@dataclass(frozen=True)
class Written:
    path: Path
    sop_uid: str
    frame: int | None  # 1-based frame for multi-frame files
    spatial_index: int
    kind: str


def _time(hhmmss: str, seconds: float) -> str:
    h, m, s = int(hhmmss[:2]), int(hhmmss[2:4]), int(hhmmss[4:6])
    total = (h * 3600 + m * 60 + s + int(round(seconds))) % 86400
    return f"{total // 3600:02d}{total % 3600 // 60:02d}{total % 60:02d}"


def _ds(value: float, nd: int = 4) -> float:
    """Round for a DS element (16 chars max) so the written text is stable."""
    return float(round(float(value), nd))


def _window(real: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(real[::3, ::3], [1.0, 99.5])  # a subsample is plenty for a window
    return float(round((lo + hi) / 2.0)), float(max(1.0, round(hi - lo)))


def _common(ds: Dataset, exam: Exam, spec: SeriesSpec, series_uid: str) -> None:
    """Patient / study / series / equipment modules, identical for every image of a series."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = "MR"
    ds.PatientName = exam.patient_name
    ds.PatientID = exam.patient_id
    ds.PatientBirthDate = exam.birth_date
    ds.PatientSex = exam.sex
    ds.PatientAge = exam.age
    ds.PatientWeight = exam.weight
    ds.PatientSize = exam.height
    ds.StudyInstanceUID = make_uid(exam.seed, exam.index, "study", 0)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = exam.study_date
    ds.StudyTime = exam.study_time
    ds.SeriesTime = _time(exam.study_time, 60 * spec.minutes)
    ds.StudyID = str(1 + exam.index % 9000)
    ds.AccessionNumber = exam.accession
    ds.StudyDescription = exam.study_description
    ds.ReferringPhysicianName = exam.referring
    ds.PerformingPhysicianName = exam.performing
    ds.OperatorsName = exam.operator
    ds.InstitutionName = exam.institution
    ds.InstitutionAddress = exam.address
    ds.InstitutionalDepartmentName = "Cardiac MRI"
    ds.StationName = exam.station
    ds.Manufacturer = exam.vendor.manufacturer
    ds.ManufacturerModelName = exam.model
    ds.SoftwareVersions = exam.vendor.software
    ds.MagneticFieldStrength = exam.field_strength
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = spec.number
    ds.SeriesDescription = spec.description
    ds.ProtocolName = spec.protocol
    ds.FrameOfReferenceUID = make_uid(exam.seed, exam.index, "frame_of_reference", 0)
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "HEART"
    ds.ImagingFrequency = 63.6 if exam.field_strength < 2 else 127.7
    ds.ImagedNucleus = "1H"
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = spec.slice_thickness
    if spec.spacing_between:
        ds.SpacingBetweenSlices = spec.spacing_between
    ds.BurnedInAnnotation = "NO"
    if spec.comments:
        ds.ImageComments = spec.comments
    for key, value in spec.attrs.items():
        setattr(ds, key, value)
    block = ds.private_block(0x0029, PRIVATE_CREATOR, create=True)
    block.add_new(0x10, "LO", exam.patient_id)
    block.add_new(0x11, "LT", exam.private_note)


def _pixels(ds: Dataset, exam: Exam, spec: SeriesSpec, stored: np.ndarray) -> None:
    """Attach pixel data, compressed as the patient's exports are."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if exam.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.BitsAllocated = 16
    ds.BitsStored = spec.coding.bits
    ds.HighBit = spec.coding.bits - 1
    ds.PixelRepresentation = 0
    if exam.compression:
        ds.LossyImageCompression = "00"
        syntax = RLELossless if exam.compression == "rle" else JPEG2000Lossless
        ds.compress(syntax, stored, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        ds["PixelData"].VR = "OW"


def _stored(exam: Exam, coding: PixelCoding, real: np.ndarray) -> np.ndarray:
    stored = coding.encode(real)
    if exam.monochrome1:  # inverted storage: high stored values display dark
        stored = (coding.max_stored - stored).astype("<u2")
    return stored


def _window_attrs(exam: Exam, coding: PixelCoding, real: np.ndarray) -> tuple[float, float]:
    """Window in the modality-LUT output space of the stored (possibly inverted) values."""
    centre, width = _window(real)
    if exam.monochrome1:
        centre = coding.slope * coding.max_stored + 2 * coding.intercept - centre
    return centre, width


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "CMRRD_SYNTH"
    return meta


def write_series(exam: Exam, spec: SeriesSpec, study_dir: Path) -> list[Written]:
    """Write one series under study_dir; returns what was written, for the boxes table."""
    folder = study_dir / f"{spec.number}_{sanitise(spec.description)}"
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = make_uid(exam.seed, exam.index, spec.key, 0)
    if spec.enhanced:
        return _write_enhanced(exam, spec, folder, series_uid)
    # One dataset per series, updated per instance: the series-level modules are identical,
    # and every per-instance element is overwritten on each pass, so nothing goes stale.
    ds = Dataset()
    ds.file_meta = _file_meta(MR_IMAGE_STORAGE, series_uid)
    _common(ds, exam, spec, series_uid)
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.ImageType = list(spec.image_type)
    ds.ScanningSequence = spec.scanning_sequence
    ds.SequenceVariant = "SK\\SP\\MP" if "IR" in spec.scanning_sequence else "SK\\SS"
    ds.ScanOptions = "IR" if "IR" in spec.scanning_sequence else ""
    ds.SequenceName = spec.sequence_name
    ds.AcquisitionNumber = 1
    ds.InPlanePhaseEncodingDirection = "ROW"
    if spec.coding.rescale:
        ds.RescaleIntercept = spec.coding.intercept
        ds.RescaleSlope = spec.coding.slope
        ds.RescaleType = "US"
    ds = _frozen(ds)
    out: list[Written] = []
    for inst, img in enumerate(spec.images, start=1):
        sop_uid = make_uid(exam.seed, exam.index, spec.key, inst)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = inst
        seconds = 60 * spec.minutes + 12 * img.spatial_index
        ds.AcquisitionTime = ds.ContentTime = _time(exam.study_time, seconds)
        ds.ImagePositionPatient = [_ds(v) for v in img.position]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*img.row_dir, *img.col_dir)]
        ds.PixelSpacing = [img.spacing[0], img.spacing[1]]
        normal = np.cross(img.row_dir, img.col_dir)
        ds.SliceLocation = _ds(float(img.position @ normal), 3)
        for key, value in img.attrs.items():
            setattr(ds, key, value)
        ds.WindowCenter, ds.WindowWidth = _window_attrs(exam, spec.coding, img.real)
        _pixels(ds, exam, spec, _stored(exam, spec.coding, img.real))
        path = folder / f"{exam.file_stem}_{spec.number}_{inst}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        out.append(Written(path, sop_uid, None, img.spatial_index, spec.kind))
    return out


def _frozen(ds: Dataset) -> Dataset:
    """Round-trip the series-level elements through bytes, once per series.

    pydicom re-encodes every Python-valued element on each write but copies raw (read) elements
    as they are, so this makes writing the series' files several times faster.
    """
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


def _item(**kwargs: object) -> Dataset:
    item = Dataset()
    for key, value in kwargs.items():
        setattr(item, key, value)
    return item


def _write_enhanced(exam: Exam, spec: SeriesSpec, folder: Path, series_uid: str) -> list[Written]:
    """One Enhanced MR multi-frame object: geometry and rescale live in functional groups."""
    sop_uid = make_uid(exam.seed, exam.index, spec.key, 1)
    ds = Dataset()
    ds.file_meta = _file_meta(ENHANCED_MR_IMAGE_STORAGE, sop_uid)
    _common(ds, exam, spec, series_uid)
    for key in (
        "SliceThickness",
        "SpacingBetweenSlices",
        "InversionTime",
        "RepetitionTime",
        "EchoTime",
        "FlipAngle",
        "TriggerTime",
    ):  # these live in functional groups
        if key in ds:
            del ds[key]
    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    frame_type = [*spec.image_type[:3], "NONE"]
    ds.ImageType = frame_type
    ds.InstanceNumber = 1
    seconds = 60 * spec.minutes
    ds.AcquisitionTime = ds.ContentTime = _time(exam.study_time, seconds)
    ds.AcquisitionDateTime = exam.study_date + _time(exam.study_time, seconds)
    ds.ContentQualification = "PRODUCT"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = spec.complex_component
    ds.AcquisitionContrast = "T1"
    ds.PulseSequenceName = spec.sequence_name
    ds.EchoPulseSequence = "GRADIENT"
    ds.NumberOfFrames = len(spec.images)
    dim_uid = make_uid(exam.seed, exam.index, spec.key + "_dimension", 0)
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=dim_uid)])
    ds.DimensionIndexSequence = Sequence(
        [
            _item(
                DimensionIndexPointer=0x00209056,
                FunctionalGroupPointer=0x00209111,
                DimensionOrganizationUID=dim_uid,
                DimensionDescriptionLabel="Stack ID",
            ),
            _item(
                DimensionIndexPointer=0x00209057,
                FunctionalGroupPointer=0x00209111,
                DimensionOrganizationUID=dim_uid,
                DimensionDescriptionLabel="In-Stack Position Number",
            ),
        ]
    )
    first = spec.images[0]
    ti = spec.attrs.get("InversionTime")
    shared = _item(
        PixelMeasuresSequence=Sequence(
            [
                _item(
                    PixelSpacing=[first.spacing[0], first.spacing[1]],
                    SliceThickness=spec.slice_thickness,
                    SpacingBetweenSlices=spec.spacing_between or SLICE_GAP_MM,
                )
            ]
        ),
        PlaneOrientationSequence=Sequence(
            [
                _item(
                    ImageOrientationPatient=[
                        round(float(v), 6) for v in (*first.row_dir, *first.col_dir)
                    ]
                )
            ]
        ),
        MRModifierSequence=Sequence(
            [
                _item(
                    InversionRecovery="YES" if ti else "NO",
                    **({"InversionTimes": [ti]} if ti else {}),
                )
            ]
        ),
        MRTimingAndRelatedParametersSequence=Sequence(
            [
                _item(
                    RepetitionTime=spec.attrs.get("RepetitionTime", 700.0),
                    FlipAngle=spec.attrs.get("FlipAngle", 25.0),
                    EchoTrainLength=1,
                )
            ]
        ),
    )
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    stored_frames = []
    for img in spec.images:
        centre, width = _window_attrs(exam, spec.coding, img.real)
        per_frame.append(
            _item(
                FrameContentSequence=Sequence(
                    [
                        _item(
                            StackID="1",
                            InStackPositionNumber=img.spatial_index + 1,
                            DimensionIndexValues=[1, img.spatial_index + 1],
                            FrameAcquisitionDateTime=exam.study_date
                            + _time(exam.study_time, seconds + 12 * img.spatial_index),
                        )
                    ]
                ),
                PlanePositionSequence=Sequence(
                    [_item(ImagePositionPatient=[_ds(v) for v in img.position])]
                ),
                PixelValueTransformationSequence=Sequence(
                    [
                        _item(
                            RescaleIntercept=spec.coding.intercept,
                            RescaleSlope=spec.coding.slope,
                            RescaleType="US",
                        )
                    ]
                ),
                MRImageFrameTypeSequence=Sequence(
                    [
                        _item(
                            FrameType=frame_type,
                            PixelPresentation="MONOCHROME",
                            VolumetricProperties="VOLUME",
                            VolumeBasedCalculationTechnique="NONE",
                            ComplexImageComponent=spec.complex_component,
                            AcquisitionContrast="T1",
                        )
                    ]
                ),
                FrameVOILUTSequence=Sequence([_item(WindowCenter=centre, WindowWidth=width)]),
            )
        )
        stored_frames.append(_stored(exam, spec.coding, img.real))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    _pixels(ds, exam, spec, np.stack(stored_frames))
    path = folder / f"{exam.file_stem}_{spec.number}_1.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return [
        Written(path, sop_uid, f, img.spatial_index, spec.kind)
        for f, img in enumerate(spec.images, start=1)
    ]
