"""Evaluation harness: greedy decoding, per-class answer likelihoods, the paper's metrics.

`scoring` turns a model's own reasoning into one log-likelihood per class, `metrics` turns
completions and scores into a per-sample table and ACC/F1/AUC/IoU, and `harness` runs both on a
checkpoint and a test JSONL (also as `python -m cmr_rd.evaluate.harness`).
"""

from typing import Any

from cmr_rd.evaluate.metrics import compute_metrics, extract_answer, normalise, sample_table

__all__ = [
    "EvalInputError",
    "answer_loglikelihoods",
    "compute_metrics",
    "evaluate_model",
    "extract_answer",
    "normalise",
    "sample_table",
]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `python -m cmr_rd.evaluate.harness` does not find the module
    # already imported by its package (runpy warns about that), and the light jobs that read
    # metrics (report tables, judge, bootstrap) do not import torch and transformers (5 s).
    if name in ("EvalInputError", "evaluate_model"):
        from cmr_rd.evaluate import harness

        return getattr(harness, name)
    if name == "answer_loglikelihoods":
        from cmr_rd.evaluate import scoring

        return scoring.answer_loglikelihoods
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
