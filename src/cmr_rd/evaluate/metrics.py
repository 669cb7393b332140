"""Per-sample table and the paper's metrics (ACC, macro F1, one-vs-rest AUC, MI box IoU).

Two readings of a completion are kept apart. `parse_completion` (strict) says whether the whole
completion is the format; `extract_answer` (lenient) reads the answer and box slots even when the
rest is malformed, because ACC in the paper scores the stated diagnosis. `accuracy_strict` is
the GPPO-reward view, which also requires the valid format. Everything metric-like goes through
scikit-learn, so the numbers are the standard definitions and not a local variant.

The same metrics are also computed per PATIENT (`pool_patients`, metrics.json's `patient` part),
and AUC is left undefined, with a note, for a model that gives no per-class scores (`scores_note`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from cmr_rd.classes import CLASSES, canonical_label
from cmr_rd.format import box_iou, parse_box, parse_completion

UNPARSED = "unparsed"  # the predicted label of a completion with no readable class
IOU_HIT = 0.5
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_LOCATION = re.compile(r"<location>(.*?)</location>", re.DOTALL)


def normalise(loglik: np.ndarray) -> np.ndarray:
    """Softmax across classes per row: the per-class score (rows sum to 1) used for AUC."""
    loglik = np.asarray(loglik, dtype=np.float64)
    shifted = loglik - loglik.max(axis=1, keepdims=True)
    expo = np.exp(shifted)
    return expo / expo.sum(axis=1, keepdims=True)


def _single(text: str, pattern: re.Pattern[str], open_tag: str, close_tag: str) -> str | None:
    """The content of the one `open…close` pair, or None if either tag is missing or repeated."""
    if text.count(open_tag) != 1 or text.count(close_tag) != 1:
        return None
    match = pattern.search(text)
    return match.group(1) if match else None


def extract_answer(text: str) -> tuple[str | None, tuple[float, ...] | None]:
    """(class, box) read leniently from the answer and location slots, each None if unreadable.

    The class is `canonical_label` of the single `<answer>` pair's content (so a full name or
    odd case still counts); the box is `parse_box` of the single `<location>` pair's content.
    """
    if not isinstance(text, str):
        return None, None
    answer = _single(text, _ANSWER, "<answer>", "</answer>")
    location = _single(text, _LOCATION, "<location>", "</location>")
    label = canonical_label(answer) if answer is not None else None
    box = parse_box(location)[0] if location is not None else None
    return label, box


def _box_list(box: Any) -> list[float] | None:
    if box is None:
        return None
    values = [float(v) for v in box]
    if len(values) != 4:
        raise ValueError(f"a box needs 4 numbers, got {len(values)}")
    return values


def sample_table(
    records: Sequence[dict[str, Any]],
    completions: Sequence[str],
    loglik: np.ndarray,
    classes: Sequence[str] = CLASSES,
) -> pd.DataFrame:
    """One row per record, in order: truth, completion, both parses, correctness, boxes, scores.

    `iou` is a float column: the IoU of the predicted box with the truth box where there is a
    truth box (0.0 without a predicted box), NaN elsewhere, so the column survives parquet.
    """
    classes = list(classes)
    loglik = np.asarray(loglik, dtype=np.float64)
    if len(records) != len(completions) or loglik.shape != (len(records), len(classes)):
        raise ValueError(
            f"{len(records)} records, {len(completions)} completions and log-likelihoods of "
            f"shape {loglik.shape} do not match (expected ({len(records)}, {len(classes)}))"
        )
    scores = normalise(loglik) if len(records) else loglik
    rows = []
    for i, (record, text) in enumerate(zip(records, completions, strict=True)):
        truth = canonical_label(record.get("label"))
        strict = parse_completion(text)
        predicted, box = extract_answer(text)
        box_true = _box_list(record.get("box"))
        box_pred = _box_list(box)
        iou = None
        if box_true is not None:
            iou = box_iou(box_true, box_pred) if box_pred is not None else 0.0
        row = {
            "id": str(record.get("id", i)),
            "patient": record.get("patient"),
            "image": (record.get("images") or [None])[0],
            "label": truth,
            "completion": text,
            "think": strict.think if strict.valid else None,
            "format_valid": bool(strict.valid),
            "format_reason": strict.reason,
            "parsed": predicted is not None,
            "predicted": predicted,
            "correct": predicted is not None and predicted == truth,
            "correct_strict": bool(strict.valid and truth is not None and strict.label == truth),
            "box_true": box_true,
            "box_pred": box_pred,
            "iou": iou,
        }
        for j, c in enumerate(classes):
            row[f"score_{c}"] = float(scores[i, j])
        for j, c in enumerate(classes):
            row[f"loglik_{c}"] = float(loglik[i, j])
        rows.append(row)
    columns = [
        "id", "patient", "image", "label", "completion", "think", "format_valid",
        "format_reason", "parsed", "predicted", "correct", "correct_strict", "box_true",
        "box_pred", "iou",
        *(f"score_{c}" for c in classes), *(f"loglik_{c}" for c in classes),
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)
    table["iou"] = table["iou"].astype("float64")
    return table


def _r(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _check(samples: pd.DataFrame, classes: list[str]) -> None:
    if UNPARSED in classes:
        raise ValueError(f"{UNPARSED!r} cannot be a class name")
    if samples is None or len(samples) == 0:
        raise ValueError("cannot compute metrics on an empty sample table")
    needed = ["label", "predicted", "format_valid", "parsed", "box_true", "iou"]
    needed += [f"score_{c}" for c in classes]
    missing = [c for c in needed if c not in samples.columns]
    if missing:
        raise ValueError(f"sample table lacks columns: {', '.join(missing)}")
    unknown = sorted({str(v) for v in samples["label"] if v not in classes})
    if unknown:
        raise ValueError(f"unknown truth label(s) {unknown}; classes are {classes}")
    bad = sorted({str(v) for v in samples["predicted"] if is_present(v) and v not in classes})
    if bad:
        raise ValueError(f"unknown predicted label(s) {bad}; classes are {classes}")


def is_present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


NO_SCORES_NOTE = "no per-class scores: the model returned no log-probabilities"
POOL_LOGLIK = "mean log-likelihood"  # the patient-level answer and AUC from pooled scores
POOL_VOTE = "majority vote"  # the fallback when some slice has no per-class scores


def _loglik(samples: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Per-row, per-class log-likelihoods: the `loglik_*` columns, or log of the softmax scores.

    The two differ by a per-row constant (the log-sum-exp), which neither an argmax nor a softmax
    over classes can see, even after a mean over slices.
    """
    if all(f"loglik_{c}" in samples.columns for c in classes):
        return samples[[f"loglik_{c}" for c in classes]].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.log(samples[[f"score_{c}" for c in classes]].to_numpy(dtype=np.float64))


def scores_note(samples: pd.DataFrame, classes: Sequence[str] = CLASSES) -> str | None:
    """Why per-class scores cannot be used, or None when every row has all of them.

    A model served through an API may return no log-probabilities (NaN scores). AUC is computed
    only when EVERY row is scored: an AUC over the scored subset would rank a different test set
    from the one ACC and F1 count, and a row lacks scores for reasons (refusal, truncation) that
    are not independent of its difficulty.
    """
    classes = list(classes)
    scores = samples[[f"score_{c}" for c in classes]].to_numpy(dtype=np.float64)
    unscored = int((~np.isfinite(scores).all(axis=1)).sum())
    if unscored == 0:
        return None
    if unscored == len(samples):
        return NO_SCORES_NOTE
    return (
        f"per-class scores missing for {unscored} of {len(samples)} slices: AUC is computed only "
        "when every slice has them"
    )


def _core(
    y_true: list[str], y_pred: list[str], scores: np.ndarray | None, classes: list[str],
    note: str | None,
) -> dict:  # fmt: skip
    """ACC, macro F1, per-class recall and n, OvR AUC (None with `note` when scores is None)."""
    labels = [*classes, UNPARSED]
    matrix = confusion_matrix(y_true, y_pred, labels=labels)[: len(classes)]
    per_class_n = {c: int(matrix[i].sum()) for i, c in enumerate(classes)}
    per_class_accuracy = {
        c: _r(matrix[i, i] / per_class_n[c]) if per_class_n[c] else None
        for i, c in enumerate(classes)
    }
    present = [c for c in classes if per_class_n[c]]
    auc_per_class: dict[str, float | None] = dict.fromkeys(classes)
    if scores is not None and len(present) >= 2:
        truth = np.asarray(y_true)
        for c in present:
            auc_per_class[c] = _r(roc_auc_score(truth == c, scores[:, classes.index(c)]))
    elif scores is not None:
        note = "fewer than two classes in the truth"
    defined = [v for v in auc_per_class.values() if v is not None]
    return {
        "accuracy": _r(accuracy_score(y_true, y_pred)),
        "macro_f1": _r(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "auc_macro": _r(float(np.mean(defined))) if defined else None,
        "auc_per_class": auc_per_class,
        "auc_note": note,
        "per_class_accuracy": per_class_accuracy,
        "per_class_n": per_class_n,
        "confusion": {"labels": labels, "matrix": matrix.astype(int).tolist()},
    }


def pool_patients(samples: pd.DataFrame, classes: Sequence[str] = CLASSES) -> pd.DataFrame:
    """One row per patient (sorted by id): patient, label, slices, predicted, score_*, pooling.

    A clinician diagnoses a patient, not a slice. When every slice has per-class scores, a
    patient's score for class c is the MEAN of its slices' log-likelihoods of c: the log of the
    geometric mean of the slice likelihoods, a product of experts (each slice a piece of evidence)
    normalised by the slice count, so a patient with ten slices is not more confident than one
    with three for that reason alone. The patient's answer is the pooled argmax (ties: the first
    class in class order) and its AUC scores are the softmax of the pooled log-likelihoods. Note
    that this answer comes from the scores, while a slice's answer is the parsed text.

    When any slice lacks scores (an API model without log-probabilities), every patient's answer
    is instead the majority of its slices' parsed answers (ties broken by class order; a patient
    with no parsed answer is unparsed), and the score columns are NaN. One rule for the whole
    table, so no two patients are judged in different ways.

    A patient whose slices carry different truth labels is refused: the unit has one diagnosis.
    """
    classes = list(classes)
    if "patient" not in samples.columns:
        raise ValueError("sample table lacks the patient column (needed for patient-level metrics)")
    patient = samples["patient"]
    if not patient.map(is_present).all():
        ids = list(samples.loc[~patient.map(is_present), "id"])[:5] if "id" in samples else []
        raise ValueError(f"sample rows without a patient: {ids}")
    keys = patient.astype(str).to_numpy()
    truth = samples["label"].astype(str).to_numpy()
    order, inverse = np.unique(keys, return_inverse=True)
    mixed = pd.Series(truth).groupby(keys).nunique()
    if (mixed > 1).any():
        first = str(mixed[mixed > 1].index[0])
        found = sorted(set(truth[keys == first]))
        raise ValueError(f"patient {first!r} has slices labelled {found}")
    slices = np.bincount(inverse, minlength=len(order))
    pooled = scores_note(samples, classes) is None
    if pooled:
        sums = np.zeros((len(order), len(classes)))
        np.add.at(sums, inverse, _loglik(samples, classes))
        mean = sums / slices[:, None]
        predicted = [classes[j] for j in mean.argmax(axis=1)]
        scores = mean - mean.max(axis=1, keepdims=True)
        scores = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    else:
        votes = np.zeros((len(order), len(classes)), dtype=np.int64)
        for i, p in zip(inverse, samples["predicted"], strict=True):
            if is_present(p):
                votes[i, classes.index(p)] += 1
        predicted = [
            classes[int(v.argmax())] if v.any() else None for v in votes
        ]  # argmax takes the first of tied maxima: class order
        scores = np.full((len(order), len(classes)), np.nan)
    label_of = {k: t for k, t in zip(keys, truth, strict=True)}
    table = pd.DataFrame(
        {
            "patient": order,
            "label": [label_of[k] for k in order],
            "slices": slices.astype(np.int64),
            "predicted": predicted,
            **{f"score_{c}": scores[:, j] for j, c in enumerate(classes)},
        }
    )
    table["pooling"] = POOL_LOGLIK if pooled else POOL_VOTE
    return table


def patient_metrics(samples: pd.DataFrame, classes: Sequence[str] = CLASSES) -> dict:
    """The `patient` part of metrics.json: ACC, macro F1, OvR AUC, per-class recall and n over
    patients, from `pool_patients`."""
    classes = list(classes)
    pooled = pool_patients(samples, classes)
    y_true = list(pooled["label"])
    y_pred = [p if is_present(p) else UNPARSED for p in pooled["predicted"]]
    note = scores_note(samples, classes)
    scores = None if note else pooled[[f"score_{c}" for c in classes]].to_numpy()
    return {
        "level": "patient",
        "pooling": str(pooled["pooling"].iloc[0]),
        "n_patients": int(len(pooled)),
        "slices_per_patient": [int(pooled["slices"].min()), int(pooled["slices"].max())],
        **_core(y_true, y_pred, scores, classes, note),
    }


def compute_metrics(samples: pd.DataFrame, classes: Sequence[str] = CLASSES) -> dict:
    """ACC (lenient and strict), macro F1, OvR AUC, per-class recall, MI IoU and confusion, per
    slice; the same per patient under `patient` (see `pool_patients`).

    JSON-ready: plain Python types, floats rounded to 6 decimals, None where a metric is undefined
    (a class absent from the truth; AUC with fewer than two classes present or without per-class
    scores, with `auc_note` saying which; no MI boxes).
    """
    classes = list(classes)
    _check(samples, classes)
    y_true = [str(v) for v in samples["label"]]
    y_pred = [str(v) if is_present(v) else UNPARSED for v in samples["predicted"]]
    y_strict = [
        p if bool(valid) else UNPARSED
        for p, valid in zip(y_pred, samples["format_valid"], strict=True)
    ]
    note = scores_note(samples, classes)
    scores = None if note else samples[[f"score_{c}" for c in classes]].to_numpy(np.float64)
    core = _core(y_true, y_pred, scores, classes, note)

    is_mi = samples["label"].astype(str).eq("MI") & samples["box_true"].map(is_present)
    ious = samples.loc[is_mi, "iou"].astype("float64").fillna(0.0).to_numpy()
    n = len(samples)
    return {
        "n": int(n),
        "classes": classes,
        "accuracy": core["accuracy"],
        "accuracy_strict": _r(accuracy_score(y_true, y_strict)),
        "macro_f1": core["macro_f1"],
        "auc_macro": core["auc_macro"],
        "auc_per_class": core["auc_per_class"],
        "auc_note": core["auc_note"],
        "per_class_accuracy": core["per_class_accuracy"],
        "per_class_n": core["per_class_n"],
        "format_valid_rate": _r(samples["format_valid"].astype(bool).mean()),
        "parse_rate": _r(samples["parsed"].astype(bool).mean()),
        "mi_n_boxes": int(len(ious)),
        "mi_mean_iou": _r(ious.mean()) if len(ious) else None,
        "mi_acc_at_50": _r((ious >= IOU_HIT).mean()) if len(ious) else None,
        "confusion": core["confusion"],
        "patient": patient_metrics(samples, classes),
    }
