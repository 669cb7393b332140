"""The synthetic cohort: determinism, formats, geometry, boxes, PHI and class signal."""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
from collections import Counter, defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from cmr_rd.synth import dicom_series, phantom, report
from cmr_rd.synth.cohort import (
    SynthConfig,
    generate_cohort,
    patient_jobs,
    plan_patient,
    render_lge,
)

# Every delivery format at least once, in a few seconds.
TINY = SynthConfig(
    scale=0.0,
    min_patients_per_class=3,
    lge_slices=6,
    matrix=96,
    nifti_share=0.5,
    enhanced_share=0.5,
    compressed_share=0.5,
    monochrome1_share=0.5,
    lax_share=0.5,
)
SEED = 7
FULL = {v.lower(): k for k, v in report.FULL_NAMES.items()}


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    generate_cohort(TINY, out, seed=SEED, workers=1)
    return out


@pytest.fixture(scope="module")
def dicoms(cohort) -> list[tuple[Path, pydicom.Dataset]]:
    return [(p, pydicom.dcmread(p)) for p in sorted((cohort / "dicom").rglob("*.dcm"))]


def _labels(cohort: Path) -> list[dict[str, str]]:
    with open(cohort / "labels.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _canonical(label: str) -> str:
    return label if label in phantom.CLASSES else FULL[label.lower()]


def _lge_psir(dicoms) -> dict[str, list[tuple[pydicom.Dataset, int | None]]]:
    """PatientID -> [(dataset, frame index or None)] of the LGE SAX PSIR series."""
    out: dict[str, list] = defaultdict(list)
    for _, ds in dicoms:
        if ds.ImageType[2] == "R":
            frames = range(int(ds.NumberOfFrames)) if "NumberOfFrames" in ds else [None]
            out[ds.PatientID] += [(ds, f) for f in frames]
    return out


def _geometry(ds: pydicom.Dataset, frame: int | None) -> tuple[np.ndarray, np.ndarray]:
    if frame is None:
        return np.array(ds.ImageOrientationPatient, float), np.array(ds.ImagePositionPatient, float)
    shared = ds.SharedFunctionalGroupsSequence[0]
    fg = ds.PerFrameFunctionalGroupsSequence[frame]
    return (
        np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float),
        np.array(fg.PlanePositionSequence[0].ImagePositionPatient, float),
    )


def _real(ds: pydicom.Dataset, frame: int | None) -> np.ndarray:
    """Real-world values after the modality LUT, MONOCHROME1 turned back to MONOCHROME2."""
    arr = ds.pixel_array.astype(np.float64)
    if frame is None:
        slope, icpt = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        real = apply_modality_lut(arr, ds)
    else:
        pv = ds.PerFrameFunctionalGroupsSequence[frame].PixelValueTransformationSequence[0]
        slope, icpt = float(pv.RescaleSlope), float(pv.RescaleIntercept)
        real = arr[frame] * slope + icpt
    if ds.PhotometricInterpretation == "MONOCHROME1":
        real = slope * ((1 << ds.BitsStored) - 1) + 2 * icpt - real
    return real


def test_workers_give_byte_identical_output(cohort, tmp_path):
    generate_cohort(TINY, tmp_path / "again", seed=SEED, workers=2)
    assert _digests(cohort) == _digests(tmp_path / "again")
    generate_cohort(TINY, tmp_path / "other", seed=SEED + 1, workers=1)
    assert _digests(cohort) != _digests(tmp_path / "other")


def test_regenerating_cleans_only_own_outputs(tmp_path):
    cfg = SynthConfig(
        scale=0.0, min_patients_per_class=1, lge_slices=5, matrix=64, nifti_share=0.0, cine_phases=1
    )
    (tmp_path / "keep.txt").write_text("user file")
    (tmp_path / "dicom" / "stale").mkdir(parents=True)
    generate_cohort(cfg, tmp_path, seed=1)
    assert (tmp_path / "keep.txt").exists() and not (tmp_path / "dicom" / "stale").exists()


def test_classes_counts_and_ids(cohort, dicoms):
    rows = _labels(cohort)
    assert Counter(_canonical(r["label"]) for r in rows) == {c: 3 for c in phantom.CLASSES}
    summary = json.loads((cohort / "cohort.json").read_text())
    assert summary["patients_per_class"] == {c: 3 for c in phantom.CLASSES}
    ids = {ds.PatientID for _, ds in dicoms}
    niftis = {p.name.removesuffix(".nii.gz") for p in (cohort / "nifti").glob("*.nii.gz")}
    assert not ids & niftis
    for r in rows:
        assert (r["patient_id"] in ids) != (r["patient_id"] in niftis)
        assert "\n" in r["report"] and "IMPRESSION" in r["report"]
    assert ids | niftis == {r["patient_id"] for r in rows}


def test_default_counts_follow_the_paper():
    from cmr_rd.synth.cohort import patients_per_class

    counts = patients_per_class(SynthConfig())
    assert counts == {"HCM": 133, "DCM": 64, "CAM": 48, "LVNC": 48, "MI": 57, "NOR": 48}


def test_lge_stack_geometry(dicoms):
    stacks = _lge_psir(dicoms)
    assert len(stacks) == 9
    shuffled = 0
    for frames in stacks.values():
        geo = [_geometry(ds, f) for ds, f in frames]
        iops = np.array([g[0] for g in geo])
        assert np.allclose(iops, iops[0], atol=1e-6)  # parallel
        normal = np.cross(iops[0][:3], iops[0][3:])
        assert abs(np.linalg.norm(normal) - 1) < 1e-4
        assert np.max(np.abs(normal)) < 0.95  # double oblique
        where = np.array([g[1] @ normal for g in geo])
        assert np.allclose(np.diff(np.sort(where)), 10.0, atol=1e-3)
        shuffled += not np.all(np.diff(where) > 0)  # file/frame order is not spatial order
    assert shuffled >= 1


def test_every_format_present_and_readable(cohort, dicoms):
    syntaxes = Counter(ds.file_meta.TransferSyntaxUID for _, ds in dicoms)
    assert syntaxes[pydicom.uid.RLELossless] and syntaxes[pydicom.uid.JPEG2000Lossless]
    assert any(ds.SOPClassUID == dicom_series.ENHANCED_MR_IMAGE_STORAGE for _, ds in dicoms)
    assert any(ds.PhotometricInterpretation == "MONOCHROME1" for _, ds in dicoms)
    for _, ds in dicoms:
        arr = ds.pixel_array
        assert arr.shape[-2:] == (ds.Rows, ds.Columns) and arr.max() > 0
    assert {ds.Manufacturer for _, ds in dicoms} <= {
        v.manufacturer for v in dicom_series.VENDORS.values()
    }
    axes = set()
    for path in (cohort / "nifti").glob("*.nii.gz"):
        img = nib.load(path)
        zooms = np.array(img.header.get_zooms()[:3])
        axis = int(np.argmax(zooms))
        axes.add(axis)
        assert np.isclose(zooms[axis], 10.0) and np.all(
            (zooms[np.arange(3) != axis] > 1.29) & (zooms[np.arange(3) != axis] < 1.91)
        )
        slice_dir = img.affine[:3, axis] / 10.0
        assert np.max(np.abs(slice_dir)) < 0.95
        assert img.get_fdata().shape[axis] == TINY.lge_slices
    assert axes - {2}, "some NIfTI volumes must store slices off axis 2"


def test_enhanced_frames_carry_functional_groups(dicoms):
    enhanced = [ds for _, ds in dicoms if "PerFrameFunctionalGroupsSequence" in ds]
    assert enhanced
    for ds in enhanced:
        assert int(ds.NumberOfFrames) == len(ds.PerFrameFunctionalGroupsSequence)
        fg = ds.PerFrameFunctionalGroupsSequence[0]
        assert fg.MRImageFrameTypeSequence[0].FrameType[2] == ds.ImageType[2]
        assert fg.PixelValueTransformationSequence[0].RescaleType == "US"
        positions = sorted(
            f.FrameContentSequence[0].InStackPositionNumber
            for f in ds.PerFrameFunctionalGroupsSequence
        )
        assert positions == list(range(1, TINY.lge_slices + 1))


def test_psir_is_signed_after_rescale_and_lax_not_parallel(dicoms):
    mins = [_real(ds, f).min() for frames in _lge_psir(dicoms).values() for ds, f in frames]
    assert min(mins) < 0  # nulled myocardium and noise go negative only through the LUT
    lax = defaultdict(list)
    for _, ds in dicoms:
        if ds.SeriesDescription in {d for v in dicom_series.VENDORS.values() for d in v.lax}:
            lax[ds.SeriesInstanceUID].append(np.array(ds.ImageOrientationPatient, float))
    assert lax
    for iops in lax.values():
        normals = [np.cross(i[:3], i[3:]) for i in iops]
        assert len(normals) >= 2 and abs(normals[0] @ normals[1]) < 0.99


def test_mi_boxes_cover_the_bright_lesion(cohort, dicoms):
    with open(cohort / "boxes.csv", newline="") as fh:
        boxes = list(csv.DictReader(fh))
    assert boxes and {b["series_kind"] for b in boxes} <= {"psir", "magnitude", "nifti"}
    by_uid = {ds.SOPInstanceUID: ds for _, ds in dicoms}
    jobs = {j.index: j for j in patient_jobs(TINY, SEED, cohort)}
    plans = {
        p.phi.mrn: p for p in (plan_patient(j) for j in jobs.values()) if p.anatomy.label == "MI"
    }
    assert {b["patient_id"] for b in boxes} <= set(plans)
    checked = 0
    for b in boxes:
        x1, y1, x2, y2 = (float(b[k]) for k in ("x1", "y1", "x2", "y2"))
        if b["series_kind"] != "psir":
            continue
        ds = by_uid[b["sop_instance_uid"]]
        frame = int(b["frame"]) - 1 if b["frame"] else None
        real = _real(ds, frame)
        assert 0 <= x1 < x2 <= real.shape[1] and 0 <= y1 < y2 <= real.shape[0]
        plan = plans[b["patient_id"]]
        _, pos = _geometry(ds, frame)
        k = int(
            np.argmin(
                [np.linalg.norm(plan.geometry.top_left(i) - pos) for i in range(TINY.lge_slices)]
            )
        )
        maps = render_lge(plan, np.random.default_rng(0)).maps[k]
        inside = np.zeros(real.shape, bool)
        inside[int(y1) : int(y2), int(x1) : int(x2)] = True
        myo = maps.labels == phantom.LV_MYO
        assert real[inside].mean() > real[myo & ~inside].mean() + 0.1 * plan.signal_scale
        assert maps.lesion[inside].sum() == maps.lesion.sum()  # the box holds the whole lesion
        checked += 1
    assert checked >= 3


def test_phi_planted_and_listed(cohort, dicoms):
    phi = set(json.loads((cohort / "phi_strings.json").read_text())["strings"])
    assert all(len(s) >= 4 for s in phi)
    for path, ds in dicoms:
        for value in (
            ds.PatientName,
            ds.PatientID,
            ds.ReferringPhysicianName,
            ds.OperatorsName,
            ds.InstitutionName,
            ds.InstitutionAddress,
            ds.PatientBirthDate,
            ds.StudyDate,
            ds.AccessionNumber,
        ):
            assert str(value) in phi
        last, first = str(ds.PatientName).split("^")
        assert f"{last}_{first}" in path.as_posix() and last in path.name
        assert ds.get_private_item(0x0029, 0x10, dicom_series.PRIVATE_CREATOR).value == ds.PatientID
    for row in _labels(cohort):
        assert row["patient_id"] in row["report"]
        assert row["patient_id"] in phi
        assert sum(s in row["report"] for s in phi) >= 6  # name, DOB, dates, site, doctors
    meta = (cohort / "cohort.json").read_text().lower()
    assert not [s for s in phi if s.lower() in meta]


def test_names_do_not_collide_with_template_words():
    corpus = (inspect.getsource(report) + inspect.getsource(dicom_series)).lower()
    rng = np.random.default_rng(0)
    for i in range(300):
        p = report.make_phi(rng, "NOR", i, 0)
        for name in (p.patient.first, p.patient.last, p.referring.last, p.radiologist.first):
            assert name.lower() not in corpus


def _mid_maps(
    label: str, seed: int
) -> tuple[phantom.Anatomy, phantom.TissueMaps, np.ndarray, np.ndarray]:
    """Noise-free mid-ventricular slice on a 0.5 mm grid, and each pixel's radius."""
    rng = np.random.default_rng(seed)
    anat = phantom.draw_anatomy(label, rng, 10)
    yy, xx = np.mgrid[-60:60:0.5, -60:60:0.5]
    z = np.full(xx.shape, 10.0 * anat.mid_slice)
    labels, enh, lesion, _ = phantom.render_heart(anat, xx, -yy, z)
    maps = phantom.TissueMaps(labels, enh, lesion)
    body = phantom.draw_body(rng)
    return anat, maps, phantom.lge_signal(maps, anat, body), np.hypot(xx, yy)


def test_class_signal_in_the_phantom():
    def stats(label: str) -> tuple[float, float, float, float]:
        thick, bright, ratio, inner = [], [], [], []
        for s in range(8):
            anat, maps, sig, rho = _mid_maps(label, s)
            myo = maps.labels == phantom.LV_MYO
            # myocardium well inside the (compact) endocardial border: trabeculae only
            deep = rho < 0.8 * anat.r_endo * np.sqrt(1 - (anat.mid_slice * 10 / anat.length) ** 2)
            inner.append(float(myo[deep].mean()))
            blood = sig[maps.labels == phantom.LV_BLOOD].mean()
            cavity = (maps.labels == phantom.LV_BLOOD).sum() * 0.25
            r_in = np.sqrt(cavity / np.pi)
            r_out = np.sqrt((myo.sum() * 0.25 + cavity) / np.pi)
            thick.append(r_out - r_in)
            bright.append(float((sig[myo] > blood).mean()))
            ratio.append(float(np.median(sig[myo]) / blood))
        return (
            float(np.mean(thick)),
            float(np.mean(bright)),
            float(np.mean(ratio)),
            float(np.min(inner)) * float(np.mean(inner) > 0.04),
        )

    s = {c: stats(c) for c in phantom.CLASSES}
    assert s["CAM"][0] > s["DCM"][0] + 4 and s["HCM"][0] > s["DCM"][0] + 4
    assert s["NOR"][1] == 0.0  # no myocardium brighter than blood without disease
    assert s["MI"][1] > 0.02 and s["HCM"][1] > 0.005 and s["CAM"][1] > 0.1
    assert s["CAM"][2] > 1.0 > 0.2 > s["NOR"][2]  # amyloid: myocardium not nulled, blood dark
    assert s["LVNC"][3] > 0.005 and s["NOR"][3] == 0.0  # trabeculae reach into the cavity


def test_reports_match_anatomy():
    for label, must in (
        ("MI", "transmural"),
        ("HCM", "insertion"),
        ("CAM", "subendocardial"),
        ("LVNC", "NC/C"),
        ("DCM", "dilat"),
        ("NOR", "LGE"),
    ):
        seen = set()
        for s in range(6):
            rng = np.random.default_rng(s)
            anat = phantom.draw_anatomy(label, rng, 10)
            phi = report.make_phi(rng, label, s, 0)
            text = report.write_report(anat, phi, rng, 1.5, "SIEMENS")
            assert phi.mrn in text and phi.patient.full in phi.strings()
            impression = text.split("IMPRESSION:")[1]
            assert report.FULL_NAMES[label].lower() in impression.lower() or label == "NOR"
            findings = text.split("FINDINGS:")[1]
            if label != "NOR" and must not in ("LGE",):
                assert (
                    must.lower() in findings.lower()
                    or must in ("NC/C",)
                    and ("non-compacted" in findings or must in findings)
                )
            if label == "MI":
                assert anat.mi_territory in text
            seen.add(findings)
        assert len(seen) == 6  # phrasing and numbers vary


def test_nifti_affine_and_boxes_match_the_plan(cohort):
    plans = {p.phi.mrn: p for p in map(plan_patient, patient_jobs(TINY, SEED, cohort))}
    with open(cohort / "boxes.csv", newline="") as fh:
        boxes = [b for b in csv.DictReader(fh) if b["series_kind"] == "nifti"]
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    n_mi = 0
    for path in sorted((cohort / "nifti").glob("*.nii.gz")):
        plan = plans[path.name.removesuffix(".nii.gz")]
        img = nib.load(path)
        data = np.asarray(img.dataobj)
        axis = int(np.argmax(img.header.get_zooms()[:3]))
        corners = []
        for s in range(data.shape[axis]):
            index = np.zeros(3)
            index[axis] = s
            corners.append(img.affine[:3, :3] @ index + img.affine[:3, 3])
        expected = [lps_to_ras @ plan.geometry.top_left(k) for k in range(TINY.lge_slices)]
        for c in corners:  # every stored slice sits where the plan put one
            assert min(np.linalg.norm(c - e) for e in expected) < 1e-3
        mine = [b for b in boxes if b["patient_id"] == path.name.removesuffix(".nii.gz")]
        if plan.anatomy.label != "MI":
            assert not mine
            continue
        n_mi += 1
        lesion = render_lge(plan, np.random.default_rng(0)).lesion
        areas = sorted(  # box areas do not depend on the array layout
            int(np.ptp(np.nonzero(m)[0]) + 1) * int(np.ptp(np.nonzero(m)[1]) + 1)
            for m in lesion
            if m.sum() >= 4
        )
        got = []
        for b in mine:
            x1, y1, x2, y2 = (int(float(b[k])) for k in ("x1", "y1", "x2", "y2"))
            plane = np.take(data, int(b["slice_index"]), axis=axis).astype(float)
            assert 0 <= x1 < x2 <= plane.shape[1] and 0 <= y1 < y2 <= plane.shape[0]
            assert plane[y1:y2, x1:x2].mean() > plane.mean()
            got.append((x2 - x1) * (y2 - y1))
        assert sorted(got) == areas
    assert n_mi >= 1
