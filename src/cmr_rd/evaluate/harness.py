"""Evaluate any image-text-to-text checkpoint on a test JSONL: per-sample table and metrics.

    python -m cmr_rd.evaluate.harness --model M --test T --out-dir D [--batch-size 16]
        [--max-new-tokens 256] [--score-batch-size 16] [--limit N]

writes D/samples.parquet and D/metrics.json. The model is read greedily in a fixed order (the
same `generate_batch` the training checks use), then each class is scored by its answer
log-likelihood after the model's own reasoning, so the metrics are a function of the checkpoint
and the test set alone: two runs on one machine give byte-identical metrics.json. Wall times are
returned apart from the metrics for that reason. Exit code 2 with one line on stderr for a bad
model or test file (rerunning will not help).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cmr_rd.classes import CLASSES, canonical_label
from cmr_rd.evaluate.metrics import compute_metrics, sample_table
from cmr_rd.evaluate.scoring import answer_loglikelihoods, count_forward_passes
from cmr_rd.model.backbone import BackboneError, check_image_size, load_backbone
from cmr_rd.model.generate import greedy_completions
from cmr_rd.model.runtime import TrainInputError, load_records

EXIT_BAD_INPUT = 2


class EvalInputError(Exception):
    """A model or test file the harness cannot use, in one line that names it."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def load_test_records(test_jsonl: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Prompt records with a known truth label; all image paths checked up front."""
    try:
        records = load_records(Path(test_jsonl), need_assistant=False)
    except TrainInputError as exc:
        raise EvalInputError(f"test set: {exc}") from exc
    if limit is not None:
        if limit < 1:
            raise EvalInputError(f"limit must be >= 1, got {limit}")
        records = records[:limit]
    for number, record in enumerate(records, start=1):
        if canonical_label(record.get("label")) is None:
            raise EvalInputError(
                f"test set {test_jsonl}: record {number} ({record.get('id')}) has label "
                f"{record.get('label')!r}, not one of {', '.join(CLASSES)}"
            )
    return records


def load_model(model_ref: str) -> tuple[Any, Any]:
    """The model (eval mode, on CUDA when there is one) and its processor, or EvalInputError."""
    try:
        model, processor = load_backbone(str(model_ref))
        check_image_size(processor, model)
    except BackboneError as exc:
        raise EvalInputError(f"model: {exc}") from exc
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, processor


def evaluate_model(
    model_ref: str,
    test_jsonl: str | Path,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    score_batch_size: int = 16,
    limit: int | None = None,
) -> tuple[pd.DataFrame, dict, dict]:
    """(samples, metrics, timing) for a model folder or cached hub id on a test JSONL."""
    if batch_size < 1 or score_batch_size < 1 or max_new_tokens < 1:
        raise EvalInputError("batch_size, score_batch_size and max_new_tokens must be >= 1")
    records = load_test_records(test_jsonl, limit)
    model, processor = load_model(model_ref)
    samples, timing = decode_and_score(
        model, processor, records, batch_size, max_new_tokens, score_batch_size
    )
    return samples, compute_metrics(samples, CLASSES), timing


def decode_and_score(
    model: Any,
    processor: Any,
    records: list[dict[str, Any]],
    batch_size: int = 16,
    max_new_tokens: int = 256,
    score_batch_size: int = 16,
) -> tuple[pd.DataFrame, dict]:
    """(per-sample table, timing) of a loaded model on prompt records: greedy decoding in a fixed
    order, then every class's answer log-likelihood after the model's own reasoning. The one
    reading of a model that the evaluation and `cmr_rd.predict` share."""
    torch.manual_seed(0)

    started = time.perf_counter()
    completions = greedy_completions(model, processor, records, batch_size, max_new_tokens)
    decode_seconds = time.perf_counter() - started

    started = time.perf_counter()
    with count_forward_passes(model) as counter:
        loglik = answer_loglikelihoods(
            model, processor, records, completions, CLASSES, batch_size=score_batch_size
        )
    score_seconds = time.perf_counter() - started

    samples = sample_table(records, completions, loglik, CLASSES)
    timing = {
        "decode_seconds": round(decode_seconds, 3),
        "score_seconds": round(score_seconds, 3),
        "samples": len(records),
        "decode_samples_per_s": round(len(records) / decode_seconds, 3),
        "forward_passes_for_scoring": counter.calls,
    }
    return samples, timing


def write_outputs(out_dir: Path, samples: pd.DataFrame, metrics: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    samples.to_parquet(out_dir / "samples.parquet", index=False)
    text = json.dumps(metrics, sort_keys=True, indent=2) + "\n"
    (out_dir / "metrics.json").write_text(text, encoding="utf-8")


def evaluate_job(
    name: str,
    model: str,
    test: str,
    metrics_path: str,
    timing_path: str,
    threads: int,
    batch_size: int,
    max_new_tokens: int,
    score_batch_size: int,
    limit: int | None,
) -> dict:
    """The `evaluate` rule's work (run in a warm child by cmr_rd.warm.call): samples.parquet and
    metrics.json beside `metrics_path`, the wall times in `timing_path`; the metrics back."""
    torch.set_num_threads(threads)
    samples, metrics, timing = evaluate_model(
        model, test, batch_size=batch_size, max_new_tokens=max_new_tokens,
        score_batch_size=score_batch_size, limit=limit,
    )  # fmt: skip
    metrics = {"model": name, "checkpoint": model, **metrics}
    write_outputs(Path(metrics_path).parent, samples, metrics)
    # Wall times: kept out of the deterministic outputs.
    Path(timing_path).write_text(json.dumps(timing, indent=2, sort_keys=True) + "\n")
    return {"metrics": metrics}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cmr_rd.evaluate.harness",
        description="Greedy decoding + per-class answer likelihoods -> samples.parquet, "
        "metrics.json",
    )
    parser.add_argument("--model", required=True, help="model folder or cached hub id")
    parser.add_argument("--test", required=True, help="test prompts JSONL (with labels)")
    parser.add_argument("--out-dir", required=True, help="folder for samples.parquet/metrics.json")
    parser.add_argument("--batch-size", type=int, default=16, help="greedy decoding batch")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--score-batch-size", type=int, default=16, help="samples per forward")
    parser.add_argument("--limit", type=int, help="evaluate only the first N records")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Progress bars on stderr would make a one-line error several lines in a Snakemake log.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        samples, metrics, timing = evaluate_model(
            args.model,
            args.test,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            score_batch_size=args.score_batch_size,
            limit=args.limit,
        )
    except EvalInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    write_outputs(Path(args.out_dir), samples, metrics)
    print(
        f"evaluate: n={metrics['n']} acc={metrics['accuracy']} f1={metrics['macro_f1']} "
        f"auc={metrics['auc_macro']} valid_format={metrics['format_valid_rate']} "
        f"decode {timing['decode_seconds']} s, score {timing['score_seconds']} s "
        f"({timing['forward_passes_for_scoring']} forward passes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
