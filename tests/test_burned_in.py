"""Burned-in text: no series with a name, MRN or date in its pixels reaches a PNG as it is.

The synthetic cohort stamps overlays into half its patients' PSIR stacks (some tagged
BurnedInAnnotation YES, some not); ingestion runs with the full field of view, so a stack that
slipped through would carry its overlay into the PNG. Every PNG written is then read back with
OCR recognition, and no planted line may be readable in any of them.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from cmr_rd.ingest import burned_in
from cmr_rd.ingest.deid import DeidKey
from cmr_rd.ingest.pipeline import IngestConfig, run_ingest
from cmr_rd.ingest.pixels import normalise
from cmr_rd.ingest.split import SplitConfig
from cmr_rd.synth.cohort import SynthConfig, generate_cohort

KEY = DeidKey(b"burned-in-test-key-0123456789", "test")
COHORT = SynthConfig(
    scale=0.0,
    min_patients_per_class=3,
    lge_slices=6,
    matrix=96,
    nifti_share=0.1,
    enhanced_share=0.2,
    compressed_share=0.2,
    monochrome1_share=0.2,
    lax_share=0.0,
    cine_phases=1,
    burned_in_share=0.5,
)


def _ingest(cohort: Path, out: Path, policy: str) -> dict:
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
            # the full field of view: an overlay that slipped through would be in the PNG
            cfg=IngestConfig(crop_fov_mm=None, burned_in_policy=policy),
            split_cfg=SplitConfig(1, 1, 1),
            seed=0,
            workers=2,
        )


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("burned_in") / "cohort"
    generate_cohort(COHORT, root, seed=21, workers=2)
    return root


@pytest.fixture(scope="module")
def planted(cohort: Path) -> list[dict]:
    overlays = json.loads((cohort / "phi_strings.json").read_text())["burned_in"]
    assert {o["tagged"] for o in overlays} == {True, False}  # both kinds are exercised
    return overlays


@pytest.fixture(scope="module")
def reader():
    """OCR with recognition, as an attacker reading the PNGs would use it."""
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(intra_op_num_threads=1, use_cls=False, print_verbose=False)

    def read(gray: np.ndarray) -> list[str]:
        found, _ = engine(np.ascontiguousarray(gray), use_det=True, use_cls=False, use_rec=True)
        return [text for _, text, _ in found or ()]

    return read


def _alnum(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def readable(lines: list[str], texts: list[str]) -> list[str]:
    """Planted lines that the OCR texts spell out (near enough: '^' reads as nothing or 'A')."""
    seen = [_alnum(t) for t in texts if len(_alnum(t)) >= 4]
    return [
        line
        for line in lines
        if any(
            _alnum(line) in t or difflib.SequenceMatcher(None, _alnum(line), t).ratio() >= 0.8
            for t in seen
        )
    ]


def _series_dirs(outcomes: pd.DataFrame, reason_start: str) -> set[str]:
    rows = outcomes[outcomes["reason"].fillna("").str.startswith(reason_start)]
    return {str(Path(p).parent) for p in rows["path"]}


def _psir_dir(cohort: Path, patient_id: str) -> str:
    (folder,) = [d for d in (cohort / "dicom").glob(f"*_{patient_id}/*/*") if _is_psir(d)]
    return str(folder)


def _is_psir(folder: Path) -> bool:
    """The LGE PSIR stack is the cohort's only series of real (signed) images."""
    first = sorted(folder.glob("*.dcm"))[0]
    return list(pydicom.dcmread(first, stop_before_pixels=True).ImageType)[2] == "R"


def _all_pngs(out: Path) -> list[Path]:
    return sorted((out / "results" / "images").rglob("*.png"))


def test_quarantine_policy_refuses_every_burned_in_series(cohort, planted, reader, tmp_path):
    summary = _ingest(cohort, tmp_path, "quarantine")
    assert summary["reconciled"]
    outcomes = pd.read_csv(tmp_path / "private/file_outcomes.csv")
    by_tag = _series_dirs(outcomes, burned_in.BURNED_IN_TAG)
    by_ocr = _series_dirs(outcomes, burned_in.BURNED_IN_TEXT)
    expected_tag = {_psir_dir(cohort, o["patient_id"]) for o in planted if o["tagged"]}
    expected_ocr = {_psir_dir(cohort, o["patient_id"]) for o in planted if not o["tagged"]}
    assert by_tag == expected_tag  # the tag alone refuses, without a look at the pixels
    assert by_ocr == expected_ocr  # untagged overlays are found by OCR, and nothing else is
    # the patients keep their magnitude stack: nobody is lost to an overlay on the PSIR
    manifest = pd.read_parquet(tmp_path / "results/manifest.parquet")
    assert manifest["patient"].nunique() == summary["patients"]
    burned = {KEY.pseudonym(o["patient_id"]) for o in planted}
    assert set(manifest[manifest["patient"].isin(burned)]["lge_kind"]) == {"magnitude"}
    lines = [line for o in planted for line in o["lines"]]
    leaks = {
        p.name: readable(lines, reader(np.asarray(Image.open(p)))) for p in _all_pngs(tmp_path)
    }
    assert {k: v for k, v in leaks.items() if v} == {}


def test_mask_policy_blacks_out_the_text_and_records_it(cohort, planted, reader, tmp_path):
    summary = _ingest(cohort, tmp_path, "mask")
    assert summary["reconciled"]
    masked = summary["findings"].get("patient: burned-in text masked", 0)
    # A stack in which the detector still sees a line after masking is refused instead.
    outcomes = pd.read_csv(tmp_path / "private/file_outcomes.csv")
    refused = _series_dirs(outcomes, burned_in.BURNED_IN_TEXT)
    assert masked >= len(planted) // 2
    assert masked + len(refused) == len(planted)
    assert refused <= {_psir_dir(cohort, o["patient_id"]) for o in planted}
    manifest = pd.read_parquet(tmp_path / "results/manifest.parquet")
    assert manifest["patient"].nunique() == summary["patients"]
    lines = [line for o in planted for line in o["lines"]]
    for png in _all_pngs(tmp_path):
        assert readable(lines, reader(np.asarray(Image.open(png)))) == [], png.name


def test_the_reader_can_read_an_overlay(cohort, planted, reader):
    """The PNG check above could fail: the same reader spells out an unmasked overlay."""
    overlay = next(o for o in planted if not o["tagged"])
    first = sorted(Path(_psir_dir(cohort, overlay["patient_id"])).glob("*.dcm"))[0]
    pixels = pydicom.dcmread(first).pixel_array.astype(float)
    (image01,) = normalise([pixels], (0.5, 99.5))
    big = np.asarray(Image.fromarray((image01 * 255).astype(np.uint8)).resize((256, 320)))
    assert readable(overlay["lines"], reader(big))
    assert burned_in.text_lines(image01)


def test_clean_slices_have_no_text_lines(cohort, planted):
    """The detector boxes the LV ring on every slice; the line-shape gate keeps it out."""
    burned = {o["patient_id"] for o in planted}
    clean = [d for d in (cohort / "dicom").glob("*/*/*") if _is_psir(d)]
    clean = [d for d in clean if d.parts[-3].rsplit("_", 1)[-1] not in burned]
    assert len(clean) >= 6
    for folder in clean:
        for path in sorted(folder.glob("*.dcm"))[:2]:
            ds = pydicom.dcmread(path)
            frames = ds.pixel_array if ds.pixel_array.ndim == 3 else [ds.pixel_array]
            (image01,) = normalise([np.asarray(frames[0], dtype=float)], (0.5, 99.5))
            assert burned_in.text_lines(image01) == [], path.name


def test_a_missing_ocr_engine_stops_ingestion_with_a_clear_message(cohort, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)
    burned_in._engine.cache_clear()
    try:
        with pytest.raises(burned_in.OcrUnavailable, match="rapidocr-onnxruntime"):
            _ingest(cohort, tmp_path, "quarantine")
    finally:
        burned_in._engine.cache_clear()
    assert not (tmp_path / "results/images").exists()


def test_an_unknown_policy_is_refused_by_name(cohort, tmp_path):
    from cmr_rd.ingest.pipeline import InputError

    with pytest.raises(InputError, match="ingest.burned_in.policy"):
        _ingest(cohort, tmp_path, "blur")


def test_the_headless_opencv_is_installed_not_the_gui_build():
    """rapidocr declares opencv-python, whose GUI libraries need libGL; the lock pins headless."""
    assert metadata.version("opencv-python-headless")
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("opencv-python")


OFFLINE_PROBE = """
import socket
def refuse(*args, **kwargs):
    raise OSError("network use during the offline probe")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
import numpy as np
from cmr_rd.ingest.burned_in import text_lines
from cmr_rd.rewrite.phi_detector import categories
from cmr_rd.synth.overlay import stamp
image = np.zeros((160, 128)) + 0.2
image[60:100, 40:90] = 0.8
print(len(text_lines(stamp(image, ["DOE^JANE", "2021-03-04"], 11) / 1.2)), len(text_lines(image)))
print(categories("Electronically signed by Anna Berg, MD on March 3, 2021."))
"""


def test_ocr_and_detector_run_without_network():
    """Nothing is fetched at run time: sockets refuse, HF_HUB_OFFLINE=1, a fresh process."""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    command = [sys.executable, "-c", OFFLINE_PROBE]
    # Where user namespaces are allowed, also take the network away at the OS level.
    isolated = bool(shutil.which("unshare")) and (
        subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    )
    command = ["unshare", "-rn", *command] if isolated else command
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    counts, cats = out.stdout.strip().splitlines()
    assert counts.split() == ["2", "0"]
    assert "dates" in cats and "name" in cats


def test_ocr_slices_all_looks_at_every_slice_one_at_the_middle():
    """The trade-off of `ingest.burned_in.ocr_slices`, stated: text on one slice only."""
    from cmr_rd.synth.overlay import stamp

    clean = np.zeros((160, 128)) + 0.2
    clean[60:100, 40:90] = 0.8
    marked = stamp(clean, ["DOE^JANE", "2021-03-04"], 11) / 1.2
    first_only = [marked, clean / 1.2, clean / 1.2]
    assert not burned_in.screen_burned_in(first_only, "quarantine", False, "one").refused
    assert burned_in.screen_burned_in(first_only, "quarantine", False, "all").refused
    middle = [clean / 1.2, marked, clean / 1.2]
    assert burned_in.screen_burned_in(middle, "quarantine", False, "one").refused
