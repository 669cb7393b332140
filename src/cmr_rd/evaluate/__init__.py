"""Evaluation harness: greedy decoding, per-class answer likelihoods, the paper's metrics.

`scoring` turns a model's own reasoning into one log-likelihood per class, `metrics` turns
completions and scores into a per-sample table and ACC/F1/AUC/IoU, and `harness` runs both on a
checkpoint and a test JSONL (also as `python -m cmr_rd.evaluate.harness`).
"""

from typing import Any

from cmr_rd.evaluate.metrics import compute_metrics, extract_answer, sample_table
from cmr_rd.evaluate.scoring import answer_loglikelihoods, normalise

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
    # already imported by its package (runpy warns about that).
    if name in ("EvalInputError", "evaluate_model"):
        from cmr_rd.evaluate import harness

        return getattr(harness, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
