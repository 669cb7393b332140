"""Bootstrap intervals over PATIENTS, every resample at once, as matrix products.

The test split holds ~30 patients per class, so one patient moves a per-class accuracy by 0.033.
The unit that is sampled is the patient: a patient's slices share anatomy, scanner and disease,
so they are not independent draws, and resampling slices would understate the spread. A resample
is a row of a (B x n_patients) count matrix, drawn per class (stratified: each class keeps its
number of patients, as the split's design fixes them, so no resample loses a class and no
per-class recall or AUC becomes undefined). A slice weighs what its patient's count says, so a
patient's slices move together.

Every evaluation of the report is scored on the same test patients, so ONE count matrix serves
every seed of a row, every row and both sides of a paired comparison: the seeds' and the sides'
draws are computed on the same resampled test sets. A cell's interval is the 2.5 and 97.5
percentiles of the mean over seeds; it measures test-set sampling, while the ± std beside it is
the spread over training seeds.

Each metric is the weighted form of the scikit-learn definition `compute_metrics` uses (a weight
of 2 is a duplicated row), so on unit weights it gives sklearn's number:
- accuracy, per-class recall, macro F1 (over all classes, zero where undefined) from weighted
  TP, predicted and true counts;
- one-vs-rest AUC as the weighted Mann-Whitney statistic (ties count 1/2), from one sort of the
  scores and cumulative sums of the negatives' weights below each tied group;
- MI mean IoU and Acc@0.5 as weighted means over the MI slices with a truth box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from cmr_rd.classes import CLASSES
from cmr_rd.evaluate.metrics import IOU_HIT, is_present, pool_patients, scores_note

BOOTSTRAP_SEED_OFFSET = 404  # the resamples' stream: numpy default_rng([seed, offset])
LEVEL = 0.95


@dataclass(frozen=True)
class Cohort:
    """The test patients, sorted by id, with their truth class index."""

    patients: tuple[str, ...]
    labels: np.ndarray

    def index(self, keys: Sequence[str]) -> np.ndarray:
        where = {p: i for i, p in enumerate(self.patients)}
        return np.asarray([where[str(k)] for k in keys], dtype=np.int64)


def cohort_of(frames: Sequence[pd.DataFrame], classes: Sequence[str] = CLASSES) -> Cohort:
    """The union of the evaluations' patients; a patient labelled two ways is refused."""
    classes = list(classes)
    pairs = pd.concat(
        [
            pd.DataFrame({"patient": f["patient"].astype(str), "label": f["label"].astype(str)})
            for f in frames
        ],
        ignore_index=True,
    ).drop_duplicates()
    twice = pairs["patient"].duplicated(keep=False)
    if twice.any():
        first = sorted(pairs.loc[twice, "patient"])[0]
        found = sorted(pairs.loc[pairs["patient"] == first, "label"])
        raise ValueError(f"patient {first!r} is labelled {found} across evaluations")
    pairs = pairs.sort_values("patient", kind="stable")
    unknown = sorted(set(pairs["label"]) - set(classes))
    if unknown:
        raise ValueError(f"unknown truth label(s) {unknown}; classes are {classes}")
    labels = np.asarray([classes.index(x) for x in pairs["label"]], dtype=np.int64)
    return Cohort(tuple(pairs["patient"]), labels)


def resample_counts(cohort: Cohort, iterations: int, seed: int) -> np.ndarray:
    """(iterations x n_patients) float counts: how often each patient is drawn, per resample.

    Drawn per class, n_c patients with replacement from the n_c patients of class c.
    """
    if iterations < 1:
        raise ValueError(f"bootstrap iterations must be >= 1, got {iterations}")
    rng = np.random.default_rng([seed, BOOTSTRAP_SEED_OFFSET])
    counts = np.zeros((iterations, len(cohort.patients)))
    for c in range(int(cohort.labels.max()) + 1 if len(cohort.labels) else 0):
        members = np.flatnonzero(cohort.labels == c)
        if len(members):
            uniform = np.full(len(members), 1.0 / len(members))
            counts[:, members] = rng.multinomial(len(members), uniform, size=iterations)
    return counts


@dataclass(frozen=True)
class Units:
    """What one evaluation scores at one level (slices or patients), as index arrays."""

    patient: np.ndarray  # (n,) the cohort column each unit belongs to
    truth: np.ndarray  # (n,) class index
    predicted: np.ndarray  # (n,) class index, -1 for unparsed
    scores: np.ndarray | None  # (n, K) per-class scores; None without them (AUC undefined)
    iou: np.ndarray  # (n,) MI box IoU (0 without a predicted box), NaN for other units


def _class_index(values, classes: list[str]) -> np.ndarray:
    return np.asarray([classes.index(v) if is_present(v) else -1 for v in values], dtype=np.int64)


def slice_units(samples: pd.DataFrame, cohort: Cohort, classes: Sequence[str] = CLASSES) -> Units:
    classes = list(classes)
    has_box = samples["label"].astype(str).eq("MI") & samples["box_true"].map(is_present)
    iou = samples["iou"].astype("float64").fillna(0.0).where(has_box, np.nan).to_numpy()
    scored = scores_note(samples, classes) is None
    return Units(
        patient=cohort.index(samples["patient"].astype(str)),
        truth=_class_index(samples["label"].astype(str), classes),
        predicted=_class_index(samples["predicted"], classes),
        scores=samples[[f"score_{c}" for c in classes]].to_numpy(np.float64) if scored else None,
        iou=iou,
    )


def patient_units(samples: pd.DataFrame, cohort: Cohort, classes: Sequence[str] = CLASSES) -> Units:
    classes = list(classes)
    pooled = pool_patients(samples, classes)
    scores = pooled[[f"score_{c}" for c in classes]].to_numpy(np.float64)
    return Units(
        patient=cohort.index(pooled["patient"]),
        truth=_class_index(pooled["label"], classes),
        predicted=_class_index(pooled["predicted"], classes),
        scores=scores if np.isfinite(scores).all() else None,
        iou=np.full(len(pooled), np.nan),
    )


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def weighted_auc(weights: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """(B,) weighted Mann-Whitney AUC: P(score of a positive > score of a negative), ties 1/2.

    weights (B x n), positive (n,) bool, score (n,). One sort; units of equal score form a
    group; each positive earns the negatives' weight in lower groups plus half its own group's.
    """
    order = np.argsort(score, kind="stable")
    s, pos, w = score[order], positive[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos_w, neg_w = w * pos, w * ~pos
    if len(starts) < len(s):  # tied scores: sum each group of equal scores
        pos_w = np.add.reduceat(pos_w, starts, axis=1)
        neg_w = np.add.reduceat(neg_w, starts, axis=1)
    below = np.cumsum(neg_w, axis=1) - neg_w
    wins = (pos_w * (below + 0.5 * neg_w)).sum(axis=1)
    return _divide(wins, pos_w.sum(axis=1) * neg_w.sum(axis=1))


def metric_draws(
    units: Units, counts: np.ndarray, classes: Sequence[str] = CLASSES
) -> dict[str, np.ndarray]:
    """Every metric of `units` under every resample: {name: (B,) array}, NaN where undefined.

    Names follow metrics.json: accuracy, macro_f1, auc_macro, per_class_accuracy/C,
    auc_per_class/C, mi_mean_iou, mi_acc_at_50.
    """
    classes = list(classes)
    k = len(classes)
    w = counts[:, units.patient]  # a unit weighs its patient's count
    truth = np.eye(k)[units.truth]  # (n, K) one-hot
    predicted = np.zeros((len(units.predicted), k))
    parsed = units.predicted >= 0
    predicted[parsed, units.predicted[parsed]] = 1.0
    true_n, predicted_n, tp = w @ truth, w @ predicted, w @ (truth * predicted)
    out = {"accuracy": _divide(tp.sum(axis=1), w.sum(axis=1))}
    recall = _divide(tp, true_n)
    f1 = np.where(true_n + predicted_n > 0, _divide(2 * tp, true_n + predicted_n), 0.0)
    out["macro_f1"] = f1.mean(axis=1)
    present = [j for j in range(k) if (units.truth == j).any()]
    auc = np.full((len(counts), k), np.nan)
    if units.scores is not None and len(present) >= 2:
        for j in present:
            auc[:, j] = weighted_auc(w, units.truth == j, units.scores[:, j])
    out["auc_macro"] = auc[:, present].mean(axis=1) if present else auc[:, 0]
    for j, c in enumerate(classes):
        out[f"per_class_accuracy/{c}"] = recall[:, j]
        out[f"auc_per_class/{c}"] = auc[:, j]
    mi = ~np.isnan(units.iou)
    mi_w = w[:, mi]
    out["mi_mean_iou"] = _divide(mi_w @ units.iou[mi], mi_w.sum(axis=1))
    out["mi_acc_at_50"] = _divide(mi_w @ (units.iou[mi] >= IOU_HIT), mi_w.sum(axis=1))
    return out


# ---- intervals over seeds ------------------------------------------------------------------------


def seed_mean(draws: Sequence[np.ndarray]) -> np.ndarray:
    """(B,) mean over seeds per resample, over the seeds where the metric is defined."""
    stacked = np.vstack([np.asarray(d, dtype=np.float64) for d in draws])
    defined = ~np.isnan(stacked)
    total = np.where(defined, stacked, 0.0).sum(axis=0)
    return _divide(total, defined.sum(axis=0).astype(np.float64))


def interval(draws: Sequence[np.ndarray], level: float = LEVEL) -> tuple[float | None, ...]:
    """(lo, hi): the percentile interval of the mean over seeds; (None, None) if undefined."""
    if not draws:
        return None, None
    mean = seed_mean(draws)
    mean = mean[~np.isnan(mean)]
    if not len(mean):
        return None, None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(mean, [tail, 100 - tail])
    return float(lo), float(hi)


def paired(
    left: Sequence[np.ndarray], right: Sequence[np.ndarray], level: float = LEVEL
) -> tuple[float | None, float | None, float | None]:
    """(lo, hi, p) for left - right on the same resamples (means over each side's seeds).

    p is one-sided, for "left > right": the share of resamples where left - right <= 0, with
    the +1 correction ((1 + k) / (1 + B)), so it is never 0 and stays a valid p-value for a
    finite B. Resamples where either side is undefined are left out.
    """
    if not left or not right:
        return None, None, None
    diff = seed_mean(left) - seed_mean(right)
    diff = diff[~np.isnan(diff)]
    if not len(diff):
        return None, None, None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(diff, [tail, 100 - tail])
    p = (1 + int((diff <= 0).sum())) / (1 + len(diff))
    return float(lo), float(hi), float(p)


# ---- every evaluation of a report ----------------------------------------------------------------


@dataclass(frozen=True)
class Draws:
    """Per evaluation (keyed as the caller keys them), per level, every metric's draws."""

    iterations: int
    seed: int
    n_patients: int
    slice: dict[str, dict[str, np.ndarray]]
    patient: dict[str, dict[str, np.ndarray]]


def evaluation_draws(
    frames: Mapping[str, pd.DataFrame],
    iterations: int,
    seed: int,
    classes: Sequence[str] = CLASSES,
) -> Draws:
    """One count matrix for all evaluations (they share the test patients), then each
    evaluation's slice- and patient-level draws."""
    keys = sorted(frames)
    cohort = cohort_of([frames[k] for k in keys], classes)
    counts = resample_counts(cohort, iterations, seed)
    # The products are small (B x units by units x classes): BLAS threads would only wait for
    # each other, 20-50x slower on a busy node than one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        by_slice = {k: metric_draws(slice_units(frames[k], cohort, classes), counts, classes)
                    for k in keys}  # fmt: skip
        by_patient = {k: metric_draws(patient_units(frames[k], cohort, classes), counts, classes)
                      for k in keys}  # fmt: skip
    return Draws(iterations, seed, len(cohort.patients), by_slice, by_patient)
