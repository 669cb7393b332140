"""Ingestion pieces on hand-made inputs: series classification, geometry, pixels, NIfTI, split."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cmr_rd.ingest import nifti
from cmr_rd.ingest.pixels import (
    display_polarity,
    modality_values,
    normalise,
    resample,
    spacing_or_default,
    square_frame,
)
from cmr_rd.ingest.series import classify_series, tokens
from cmr_rd.ingest.split import SplitConfig, assign_splits, holdout_sizes


def _oblique_basis():
    normal = np.array([0.45, -0.55, 0.70])
    normal /= np.linalg.norm(normal)
    row = np.cross(normal, [0, 0, 1.0])
    row /= np.linalg.norm(row)
    col = np.cross(normal, row)
    return row, col, normal


def _records(description, image_type=("ORIGINAL", "PRIMARY", "R"), n=8, order=None, **extra):
    row, col, normal = _oblique_basis()
    origin = np.array([-100.0, -80.0, 40.0])
    order = order or list(range(n))
    recs = []
    for instance, k in enumerate(order, start=1):
        recs.append(
            {
                "path": f"/d/{instance:03d}.dcm",
                "status": "ok",
                "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
                "sop_instance_uid": f"1.2.{instance}",
                "modality": "MR",
                "patient_id": "X",
                "series_uid": "1.9",
                "series_number": 9.0,
                "series_description": description,
                "protocol_name": "",
                "sequence_name": "",
                "image_type": image_type,
                "scanning_sequence": ("GR",),
                "inversion_time": 300.0,
                "instance_number": float(instance),
                "rows": 100,
                "columns": 80,
                "pixel_spacing": (1.5, 1.5),
                "orientation": tuple(np.r_[row, col]),
                "position": tuple(origin + 10.0 * k * normal),
                "n_frames": 1,
                "photometric": "MONOCHROME2",
                "transfer_syntax": "",
                "rescale_slope": 1.0,
                "rescale_intercept": 0.0,
                "frames": [],
                **extra,
            }
        )
    return recs


def _classify(recs):
    return classify_series("s", recs, 5, 3.0, 0.985)


@pytest.mark.parametrize(
    "description, kind",
    [
        ("de_TrueFISP_PSIR_SAX", "psir"),
        ("MDE SAX PSIR", "psir"),
        ("LGE_SA_PSIR", "psir"),
        ("tfl_LGE_psir_sa", "psir"),
    ],
)
def test_vendor_lge_descriptions_are_found(description, kind):
    verdict = _classify(_records(description))
    assert verdict.is_lge_sax, verdict.reason
    assert verdict.kind == kind


def test_image_type_decides_magnitude_over_name():
    verdict = _classify(
        _records("de_TrueFISP_PSIR_SAX_MAG", image_type=("ORIGINAL", "PRIMARY", "M"))
    )
    assert verdict.is_lge_sax and verdict.kind == "magnitude"


@pytest.mark.parametrize(
    "description, reason",
    [
        ("TI_Scout", "TI scout"),
        ("TI SCOUT", "TI scout"),
        ("Look_Locker_TI", "TI scout"),
        ("MOLLI_T1_MAP", "parametric map"),
        ("cine_sax", "cine"),
        ("FIESTA CINE SAX", "cine"),
        ("perfusion_rest", "perfusion"),
        ("3-plane loc", "localizer"),
        ("T2 STIR SAX", "not LGE"),
    ],
)
def test_non_lge_series_are_skipped_with_category(description, reason):
    verdict = _classify(_records(description))
    assert not verdict.is_lge_sax
    assert reason in verdict.reason


def test_underscore_is_a_token_separator_but_words_are_not_substrings():
    assert {"de", "truefisp", "psir"} <= tokens("de_TrueFISP_PSIR")
    assert "de" not in tokens("Deformable registration")  # no substring matches


def test_derived_and_several_inversion_times_are_excluded():
    assert "derived" in _classify(_records("LGE_SA", ("DERIVED", "PRIMARY", "M"))).reason
    recs = _records("LGE_SA")
    for i, rec in enumerate(recs):
        rec["inversion_time"] = 100.0 + 40 * i
    assert "several inversion times" in _classify(recs).reason


def test_slices_are_ordered_by_position_not_instance_number():
    order = [3, 0, 7, 1, 6, 2, 5, 4]
    verdict = _classify(_records("LGE_SA_PSIR", order=order))
    locations = [s.location_mm for s in verdict.slices]
    assert locations == sorted(locations)
    assert [s.instance_number for s in verdict.slices] != sorted(
        s.instance_number for s in verdict.slices
    )
    assert np.allclose(np.diff(locations), 10.0)


def test_geometry_rejections():
    recs = _records("LGE_SA_PSIR", n=4)
    assert "only 4 slice positions" in _classify(recs).reason
    recs = _records("LGE_SA_PSIR")
    recs[2]["orientation"] = (1.0, 0, 0, 0, 1.0, 0)
    assert "not parallel" in _classify(recs).reason
    recs = _records("LGE_SA_PSIR")
    for k, rec in enumerate(recs):
        rec["orientation"] = (1.0, 0, 0, 0, 1.0, 0)
        rec["position"] = (0.0, 0.0, 10.0 * k)
    assert "axis-aligned" in _classify(recs).reason


def test_square_frame_pads_and_maps_boxes():
    # 100 rows x 80 columns at 1.5 x 2.0 mm: 160 mm wide, 150 mm high -> 160 mm square.
    frame = square_frame(100, 80, (1.5, 2.0), 256, None)
    assert frame.to_output(0, 0) == pytest.approx((0.0, 5 / 160 * 256))  # 5 mm padded above
    x, y = frame.to_output(40, 50)  # the image centre stays at the centre
    assert (x, y) == pytest.approx((128.0, 128.0))
    box = frame.box(20, 25, 60, 75)
    assert box[2] - box[0] == pytest.approx(40 * 2.0 / 160 * 256, abs=0.1)
    assert box[3] - box[1] == pytest.approx(50 * 1.5 / 160 * 256, abs=0.1)


def test_crop_keeps_the_centre_and_enlarges():
    full = square_frame(100, 100, (2.0, 2.0), 256, None)
    crop = square_frame(100, 100, (2.0, 2.0), 256, 100.0)
    assert crop.to_output(50, 50) == pytest.approx(full.to_output(50, 50))
    assert crop.box(40, 40, 60, 60)[2] - crop.box(40, 40, 60, 60)[0] == pytest.approx(102.4)


def test_spacing_guard():
    assert spacing_or_default((0.0, 0.0))[1].startswith("assumed")
    assert spacing_or_default(None)[1].startswith("assumed")
    assert spacing_or_default((1.2, 1.4)) == ((1.2, 1.4), "header")


def test_modality_lut_polarity_and_resample():
    stored = np.array([[0, 4096], [8192, 4096]], dtype=np.uint16)
    values = modality_values(stored, 1.0, -4096.0)
    assert values.tolist() == [[-4096, 0], [4096, 0]]
    inverted = display_polarity(values, "MONOCHROME1")
    assert inverted[1, 0] < inverted[0, 0]
    image = np.zeros((100, 60), dtype=np.float32)
    image[40:60, 20:40] = 1.0
    (norm,) = normalise([image], (0.0, 100.0))
    out = resample(norm, square_frame(100, 60, (1.0, 1.0), 64, None))
    assert out.shape == (64, 64)
    assert out[:, :6].max() == 0.0  # padding columns are air
    assert out[32, 32] > 0.9


def _write_volume(path, axis: int):
    shape = [12, 12, 12]
    shape[axis] = 7
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    zooms = [1.5, 1.5, 1.5]
    zooms[axis] = 10.0
    row, col, normal = _oblique_basis()
    axes = [row, col]
    axes.insert(axis, normal)
    affine = np.eye(4)
    for a in range(3):
        affine[:3, a] = axes[a] * zooms[a]
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return data


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_nifti_slice_axis_comes_from_the_affine(tmp_path, axis):
    path = tmp_path / "MRN1.nii.gz"
    data = _write_volume(path, axis)
    stack = nifti.read_stack(path)
    assert stack.slice_axis == axis
    assert stack.spacing == pytest.approx((1.5, 1.5))
    assert np.allclose(np.diff(stack.locations_mm), 10.0)
    assert np.array_equal(stack.image(3), np.take(data, 3, axis=axis))
    assert nifti.patient_id_of(path) == "MRN1"


def test_nifti_4d_is_refused_with_reason(tmp_path):
    path = tmp_path / "x.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), str(path))
    with pytest.raises(ValueError, match="3D volume"):
        nifti.read_stack(path)


def test_split_is_patient_level_stratified_and_seeded():
    patients = {f"P{c}{i:03d}": c for c in ("HCM", "CAM") for i in range(60 if c == "HCM" else 20)}
    cfg = SplitConfig(test_per_class=30, probe_per_class=10, min_train_per_class=4)
    a, notes = assign_splits(patients, cfg, seed=3)
    b, _ = assign_splits(patients, cfg, seed=3)
    c, _ = assign_splits(patients, cfg, seed=4)
    assert a == b and a != c
    hcm = [a[p] for p in patients if patients[p] == "HCM"]
    assert hcm.count("test") == 30 and hcm.count("probe") == 10 and hcm.count("train") == 20
    cam = [a[p] for p in patients if patients[p] == "CAM"]
    assert cam.count("train") == 4 and cam.count("test") + cam.count("probe") == 16
    assert "only 20 patients" in notes["CAM"] and notes["HCM"] == ""


def test_holdout_sizes_for_tiny_classes():
    cfg = SplitConfig(30, 10, 4)
    assert holdout_sizes(3, cfg) == (0, 0, holdout_sizes(3, cfg)[2])
    assert holdout_sizes(44, cfg)[:2] == (30, 10)


def test_png_writer_round_trips_through_pillow():
    import io

    from PIL import Image

    from cmr_rd.ingest.pixels import to_png_bytes

    rng = np.random.default_rng(0)
    image01 = rng.random((37, 53)).astype(np.float32)
    png = to_png_bytes(image01)
    decoded = np.asarray(Image.open(io.BytesIO(png)))
    assert decoded.shape == (37, 53) and decoded.dtype == np.uint8
    assert np.array_equal(decoded, np.rint(image01 * 255).astype(np.uint8))
    assert to_png_bytes(image01) == png  # deterministic bytes


def test_labels_csv_mistakes_name_the_file_and_column(tmp_path):
    from cmr_rd.ingest.pipeline import InputError, Outcomes, read_labels

    bad = tmp_path / "labels.csv"
    bad.write_text("mrn,diagnosis\n1,HCM\n")
    with pytest.raises(
        InputError, match=r"labels\.csv: missing required column\(s\) \['label', 'patient_id'\]"
    ):
        read_labels(bad, Outcomes())
    with pytest.raises(InputError, match="does not exist"):
        read_labels(tmp_path / "nope.csv", Outcomes())
    good = tmp_path / "ok.csv"
    good.write_text("patient_id,label\nA,hcm\nA,HCM\nB,Normal\nC,HCM\nC,DCM\n,MI\n")
    outcomes = Outcomes()
    labels, _ = read_labels(good, outcomes)
    assert labels == {"A": "HCM", "B": "NOR"}  # C has conflicting labels
    reasons = {f["reason"] for f in outcomes.findings}
    assert reasons == {"conflicting labels for one patient", "empty patient_id"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        # An Excel export in Windows-1252: 'ü' is one byte that UTF-8 cannot start with.
        (b'patient_id,label,report\nP1,HCM,"Dr. M\xfcller: septal LGE"\n',
         r"not UTF-8 text \(line 2: byte 0xfc\); save it as UTF-8"),
        (b"", "is empty"),
        # More fields than the header: pandas would take the first ones as an index and shift
        # the row's columns (this row would have become patient 'extra' with class 'fields').
        (b"patient_id,label\nP1,HCM,extra,fields\n", "Expected 2 fields in line 2, saw 4"),
        (b"patient_id,label,label\nP1,HCM,DCM\n", r"repeated column\(s\) \['label'\]"),
    ],
    ids=["windows-1252", "empty", "extra-fields", "repeated-column"],
)  # fmt: skip
def test_a_labels_or_boxes_csv_that_is_not_clean_csv_is_one_input_error(tmp_path, content, message):
    from cmr_rd.ingest.pipeline import InputError, Outcomes, read_boxes, read_labels

    path = tmp_path / "table.csv"
    path.write_bytes(content)
    for read, key in ((read_labels, "data.labels_csv"), (read_boxes, "data.boxes_csv")):
        with pytest.raises(InputError, match=message) as caught:
            read(path, Outcomes())
        assert str(caught.value).startswith(f"{key}: '{path}'")
        assert "\n" not in str(caught.value)


def test_a_utf8_labels_csv_with_a_bom_and_crlf_reads_as_without(tmp_path):
    """What Excel writes as 'CSV UTF-8' on Windows: a byte-order mark and CRLF line ends."""
    from cmr_rd.ingest.pipeline import Outcomes, read_labels

    rows = 'patient_id,label,report\nP1,HCM,"Dr. Müller: septal LGE"\nP2, dcm ,x\n'
    plain, excel = tmp_path / "plain.csv", tmp_path / "excel.csv"
    plain.write_text(rows, encoding="utf-8")
    excel.write_bytes(b"\xef\xbb\xbf" + rows.replace("\n", "\r\n").encode("utf-8"))
    assert read_labels(excel, Outcomes()) == read_labels(plain, Outcomes())
    assert read_labels(plain, Outcomes())[0] == {"P1": "HCM", "P2": "DCM"}
