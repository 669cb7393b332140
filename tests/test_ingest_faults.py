"""Bad input on the LGE path itself: a synthetic export, damaged the ways real ones are."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from cmr_rd.ingest.deid import DeidKey
from cmr_rd.ingest.pipeline import IngestConfig, run_ingest
from cmr_rd.ingest.split import SplitConfig
from cmr_rd.synth.cohort import SynthConfig, generate_cohort

KEY = DeidKey(b"fault-test-key-0123456789", "test")
TINY = SynthConfig(
    scale=0.0,
    min_patients_per_class=4,
    lge_slices=6,
    matrix=96,
    nifti_share=0.25,
    enhanced_share=0.0,
    compressed_share=0.0,
    monochrome1_share=0.0,
    lax_share=0.0,
    cine_phases=1,
)


def _ingest(cohort: Path, out: Path, cfg: IngestConfig | None = None) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_ingest(
            dicom_dir=cohort / "dicom",
            nifti_dir=cohort / "nifti",
            labels_csv=cohort / "labels.csv",
            boxes_csv=cohort / "boxes.csv",
            out_dir=out / "results",
            private_dir=out / "private",
            key=KEY,
            cfg=cfg or IngestConfig(),
            split_cfg=SplitConfig(1, 1, 1),
            seed=0,
            workers=1,
        )


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cohort = root / "cohort"
    generate_cohort(TINY, cohort, seed=11, workers=2)
    clean = _ingest(cohort, root / "clean")
    assert clean["reconciled"] and clean["quarantined"] == 0
    outcomes = pd.read_csv(root / "clean/private/file_outcomes.csv")
    ingested = outcomes[outcomes["outcome"] == "ingested"]["path"].tolist()
    by_patient: dict[str, list[str]] = {}
    for path in ingested:
        if path.endswith(".dcm"):
            by_patient.setdefault(
                str(pydicom.dcmread(path, stop_before_pixels=True).PatientID), []
            ).append(path)
    a, b, c, d, e = sorted(by_patient)[:5]

    Path(by_patient[a][0]).write_bytes(Path(by_patient[a][0]).read_bytes()[:-2000])  # truncated
    for path in by_patient[b]:  # zero PixelSpacing on every selected slice
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [0, 0]
        ds.save_as(path)
    ds = pydicom.dcmread(by_patient[c][0])  # pixel data missing
    del ds.PixelData
    ds.save_as(by_patient[c][0])
    stacks = outcomes[
        outcomes["reason"].fillna("").str.contains("alternative LGE|outside the selection")
    ]
    for path in [
        *by_patient[d],
        *[p for p in stacks["path"] if p.startswith(str(Path(by_patient[d][0]).parents[1]))],
    ]:
        Path(path).unlink(missing_ok=True)  # patient d loses its LGE stacks
    (cohort / "dicom/notes.txt").write_text("export notes, not DICOM\n")
    labels = pd.read_csv(cohort / "labels.csv", dtype=str, keep_default_na=False)
    labels.loc[labels["patient_id"] == e, "label"] = "Takotsubo"
    labels = pd.concat(
        [labels, pd.DataFrame([{"patient_id": "GHOST-1", "label": "HCM", "report": ""}])]
    )
    labels.to_csv(cohort / "labels.csv", index=False)
    with open(cohort / "boxes.csv", "a") as handle:
        handle.write(f"{a},psir,1.2.3,,,50,10,40,20\n")  # x1 > x2
        handle.write(f"{a},psir,1.2.3,first,,10,10,40,20\n")  # frame not an integer
        handle.write(f"{a},psir,1.2.3,,,10,ten,40,20\n")  # non-numeric coordinate
    broken_nifti = sorted((cohort / "nifti").glob("*.nii.gz"))[0]
    broken_nifti.write_bytes(b"not gzip at all")
    summary = _ingest(cohort, root / "damaged")
    return root / "damaged", summary, (a, b, c, d, e, broken_nifti.name.split(".")[0])


def test_counts_still_reconcile(damaged):
    _, summary, _ = damaged
    assert summary["reconciled"] and summary["files_in"] == summary["files_accounted"]


def test_each_fault_has_its_specific_reason(damaged):
    out, _, (a, b, c, d, e, nifti_patient) = damaged
    files = pd.read_csv(out / "private/file_outcomes.csv")
    reasons = set(files.loc[files["outcome"] == "quarantined", "reason"])
    assert "pixel data could not be decoded (ValueError)" in reasons or any(
        r.startswith("pixel data could not be decoded") for r in reasons
    )
    assert "no pixel data element" in reasons
    assert "not a DICOM file: no preamble/file meta and no parseable dataset" in reasons
    assert any(r.startswith("unreadable NIfTI") for r in reasons)
    assert "no usable label row for this patient" in reasons  # patient e, unknown class

    findings = pd.read_csv(out / "private/findings.csv")
    said = {(row.subject, row.reason) for row in findings.itertuples()}
    assert (d, "patient has no usable LGE short-axis stack") in said
    assert ("GHOST-1", "label row has no images") in said
    assert any(s == e and r.startswith("unknown class 'Takotsubo'") for s, r in said)
    box_reasons = set(findings.loc[findings["kind"] == "box_row", "reason"])
    assert box_reasons == {
        "box needs x1 < x2 and y1 < y2",
        "frame/slice_index is not an integer",
        "non-numeric box coordinate",
    }


def test_zero_spacing_is_guarded_and_recorded(damaged):
    out, _, (a, b, *_rest) = damaged
    manifest = pd.read_parquet(out / "results/manifest.parquet")
    patient_b = KEY.pseudonym(b)
    rows = manifest[manifest["patient"] == patient_b]
    assert len(rows) == 3
    assert rows["spacing_source"].str.startswith("assumed").all()
    # Patient a keeps its two good slices; the truncated one is quarantined, not fatal.
    assert (manifest["patient"] == KEY.pseudonym(a)).sum() == 2


def test_a_lesion_box_outside_the_cropped_field_of_view_is_reported(tmp_path):
    """A box in the wrong coordinates (here every one moved to the image's corner) used to vanish
    without a word when the crop around the heart left it out; each is now a finding."""
    cohort = tmp_path / "cohort"
    generate_cohort(TINY, cohort, seed=11, workers=2)
    boxes = pd.read_csv(cohort / "boxes.csv", dtype=str)
    assert len(boxes) > 0  # the MI patients' lesion boxes
    boxes[["x1", "y1", "x2", "y2"]] = ["0", "0", "3", "3"]
    boxes.to_csv(cohort / "boxes.csv", index=False)
    # The crop around the heart that config.yaml sets (120 mm) leaves the image's corner out.
    summary = _ingest(cohort, tmp_path / "out", IngestConfig(crop_fov_mm=120))
    reason = (
        "patient: lesion box outside the cropped field of view: the slice kept, the box dropped"
    )
    manifest = pd.read_parquet(tmp_path / "out/results/manifest.parquet")
    assert manifest["box"].isna().all()
    dropped = summary["findings"].get(reason, 0)
    assert dropped > 0, summary["findings"]
    quarantine = pd.read_csv(tmp_path / "out/results/quarantine.csv")
    listed = quarantine[quarantine["reason"].str.startswith("lesion box outside")]
    assert len(listed) == dropped and (listed["outcome"] == "skipped").all()
    assert summary["reconciled"]


def test_a_box_row_that_names_no_slice_is_reported(tmp_path):
    """A box row whose SOP Instance UID, frame or NIfTI slice is in none of the inputs, or that
    repeats another row's slice, used to be ignored without a word; each is now a finding that
    names its row, and the clean cohort's rows raise none."""
    cohort = tmp_path / "cohort"
    generate_cohort(TINY, cohort, seed=11, workers=2)
    clean = _ingest(cohort, tmp_path / "clean")
    assert not [k for k in clean["findings"] if k.startswith("box_row")], clean["findings"]
    boxes = pd.read_csv(cohort / "boxes.csv", dtype=str, keep_default_na=False)
    sop = boxes.index[boxes["sop_instance_uid"] != ""].tolist()
    nifti = boxes.index[boxes["slice_index"] != ""].tolist()
    assert len(sop) >= 3 and len(nifti) >= 2, boxes  # the generator writes both kinds
    boxes.loc[sop[0], "sop_instance_uid"] = "2.25.404"
    boxes.loc[sop[1], "frame"] = "7"  # a single-frame instance has frame 1 only
    boxes.loc[nifti[0], "slice_index"] = "999"
    boxes.loc[nifti[1], "patient_id"] = "NO-SUCH-PATIENT"
    boxes = pd.concat([boxes, boxes.loc[[sop[2]]]], ignore_index=True)  # a repeated row
    boxes.to_csv(cohort / "boxes.csv", index=False)
    summary = _ingest(cohort, tmp_path / "out")
    findings = pd.read_csv(tmp_path / "out/private/findings.csv")
    rows = findings[findings["kind"] == "box_row"].set_index("subject")["reason"].to_dict()
    line = {i: f"boxes.csv:{i + 2}" for i in range(len(boxes))}
    assert rows == {
        line[sop[0]]: "box row names a SOP Instance UID no DICOM file has",
        line[sop[1]]: "box row names frame 7 of an instance with 1",
        line[nifti[0]]: rows.get(line[nifti[0]]),
        line[nifti[1]]: "box row names a patient without a NIfTI volume",
        line[
            len(boxes) - 1
        ]: f"a second box for the slice of {line[sop[2]]}: that row's box is used",
    }, rows
    assert rows[line[nifti[0]]].startswith("box row names slice_index 999 of a volume with ")
    quarantine = pd.read_csv(tmp_path / "out/results/quarantine.csv")
    assert (quarantine["kind"] == "box_row").sum() == 5
    assert summary["reconciled"]


def test_a_box_row_without_the_frame_of_a_multi_frame_instance_is_reported(tmp_path):
    """An Enhanced MR instance holds every slice as a frame: a box row that names the instance
    but no frame fits none of them, and used to be ignored."""
    cohort = tmp_path / "cohort"
    generate_cohort(dataclasses.replace(TINY, enhanced_share=1.0), cohort, seed=11, workers=2)
    boxes = pd.read_csv(cohort / "boxes.csv", dtype=str, keep_default_na=False)
    framed = boxes.index[boxes["frame"] != ""].tolist()
    assert framed, boxes  # the generator names the frame of every Enhanced MR box
    boxes.loc[framed[0], "frame"] = ""
    boxes.to_csv(cohort / "boxes.csv", index=False)
    _ingest(cohort, tmp_path / "out")
    findings = pd.read_csv(tmp_path / "out/private/findings.csv")
    rows = findings[findings["kind"] == "box_row"]
    assert rows["subject"].tolist() == [f"boxes.csv:{framed[0] + 2}"], rows
    assert re.fullmatch(
        r"box row names an instance of \d+ frames but not its frame", rows["reason"].iloc[0]
    ), rows
