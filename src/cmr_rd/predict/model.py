"""The model side of predict: load a checkpoint as the evaluation does, say where it came from,
and read a study's slices with the evaluation harness's own decoding, scoring and pooling.

Lineage: a checkpoint inside a pipeline workspace (a folder with `results/`) is checked against
the manifest of the rule that wrote it (`cmr_rd.checkpoints.verify_checkpoint`: an edited
checkpoint is refused, as every pipeline job refuses it) and reported with that rule, its
wildcards (run, seed, phase), git commit, config hash and training summary. A folder from
elsewhere, or a cached hub id, is reported with its own digest and no producer.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cmr_rd.checkpoints import recorded_digest, verify_checkpoint
from cmr_rd.classes import CLASSES
from cmr_rd.datasets.build import prompt_records
from cmr_rd.evaluate.harness import EvalInputError, decode_and_score, load_model
from cmr_rd.evaluate.metrics import pool_patients
from cmr_rd.lineage import build_index, checkpoint_digest
from cmr_rd.predict.study import PredictInputError, Study
from cmr_rd.stage import looks_like_path

log = logging.getLogger("cmr_rd.predict")

WEIGHTS = "model.safetensors"
INGEST_MANIFEST = "results/ingest/manifest.json"
SPLIT = "predict"  # the split name the study's rows carry on their way through prompt_records


@dataclass(frozen=True)
class DecodeSettings:
    """The evaluation's settings (config `evaluate`), so a study is read as a test patient."""

    batch_size: int = 64
    max_new_tokens: int = 192
    score_batch_size: int = 16

    @classmethod
    def from_config(cls, evaluate: dict) -> DecodeSettings:
        keys = ("batch_size", "max_new_tokens", "score_batch_size")
        return cls(**{k: evaluate[k] for k in keys if k in evaluate})


def workspace_of(model_path: Path) -> Path | None:
    """The pipeline workspace a checkpoint folder lies in: the nearest ancestor holding the
    folder below its `results/`."""
    resolved = model_path.resolve()
    for parent in resolved.parents:
        if parent.name == "results":
            return parent.parent
    return None


def training_ingest(model_ref: str) -> tuple[dict | None, str | None]:
    """The ingest settings the checkpoint's training images were rendered with (the workspace's
    ingest manifest), so a new study's slices are made the same way; (None, None) if unknown."""
    if not looks_like_path(model_ref):
        return None, None
    root = workspace_of(Path(model_ref))
    manifest = root / INGEST_MANIFEST if root else None
    if manifest is None or not manifest.is_file():
        return None, None
    try:
        ingest = json.loads(manifest.read_text(encoding="utf-8"))["params"]["ingest"]
    except (ValueError, KeyError, TypeError):
        return None, None
    return (ingest, INGEST_MANIFEST) if isinstance(ingest, dict) else (None, None)


def _producer(root: Path, model_path: Path) -> dict:
    """The checkpoint's digests and the run that wrote it, from the workspace's manifests."""
    index = build_index(root)
    rel = model_path.resolve().relative_to(root.resolve()).as_posix()
    manifest = verify_checkpoint(rel, root=root, index=index)  # CheckpointError if edited
    if manifest is None:
        return {}
    data = index.manifests[manifest]
    files = recorded_digest(index, rel).get("file_sha256") or {}
    outputs = data.get("outputs") or {}
    summary_path = next((p for p in outputs if p.endswith("train_summary.json")), None)
    summary = {}
    if summary_path and (root / summary_path).is_file():
        loaded = json.loads((root / summary_path).read_text(encoding="utf-8"))
        summary = {k: loaded.get(k) for k in ("steps", "max_steps", "final_loss")}
    return {
        "sha256": index.digest(rel)["sha256"],
        "files": index.digest(rel)["files"],
        "weights_sha256": files.get(WEIGHTS),
        "produced_by": {
            "manifest": manifest,
            "rule": data.get("rule"),
            "wildcards": data.get("wildcards") or {},
            "git": data.get("git"),
            "config_sha256": data.get("config_sha256"),
            "train_summary": summary_path,
            "train_summary_sha256": outputs.get(summary_path),
            **({"training": summary} if summary else {}),
        },
    }


def model_lineage(model_ref: str) -> dict:
    """Checkpoint hash (the folder digest the pipeline's manifests record, and the weights
    file's sha256) and the run that produced it; a hub id is reported as such."""
    if not looks_like_path(model_ref):
        return {"model": model_ref, "kind": "hub id", "sha256": None, "produced_by": None}
    path = Path(model_ref)
    if not path.is_dir():
        raise PredictInputError(f"model: {model_ref} is not a model folder")
    root = workspace_of(path)
    found = _producer(root, path) if root else {}
    if not found:
        digest = checkpoint_digest(path)
        found = {
            "sha256": digest["sha256"],
            "files": digest["files"],
            "weights_sha256": digest["file_sha256"].get(WEIGHTS),
            "produced_by": None,
        }
    return {"model": Path(model_ref).as_posix(), "kind": "checkpoint folder", **found}


class Predictor:
    """A loaded model with its lineage: start-up once, then `read` as many studies as asked."""

    def __init__(self, model_ref: str, settings: DecodeSettings = DecodeSettings()) -> None:  # noqa: B008
        self.model_ref = str(model_ref)
        self.settings = settings
        self.lineage = model_lineage(self.model_ref)
        try:
            self.model, self.processor = load_model(self.model_ref)
        except EvalInputError as exc:
            raise PredictInputError(str(exc)) from None
        log.info(
            "model %s: checkpoint sha256 %s, %s",
            self.model_ref, self.lineage["sha256"],
            f"written by {self.lineage['produced_by']['manifest']}"
            if self.lineage["produced_by"] else "no pipeline manifest records it",
        )  # fmt: skip

    def records(self, study: Study, out_dir: Path) -> list[dict[str, Any]]:
        """The study's slices as test records: the training prompt, image paths under out_dir."""
        rows = pd.DataFrame(study.rows)
        rows = rows.assign(patient=study.pseudonym, label=None, box=None, split=SPLIT)
        return prompt_records(rows, SPLIT, Path(out_dir).as_posix())

    def read(self, study: Study, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """(per-slice table, one-row patient table, timings): the evaluation's code path."""
        records = self.records(study, out_dir)
        s = self.settings
        samples, timing = decode_and_score(
            self.model, self.processor, records, s.batch_size, s.max_new_tokens,
            s.score_batch_size,
        )  # fmt: skip
        patient = pool_patients(samples, CLASSES)
        return samples, patient, timing
