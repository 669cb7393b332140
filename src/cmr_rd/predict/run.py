"""One study, folder to result: ingestion's code path, the evaluation's reading, two outputs."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from cmr_rd.ingest.deid import DeidKey, load_key
from cmr_rd.ingest.pipeline import IngestConfig
from cmr_rd.predict.model import DecodeSettings, Predictor, training_ingest
from cmr_rd.predict.outputs import DISCLAIMER, prediction_record, write_outputs
from cmr_rd.predict.study import prepare_study

log = logging.getLogger("cmr_rd.predict")

LOG_NAME = "predict.log"


def pseudonym_key(deid: dict, synthetic: bool) -> DeidKey:
    """The pipeline's pseudonym key (config `deid`), so the study's pseudonym is the one its
    ingestion would give; the public demo key only where data.source is synthetic. The demo
    key's warning goes to the log (one line), not as a warning to the console."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        key = load_key(deid["key_env"], deid.get("key_file"), synthetic=synthetic)
    if key.origin == "demo":
        log.info("pseudonym key: the public demo key (data.source is synthetic)")
    else:
        log.info("pseudonym key: %s", key.origin)
    return key


def ingest_settings(model_ref: str, ingest: dict) -> tuple[dict, str]:
    """The ingest settings the model's own training images were made with where its workspace
    records them, else the configured ones: a slice must reach the model as in training."""
    trained, source = training_ingest(model_ref)
    if trained is None:
        return ingest, "config (ingest)"
    if trained != ingest:
        log.info("ingest settings: the model's workspace's (%s), not the configured ones", source)
    return trained, source


def predict_study(
    study_dir: str | Path,
    model_ref: str,
    out_dir: str | Path,
    *,
    ingest: dict,
    deid: dict,
    synthetic: bool,
    evaluate: dict,
    predictor: Predictor | None = None,
    timings: dict[str, float] | None = None,
) -> dict:
    """Read one study with one model: prediction.json, summary.html and predict.log in out_dir.

    Returns the prediction. A study, model or setting that cannot be used raises one of the
    library's known errors (PredictInputError, MissingKeyError, InputError, OcrUnavailable,
    CheckpointError) with a one-line message that names no source path or identifier; the same
    line ends the log. `predictor`: a model already loaded (the benchmark's warm start);
    `timings`, if given, receives wall seconds per step (kept out of the outputs).
    """
    timings = {} if timings is None else timings
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / LOG_NAME, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    started = time.perf_counter()
    try:
        log.info("%s", DISCLAIMER)
        ingest, ingest_source = ingest_settings(str(model_ref), ingest)
        cfg = IngestConfig.from_config(ingest)
        key = pseudonym_key(deid, synthetic)
        study = prepare_study(study_dir, out_dir, key, cfg)
        prepared = time.perf_counter()
        if predictor is None:
            predictor = Predictor(str(model_ref), DecodeSettings.from_config(evaluate))
        loaded = time.perf_counter()
        samples, patient, timing = predictor.read(study, out_dir)
        settings = {
            "ingest": ingest,
            "ingest_source": ingest_source,
            "decode": asdict(predictor.settings),
            "deid_key_origin": key.origin,
        }
        prediction = prediction_record(study, samples, patient, predictor.lineage, settings)
        write_outputs(prediction, out_dir, cfg.image_size)
        dx = prediction["diagnosis"]
        log.info(
            "diagnosis %s (p %.3f), pooled over %d slice(s) (%s); per slice: %s",
            dx["answer"], dx["probabilities"].get(dx["answer"], float("nan")), dx["slices"],
            dx["pooling"], ", ".join(str(s["answer"]) for s in prediction["slices"]),
        )  # fmt: skip
        timings.update(
            study=prepared - started, model_load=loaded - prepared,
            decode=timing["decode_seconds"], score=timing["score_seconds"],
            total=time.perf_counter() - started,
        )  # fmt: skip
        log.info("seconds: %s", ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
        return prediction
    except Exception as exc:
        # The one line ends this log; the caller (the CLI, RuleRun) reports it on its own side.
        line = " ".join(str(exc).split())
        handler.handle(
            log.makeRecord(log.name, logging.ERROR, __file__, 0, "error: %s", (line,), None)
        )
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
