"""Diagnose a new study: `python -m cmr_rd.predict` on exams the synthetic scanner exports.

Fast tests use one freshly generated exam (every series: localizer, cine, TI scout, LGE PSIR and
magnitude, LGE long axis) and no model: the slices equal ingestion's, and bad input ends with
exit 2 and one line. Slow tests read studies of the tiny workflow run's own cohort with its
showcase model and compare the answer with the evaluation harness's on the same slices.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cmr_rd.classes import CLASSES
from cmr_rd.devtools import snakemake
from cmr_rd.ingest.deid import DEMO_KEY, DeidKey
from cmr_rd.ingest.pipeline import IngestConfig, Outcomes, index_series, run_ingest
from cmr_rd.ingest.split import SplitConfig
from conftest import copy_run

REPO = Path(__file__).resolve().parents[1]
KEY = DeidKey(DEMO_KEY, "demo")  # data.source synthetic: the pipeline's own pseudonyms
INGEST = {"crop_fov_mm": 120, "slices": {"mode": "central", "count": 3}}  # config.yaml's
MODEL = "results/gppo/sft-ts-iou/seed1/phase3/model"  # tiny.yaml's showcase run, last phase
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    env.pop("CMR_RD_DEID_KEY", None)  # the demo key, as for the synthetic cohort
    return subprocess.run(
        [sys.executable, "-m", "cmr_rd.predict", *args],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip


def phi_found(folder: Path, strings: list[str]) -> dict[str, list[str]]:
    """Planted PHI strings (case-insensitive) in any file below folder -> the files. Text files
    are searched whole, with embedded images left out (base64 makes random hits); a PNG must
    carry no text chunk. Digit-only strings count as whole numbers, not inside a longer one."""
    hits: dict[str, list[str]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".png":
            with Image.open(path) as image:
                assert image.text == {}, path
            continue
        text = DATA_URI.sub("", path.read_text(encoding="utf-8")).lower()
        for s in strings:
            pattern = rf"(?<![0-9a-z]){re.escape(s.lower())}(?![0-9a-z])" if s.isdigit() else None
            if re.search(pattern, text) if pattern else s.lower() in text:
                hits.setdefault(s, []).append(path.name)
    return hits


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the CLI runs here (--threads 1) and the tiny run's evaluations ran:
    a float sum's order, and so a greedy token, may depend on the thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ one exam, no model


@dataclass
class Exam:
    study: Path  # the export's study folder: every series of the exam
    patient_id: str
    phi: list[str]


@pytest.fixture(scope="module")
def exam(tmp_path_factory) -> Exam:
    from cmr_rd.synth.cohort import SynthConfig, build_patient, patient_jobs

    root = tmp_path_factory.mktemp("export")
    cfg = SynthConfig(
        scale=0.0, min_patients_per_class=1, lge_slices=6, matrix=96, cine_phases=1,
        nifti_share=0.0, lax_share=1.0, enhanced_share=0.0, compressed_share=1.0,
        monochrome1_share=1.0,
    )  # fmt: skip
    job = patient_jobs(cfg, seed=11, out_dir=root)[CLASSES.index("MI")]
    result = build_patient(job)
    (study,) = (root / "dicom").glob("*/*")  # PATIENT-FOLDER/DATE_CMR, as a PACS exports it
    return Exam(study, result.patient_id, result.phi)


@pytest.fixture(scope="module")
def no_lge(exam, tmp_path_factory) -> Path:
    """The exam with its LGE short-axis series removed (ingestion's classifier says which)."""
    study = shutil.copytree(exam.study, tmp_path_factory.mktemp("no_lge") / "study")
    found = index_series(study, IngestConfig.from_config(INGEST), Outcomes())
    for stacks in found.candidates.values():
        for stack in stacks:
            for path in stack.files:
                Path(path).unlink()
    assert found.candidates and not index_series(study, IngestConfig(), Outcomes()).candidates
    return study


def test_the_study_reaches_the_model_as_ingestion_renders_it(exam, tmp_path):
    from cmr_rd.predict.study import ROW_KEYS, prepare_study

    cfg = IngestConfig.from_config(INGEST)
    study = prepare_study(exam.study, tmp_path / "predict", KEY, cfg)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"patient_id,label\n{exam.patient_id},MI\n")
    run_ingest(
        dicom_dir=exam.study, nifti_dir=None, labels_csv=labels, boxes_csv=None,
        out_dir=tmp_path / "ingest", private_dir=tmp_path / "private", key=KEY, cfg=cfg,
        split_cfg=SplitConfig(), seed=1,
    )  # fmt: skip
    manifest = pd.read_parquet(tmp_path / "ingest/manifest.parquet")
    assert study.pseudonym == KEY.pseudonym(exam.patient_id) == manifest["patient"].iloc[0]
    assert [r["sha256"] for r in study.rows] == list(manifest["sha256"])  # the same pixels
    assert [r["image"] for r in study.rows] == list(manifest["image"])
    assert (study.source_kind, study.lge_kind, len(study.rows)) == ("dicom", "psir", 3)
    assert all(set(r) == set(ROW_KEYS) for r in study.rows)  # no source path, no label
    for row in study.rows:
        assert (tmp_path / "predict" / row["image"]).is_file()
    # every series of the exam was seen and judged; exactly the PSIR stack was read
    used = [s for s in study.series if s["used"]]
    assert len(used) == 1 and "psir" in used[0]["reason"]
    reasons = " ".join(s["reason"] for s in study.series)
    for kind in ("localizer", "cine", "TI scout", "not a short-axis stack"):
        assert kind in reasons, reasons
    assert phi_found(tmp_path / "predict", exam.phi) == {}


def test_a_study_without_lge_exits_2_naming_what_it_found(no_lge, tmp_path):
    import pydicom

    result = cli(
        str(no_lge), "--model", str(tmp_path / "never-loaded"), "--out", str(tmp_path / "o")
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    line = lines[0]
    assert line.startswith("error: no LGE short-axis series in the study"), line
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in no_lge.rglob("*.dcm")]
    descriptions = {str(h.get("SeriesDescription", "")) for h in headers} - {""}
    assert len(descriptions) >= 4
    for description in descriptions:  # every series by its description, with its reason
        assert repr(description) in line, (description, line)
    assert "cine" in line and "not a short-axis stack" in line
    # the log beside the outputs ends with the same line, and names no one
    log = (tmp_path / "o/predict.log").read_text()
    assert log.strip().splitlines()[-1].endswith(line)
    assert not (tmp_path / "o/prediction.json").exists()


@pytest.mark.parametrize("case", ["not_dicom", "empty", "missing"])
def test_a_folder_that_is_no_study_exits_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CMR_RD_DEID_KEY", raising=False)
    study = tmp_path / "study"
    if case != "missing":
        study.mkdir()
    if case == "not_dicom":
        (study / "notes.txt").write_text("not an image\n")
        (study / "scan.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    from cmr_rd.predict.__main__ import main

    assert main([str(study), "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert captured.out == ""
    expected = {
        "not_dicom": "error: no DICOM or NIfTI image in the study folder: none of its 2 file(s)",
        "empty": "error: the study folder holds no files",
        "missing": "error: the study folder does not exist",
    }[case]
    assert line.startswith(expected), line


def test_real_data_without_a_pseudonym_key_exits_2(exam, tmp_path, capsys, monkeypatch):
    from cmr_rd.predict.__main__ import main

    monkeypatch.delenv("CMR_RD_DEID_KEY", raising=False)
    config = tmp_path / "real.yaml"
    config.write_text("data:\n  source: local\n")
    args = [str(exam.study), "--model", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*args, "--configfile", str(config)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: real data needs a pseudonym key"), line
    assert not (tmp_path / "o/images").exists()


def test_a_folder_with_two_patients_exits_2(exam, tmp_path, capsys, monkeypatch):
    from cmr_rd.predict.__main__ import main
    from cmr_rd.synth.cohort import SynthConfig, build_patient, patient_jobs

    monkeypatch.delenv("CMR_RD_DEID_KEY", raising=False)
    cfg = SynthConfig(
        scale=0.0, min_patients_per_class=1, lge_slices=6, matrix=96, cine_phases=1, nifti_share=0
    )
    build_patient(patient_jobs(cfg, seed=12, out_dir=tmp_path / "other")[0])
    both = tmp_path / "both"
    shutil.copytree(exam.study, both / "a")
    shutil.copytree(next((tmp_path / "other/dicom").glob("*/*")), both / "b")
    assert main([str(both), "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "error: the study folder holds LGE stacks of 2 patients; predict reads one patient's "
        "study at a time"
    )


def test_a_model_that_is_not_a_vlm_exits_2(exam, tmp_path):
    text_only = tmp_path / "gpt2"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    result = cli(str(exam.study), "--model", str(text_only), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: model:") and "not an image-text-to-text model" in line, line


def test_the_outputs_explain_each_slice_and_the_pooled_answer(exam, tmp_path):
    """prediction.json and summary.html from hand-written completions through the evaluation's
    own parser, scores table and pooling (no model): the page escapes the chain, draws the box,
    embeds every slice and carries the disclaimer; the JSON is the pooled answer."""
    from cmr_rd.evaluate.metrics import pool_patients, sample_table
    from cmr_rd.predict.outputs import DISCLAIMER, prediction_record, summary_html, write_outputs
    from cmr_rd.predict.study import prepare_study

    study = prepare_study(exam.study, tmp_path, KEY, IngestConfig.from_config(INGEST))
    completions = [
        "<think>Subendocardial <script>alert(1)</script> enhancement.</think>"
        "<location>[40,50,120,130]</location><answer>MI</answer>",
        "<think>Thin wall.</think><location>[10,10,20,20]</location><answer>NOR</answer>",
        "no format at all",
    ]
    loglik = np.log(np.array([[1, 1, 1, 1, 6, 2], [1, 1, 1, 1, 3, 4], [1, 1, 1, 1, 2, 1.0]]))
    loglik -= np.log(loglik.shape[1] * 2.0)
    records = [{"id": str(i), "patient": study.pseudonym, "label": None} for i in range(3)]
    samples = sample_table(records, completions, loglik, CLASSES)
    prediction = prediction_record(study, samples, pool_patients(samples, CLASSES), {
        "model": "m", "kind": "checkpoint folder", "sha256": "ab" * 32, "produced_by": None,
    }, {})  # fmt: skip
    dx = prediction["diagnosis"]
    mean = loglik.mean(axis=0)
    assert dx["answer"] == CLASSES[int(mean.argmax())] == "MI"
    expected = np.exp(mean - mean.max()) / np.exp(mean - mean.max()).sum()
    np.testing.assert_allclose([dx["probabilities"][c] for c in CLASSES], expected, atol=1e-12)
    assert [s["answer"] for s in prediction["slices"]] == ["MI", "NOR", None]
    assert prediction["slices"][0]["box"] == [40.0, 50.0, 120.0, 130.0]
    assert prediction["slices"][2]["think"] is None and not prediction["slices"][2]["format_valid"]
    assert prediction["disclaimer"] == DISCLAIMER and "not a medical device" in DISCLAIMER
    page = summary_html(prediction, tmp_path, 256)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("data:image/png;base64,") == 3
    assert "<rect x='40' y='50' width='80' height='80'" in page
    assert page.count(DISCLAIMER) == 2 and "id='diagnosis'>MI<small>" in page
    assert "no format at all" in page  # an unparsed completion is shown whole
    json_path, html_path = write_outputs(prediction, tmp_path, 256)
    assert json.loads(json_path.read_text()) == prediction
    assert phi_found(tmp_path, exam.phi) == {}


# ------------------------------------------------------------------ the tiny run's model


@dataclass
class Case:
    study: Path
    pseudonym: str
    source_kind: str
    lge_kind: str


def _cases(run: Path) -> dict[str, Case]:
    """One study of each delivery in the tiny run's cohort, by what ingestion made of it."""
    manifest = pd.read_parquet(run / "results/ingest/manifest.parquet")
    kinds = manifest.groupby("patient")[["source_kind", "lge_kind"]].first()
    folders = {}
    for folder in sorted(p for p in (run / "data/synthetic/dicom").iterdir() if p.is_dir()):
        (study,) = folder.iterdir()
        folders[KEY.pseudonym(folder.name.rsplit("_", 1)[-1])] = study
    for volume in sorted((run / "data/synthetic/nifti").glob("*.nii.gz")):
        folders[KEY.pseudonym(volume.name.removesuffix(".nii.gz"))] = volume
    planted = json.loads((run / "data/synthetic/phi_strings.json").read_text())["burned_in"]
    burned = {KEY.pseudonym(p["patient_id"]) for p in planted}
    cases = {}
    for pseudonym, (source_kind, lge_kind) in kinds.iterrows():
        name = "burned_in_fallback" if pseudonym in burned else source_kind
        if name not in cases and pseudonym in folders:
            cases[name] = Case(folders[pseudonym], pseudonym, source_kind, lge_kind)
    assert set(cases) == {"dicom", "dicom-enhanced", "nifti", "burned_in_fallback"}, cases
    return cases


def _harness(run: Path, pseudonym: str, tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The evaluation harness on the pipeline's own ingested slices of one patient."""
    from cmr_rd.datasets.build import prompt_records
    from cmr_rd.evaluate.harness import evaluate_model
    from cmr_rd.evaluate.metrics import pool_patients

    manifest = pd.read_parquet(run / "results/ingest/manifest.parquet")
    rows = manifest[manifest["patient"] == pseudonym]
    records = prompt_records(rows, rows["split"].iloc[0], (run / "results/ingest").as_posix())
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in records))
    samples, _, _ = evaluate_model(
        str(run / MODEL), test, batch_size=64, max_new_tokens=24, score_batch_size=16
    )
    return samples, pool_patients(samples, CLASSES)


@pytest.fixture(scope="module")
def cases(tiny_run) -> dict[str, Case]:
    return _cases(tiny_run)


@pytest.fixture(scope="module")
def dicom_prediction(tiny_run, cases, tmp_path_factory) -> Path:
    """The CLI, as a user runs it, on a DICOM export of the tiny cohort."""
    out = tmp_path_factory.mktemp("predicted") / "out"
    result = cli(
        str(cases["dicom"].study), "--model", str(tiny_run / MODEL), "--out", str(out),
        "--configfile", str(tiny_run / "config/tiny.yaml"), "--threads", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("diagnosis: ") and "not a medical device" in result.stdout
    assert "public demo key" in result.stderr  # said where a user sees it, not only in the log
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dicom", "dicom-enhanced", "nifti", "burned_in_fallback"])
def test_the_patient_answer_is_the_harness_pooled_answer(
    name, tiny_run, cases, dicom_prediction, tmp_path
):
    from cmr_rd.predict.run import predict_study

    case = cases[name]
    if name == "dicom":
        out = dicom_prediction
    else:
        study = case.study
        if name == "nifti":  # delivered as a folder holding the one volume
            study = tmp_path / "study"
            study.mkdir()
            shutil.copy(case.study, study / case.study.name)
        out = tmp_path / "out"
        predict_study(
            study, str(tiny_run / MODEL), out, ingest=INGEST,
            deid={"key_env": "CMR_RD_TEST_NO_KEY", "key_file": None}, synthetic=True,
            evaluate={"batch_size": 64, "max_new_tokens": 24, "score_batch_size": 16},
        )  # fmt: skip
    prediction = json.loads((out / "prediction.json").read_text())
    samples, pooled = _harness(tiny_run, case.pseudonym, tmp_path)

    assert prediction["patient"] == case.pseudonym
    assert (prediction["study"]["source_kind"], prediction["study"]["lge_kind"]) == (
        case.source_kind, case.lge_kind
    )  # fmt: skip
    (patient,) = pooled.to_dict("records")
    dx = prediction["diagnosis"]
    assert dx["answer"] == patient["predicted"] and dx["slices"] == patient["slices"] == 3
    np.testing.assert_allclose(
        [dx["probabilities"][c] for c in CLASSES], [patient[f"score_{c}"] for c in CLASSES],
        rtol=0, atol=1e-9,
    )  # fmt: skip
    assert abs(sum(dx["probabilities"].values()) - 1) < 1e-9
    # slice by slice: the same pixels, the same chain, box and answer as the harness's
    manifest = pd.read_parquet(tiny_run / "results/ingest/manifest.parquet")
    digests = list(manifest.loc[manifest["patient"] == case.pseudonym, "sha256"])
    slices = prediction["slices"]
    assert [s["completion"] for s in slices] == list(samples["completion"])
    assert [s["answer"] for s in slices] == [
        p if isinstance(p, str) else None for p in samples["predicted"]
    ]
    for s, digest in zip(slices, digests, strict=True):
        import hashlib

        assert hashlib.sha256((out / s["image"]).read_bytes()).hexdigest() == digest
        assert set(s["probabilities"]) == set(CLASSES)
    # lineage: the checkpoint's digest as its producer recorded it, and that producer
    model = prediction["model"]
    recorded = json.loads(
        (tiny_run / "results/gppo/sft-ts-iou/seed1/phase3/train.manifest.json").read_text()
    )
    assert model["sha256"] == recorded["output_dirs"][MODEL]["sha256"]
    assert (
        model["weights_sha256"]
        == recorded["output_dirs"][MODEL]["file_sha256"]["model.safetensors"]
    )
    assert model["produced_by"]["rule"] == "gppo_train"
    assert model["produced_by"]["wildcards"] == {"run": "sft-ts-iou", "seed": "1", "phase": "3"}
    assert "not a medical device" in prediction["disclaimer"]
    # no planted PHI string (of any patient of the cohort) in any output file
    phi = json.loads((tiny_run / "data/synthetic/phi_strings.json").read_text())["strings"]
    assert phi_found(out, phi) == {}
    assert {p.name for p in out.iterdir()} == {
        "prediction.json",
        "summary.html",
        "predict.log",
        "images",
    }


@pytest.mark.slow
def test_a_rerun_gives_the_same_bytes(tiny_run, cases, dicom_prediction, tmp_path):
    from cmr_rd.predict.model import DecodeSettings, Predictor
    from cmr_rd.predict.run import predict_study

    predictor = Predictor(str(tiny_run / MODEL), DecodeSettings(64, 24, 16))
    predict_study(
        cases["dicom"].study, str(tiny_run / MODEL), tmp_path, ingest=INGEST,
        deid={"key_env": "CMR_RD_TEST_NO_KEY", "key_file": None}, synthetic=True, evaluate={},
        predictor=predictor,
    )  # fmt: skip
    for name in ("prediction.json", "summary.html"):
        assert (tmp_path / name).read_bytes() == (dicom_prediction / name).read_bytes(), name


@pytest.mark.slow
@pytest.mark.edits_run
def test_an_edited_checkpoint_is_refused(tiny_run, cases, tmp_path, capsys):
    """As every pipeline job refuses it: the lineage check names the changed file."""
    from cmr_rd.predict.__main__ import main

    work = copy_run(tiny_run, tmp_path / "wf")
    with open(work / MODEL / "config.json", "a") as handle:
        handle.write("\n")
    args = [str(cases["dicom"].study), "--model", str(work / MODEL), "--out", str(tmp_path / "o")]
    assert main([*args, "--configfile", str(work / "config/tiny.yaml")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"checkpoint {MODEL} does not match what rule gppo_train recorded" in line, line
    assert f"changed: {MODEL}/config.json" in line, line
    assert not (tmp_path / "o/prediction.json").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_the_summary_opens_in_a_real_browser(dicom_prediction, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (Debian package `chromium`; .ci/run installs it)")
    page = (dicom_prediction / "summary.html").as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    shot = tmp_path / "summary.png"
    done = subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1100,1400", page],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.shape == (1400, 1100)
    assert pixels.std() > 20, pixels.std()  # not a blank page: text, slices, bars
    # the slices themselves are drawn: a band of dark (image) pixels beside the text
    assert (pixels < 40).mean() > 0.02
    dom = subprocess.run(
        [*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120
    ).stdout
    prediction = json.loads((dicom_prediction / "prediction.json").read_text())
    answer = prediction["diagnosis"]["answer"]
    match = re.search(r"<div class=\"answer\" id=\"diagnosis\">(.*?)<", dom)
    assert match and match.group(1) == answer, dom[:2000]
    assert "not a medical device" in dom
    assert dom.count("<svg") == len(prediction["slices"]) == 3
    assert dom.count("data:image/png;base64,") == 3


@pytest.mark.slow
@pytest.mark.edits_run
def test_the_snakemake_target_predicts_only_when_asked(tiny_run, cases, tmp_path):
    """`snakemake predict` on a finished run reads a new study with the showcase model and runs
    nothing else; the default target includes it only once predict.study is set."""
    work = copy_run(tiny_run, tmp_path / "wf")
    shutil.copytree(cases["dicom"].study, work / "incoming/study")
    tiny = ("--cores", "2", "--configfile", "config/tiny.yaml")
    asked = "predict={study: incoming/study, out_dir: results/predict}"
    dry = snakemake(work, *tiny, "-n")
    assert dry.returncode == 0 and "rule predict" not in dry.stdout + dry.stderr
    # asked for without a study: one line says what to set, no traceback
    unset = snakemake(work, "predict", *tiny, "-n")
    assert unset.returncode != 0 and "predict.study is not set" in unset.stdout + unset.stderr
    assert "Traceback" not in unset.stdout + unset.stderr
    dry = snakemake(work, *tiny, "-n", "--config", asked)
    assert dry.returncode == 0 and "rule predict:" in dry.stdout + dry.stderr, dry.stderr[-2000:]
    done = snakemake(work, "predict", *tiny, "--config", asked)
    assert done.returncode == 0, done.stderr[-4000:]
    jobs = re.findall(r"^(?:local)?rule (\w+):", done.stdout + done.stderr, re.MULTILINE)
    assert jobs == ["predict"], jobs
    out = work / "results/predict"
    prediction = json.loads((out / "prediction.json").read_text())
    assert prediction["patient"] == cases["dicom"].pseudonym
    assert prediction["model"]["model"] == MODEL and prediction["model"]["produced_by"]
    # the job's manifest names the study folder: it stays with the private logs
    manifest = json.loads((work / "logs/predict/manifest.json").read_text())
    assert manifest["rule"] == "predict" and "incoming/study" in manifest["inputs"]
    assert not list(out.glob("*manifest*"))
    phi = json.loads((work / "data/synthetic/phi_strings.json").read_text())["strings"]
    assert phi_found(out, phi) == {}
