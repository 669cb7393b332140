"""Ingestion over a real-world corpus nobody here wrote: every DICOM file pydicom and
pydicom-data ship (truncated, no meta header, corrupt JPEG, big endian, deflate, missing pixel
data, MONOCHROME1, Enhanced MR...). Nothing crashes and every file is accounted for."""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from pathlib import Path

import data_store
import pandas as pd
import pydicom
import pytest

from cmr_rd.ingest.deid import DeidKey
from cmr_rd.ingest.index import list_files, read_header
from cmr_rd.ingest.pipeline import IngestConfig, pixel_check, run_ingest
from cmr_rd.ingest.split import SplitConfig

SOURCES = {
    "pydicom": Path(pydicom.__file__).parent / "data",
    "pydicom_data": Path(data_store.__file__).parent / "data",
}
SPECIFIC_REASONS = (
    "not a DICOM file",
    "hidden file",
    "truncated file",
    "not an image",
    "secondary capture",
    "not MR",
    "derived/secondary image type",
    "parametric map",
    "TI scout",
    "localizer",
    "cine",
    "perfusion",
    "not LGE",
    "LGE but",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for name, source in SOURCES.items():
        for path in source.rglob("*"):
            if path.is_file() and path.suffix not in (".py", ".pyc"):
                target = root / name / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(path, target)
    return root


def test_corpus_is_the_expected_size(corpus):
    # The pydicom wheel ships 86+ test files and pydicom-data 68 more (see NOTES.md).
    assert len(list_files(corpus / "pydicom_data")) >= 68
    assert len(list_files(corpus)) >= 200


def test_ingestion_never_crashes_and_counts_reconcile(corpus, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mr_patient = next(
            r["patient_id"]
            for r in map(read_header, list_files(corpus))
            if r["status"] == "ok" and r.get("modality") == "MR" and r["patient_id"]
        )
    labels = tmp_path / "labels.csv"
    pd.DataFrame(
        {
            "patient_id": [mr_patient, "NO-SUCH-PATIENT", "ODD-LABEL"],
            "label": ["HCM", "DCM", "Takotsubo"],
        }
    ).to_csv(labels, index=False)
    out, private = tmp_path / "out", tmp_path / "private"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_ingest(
            dicom_dir=corpus,
            nifti_dir=None,
            labels_csv=labels,
            boxes_csv=None,
            out_dir=out,
            private_dir=private,
            key=DeidKey(b"corpus-test-key-0123456789", "test"),
            cfg=IngestConfig(),
            split_cfg=SplitConfig(),
            seed=0,
            workers=2,
        )
    n_files = len(list_files(corpus))
    assert summary["files_in"] == n_files == summary["files_accounted"]
    assert summary["ingested"] + summary["skipped"] + summary["quarantined"] == n_files
    assert summary["reconciled"] is True
    assert json.loads((out / "reconcile.json").read_text()) == summary

    outcomes = pd.read_csv(private / "file_outcomes.csv")
    assert len(outcomes) == n_files and outcomes["path"].is_unique
    unused = outcomes[outcomes["outcome"] != "ingested"]
    assert unused["reason"].map(lambda r: r.startswith(SPECIFIC_REASONS)).all(), set(
        unused["reason"]
    )
    assert (outcomes["outcome"] == "quarantined").sum() >= 10  # non-DICOM files are there

    # User mistakes are reported by name (privately) and by pseudonym (publicly).
    findings = pd.read_csv(private / "findings.csv")
    by_subject = dict(zip(findings["subject"], findings["reason"], strict=True))
    assert by_subject["NO-SUCH-PATIENT"] == "label row has no images"
    assert by_subject["ODD-LABEL"].startswith("unknown class 'Takotsubo'")
    assert by_subject[mr_patient] == "patient has no usable LGE short-axis stack"
    public = (out / "quarantine.csv").read_text()
    assert "Takotsubo" not in public and "NO-SUCH-PATIENT" not in public
    assert "unknown class label" in public


def test_pixel_path_gives_an_image_or_a_specific_reason_for_every_file(corpus):
    results = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in list_files(corpus):
            reason = pixel_check(path)
            results["ok" if reason is None else reason.split(" (")[0]] += 1
    assert results["ok"] >= 80  # MONOCHROME1, big endian, deflate, RLE, J2K, Enhanced MR render
    assert results["no pixel data element"] >= 1
    assert results["pixel data could not be decoded"] >= 1  # corrupt codestreams
    assert results["not a DICOM file: no preamble/file meta and no parseable dataset"] >= 1
    assert results["colour pixel data"] >= 1
    assert sum(results.values()) == len(list_files(corpus))
