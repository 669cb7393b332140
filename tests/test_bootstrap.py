"""Patient-level pooling and the vectorised patient bootstrap: each weighted metric is sklearn's
on unit weights and on a resample written out as duplicated rows; intervals resample patients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmr_rd.classes import CLASSES
from cmr_rd.evaluate import bootstrap as bs
from cmr_rd.evaluate.metrics import (
    NO_SCORES_NOTE,
    POOL_LOGLIK,
    POOL_VOTE,
    compute_metrics,
    pool_patients,
    sample_table,
)

BOX = [40.0, 40.0, 120.0, 120.0]


def _done(label: str, box: str = "[40,40,120,120]") -> str:
    return f"<think>reasons</think><location>{box}</location><answer>{label}</answer>"


def _table(rows: list[tuple[str, str, str, list[float]]]) -> pd.DataFrame:
    """rows: (patient, truth, completion, loglik per class)."""
    records = [
        {"id": f"s{i}", "patient": p, "images": [f"/x/{i}.png"], "label": t,
         "box": BOX if t == "MI" else None}
        for i, (p, t, _, _) in enumerate(rows)
    ]  # fmt: skip
    loglik = np.asarray([r[3] for r in rows], dtype=float)
    return sample_table(records, [r[2] for r in rows], loglik)


def synthetic(patients_per_class: int, slices: int, seed: int, signal: float = 1.0):
    """A cohort whose slices of one patient share a patient effect: noisy, class-informative
    log-likelihoods (some copied from an earlier slice, so scores tie), parsed answers that
    follow them, some unparsed, MI boxes of varying IoU."""
    rng = np.random.default_rng(seed)
    rows = []
    for c, truth in enumerate(CLASSES):
        for k in range(patients_per_class):
            patient = f"{truth}-{k:03d}"
            effect = rng.normal(0, 1.0, len(CLASSES))
            for _ in range(slices):
                ll = effect + rng.normal(0, 1.0, len(CLASSES)) - 3.0
                ll[c] += signal
                if rows and rng.random() < 0.3:  # tied scores, as AUC must handle them
                    ll = np.asarray(rows[-int(rng.integers(1, len(rows) + 1))][3])
                answer = CLASSES[int(ll.argmax())]
                shift = int(rng.integers(0, 60))
                box = f"[{40 + shift},40,{120 + shift},120]"
                text = _done(answer, box) if rng.random() > 0.1 else "<think>cut off"
                rows.append((patient, truth, text, list(ll)))
    return _table(rows)


# ---- the weighted metrics are sklearn's -------------------------------------------------------


def _same(draws: dict, metrics: dict, level: str) -> None:
    """Each draw (one resample) equals compute_metrics' number, to its 6 stored decimals."""
    part = metrics["patient"] if level == "patient" else metrics
    expected = {
        "accuracy": part["accuracy"],
        "macro_f1": part["macro_f1"],
        "auc_macro": part["auc_macro"],
        **{f"per_class_accuracy/{c}": v for c, v in part["per_class_accuracy"].items()},
        **{f"auc_per_class/{c}": v for c, v in part["auc_per_class"].items()},
    }
    if level == "slice":
        expected |= {"mi_mean_iou": part["mi_mean_iou"], "mi_acc_at_50": part["mi_acc_at_50"]}
    for key, value in expected.items():
        (got,) = draws[key]
        if value is None:
            assert np.isnan(got), key
        else:
            assert got == pytest.approx(value, abs=6e-7), key


def test_weighted_metrics_equal_sklearn_on_unit_weights():
    samples = synthetic(patients_per_class=6, slices=3, seed=0)
    metrics = compute_metrics(samples)
    assert metrics["mi_n_boxes"] == 18 and 0 < metrics["mi_mean_iou"] < 1
    cohort = bs.cohort_of([samples])
    ones = np.ones((1, len(cohort.patients)))
    _same(bs.metric_draws(bs.slice_units(samples, cohort), ones), metrics, "slice")
    _same(bs.metric_draws(bs.patient_units(samples, cohort), ones), metrics, "patient")


def test_a_resample_equals_sklearn_on_the_duplicated_rows():
    """Counts of 0-3 per patient are the same as a table in which each patient's slices appear
    that many times (as distinct patients, for the patient level)."""
    samples = synthetic(patients_per_class=5, slices=2, seed=1)
    cohort = bs.cohort_of([samples])
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 4, len(cohort.patients)).astype(float)
    for c in range(len(CLASSES)):  # keep every class (and the MI boxes) present
        members = np.flatnonzero(cohort.labels == c)
        counts[members[0]] = max(counts[members[0]], 1)
    copies = []
    for patient, n in zip(cohort.patients, counts.astype(int), strict=True):
        rows = samples[samples["patient"] == patient]
        copies += [rows.assign(patient=f"{patient}#{k}") for k in range(n)]
    duplicated = pd.concat(copies, ignore_index=True)
    metrics = compute_metrics(duplicated)
    assert metrics["n"] == int(sum(counts[cohort.index(samples["patient"])]))
    _same(bs.metric_draws(bs.slice_units(samples, cohort), counts[None]), metrics, "slice")
    _same(bs.metric_draws(bs.patient_units(samples, cohort), counts[None]), metrics, "patient")


def test_weighted_auc_counts_ties_one_half():
    positive = np.array([True, True, False, False])
    score = np.array([0.5, 0.9, 0.5, 0.1])
    # pairs: (0.5 vs 0.5) 1/2, (0.5 vs 0.1) 1, (0.9 vs both) 2 -> 3.5 of 4
    assert bs.weighted_auc(np.ones((1, 4)), positive, score)[0] == pytest.approx(0.875)
    assert bs.weighted_auc(np.array([[2.0, 1, 1, 1]]), positive, score)[0] == pytest.approx(
        (2 * 1.5 + 2) / 6
    )


# ---- patient pooling on a hand-made example -----------------------------------------------------


def _ll(**values: float) -> list[float]:
    return [values.get(c, -10.0) for c in CLASSES]


HAND = [
    # A (HCM): two slices lean slightly to DCM, one is sure of HCM. The slice majority says DCM,
    # the pooled likelihoods say HCM: mean HCM -0.833, DCM -2.667.
    ("A", "HCM", _done("DCM"), _ll(HCM=-1.2, DCM=-1.0)),
    ("A", "HCM", _done("DCM"), _ll(HCM=-1.2, DCM=-1.0)),
    ("A", "HCM", _done("HCM"), _ll(HCM=-0.1, DCM=-6.0)),
    # B (MI): every slice says MI.
    ("B", "MI", _done("MI"), _ll(MI=-0.2)),
    ("B", "MI", _done("MI"), _ll(MI=-0.3)),
    ("B", "MI", "<think>cut off", _ll(MI=-0.4)),
    # C (NOR): two slices say NOR weakly, one is sure of DCM: the pooled answer is DCM (wrong)
    # while the majority is right. Mean NOR -2.0, DCM -1.0.
    ("C", "NOR", _done("NOR"), _ll(NOR=-0.5, DCM=-1.0)),
    ("C", "NOR", _done("NOR"), _ll(NOR=-0.5, DCM=-1.0)),
    ("C", "NOR", _done("DCM"), _ll(NOR=-5.0, DCM=-1.0)),
]


def test_patient_pooling_takes_the_mean_log_likelihood_not_the_slice_majority():
    samples = _table(HAND)
    pooled = pool_patients(samples).set_index("patient")
    assert list(pooled.index) == ["A", "B", "C"] and set(pooled["pooling"]) == {POOL_LOGLIK}
    assert list(pooled["predicted"]) == ["HCM", "MI", "DCM"]
    assert list(pooled["slices"]) == [3, 3, 3]
    mean_a = np.mean([r[3] for r in HAND[:3]], axis=0)
    expected = np.exp(mean_a) / np.exp(mean_a).sum()
    got = pooled.loc["A", [f"score_{c}" for c in CLASSES]].to_numpy(float)
    np.testing.assert_allclose(got, expected, rtol=1e-12)

    m = compute_metrics(samples)
    assert m["accuracy"] == round(5 / 9, 6)  # slices: A 1/3, B 2/3 (one unparsed), C 2/3
    p = m["patient"]
    assert p["level"] == "patient" and p["pooling"] == POOL_LOGLIK
    assert p["n_patients"] == 3 and p["slices_per_patient"] == [3, 3]
    assert p["accuracy"] == round(2 / 3, 6)  # A and B right, C wrong
    assert p["per_class_accuracy"] == {
        "HCM": 1.0, "DCM": None, "CAM": None, "LVNC": None, "MI": 1.0, "NOR": 0.0
    }  # fmt: skip
    assert p["per_class_n"] == {"HCM": 1, "DCM": 0, "CAM": 0, "LVNC": 0, "MI": 1, "NOR": 1}
    assert p["auc_per_class"]["HCM"] == 1.0 and p["auc_note"] is None
    # Slice-count invariance: the same slices twice over give the same patient scores.
    doubled = pool_patients(pd.concat([samples, samples], ignore_index=True))
    np.testing.assert_allclose(
        doubled[[f"score_{c}" for c in CLASSES]], pool_patients(samples)[doubled.columns[4:10]]
    )


def test_without_scores_the_patient_answer_is_the_slice_majority_and_auc_is_none():
    samples = _table(HAND)
    for column in samples.columns:
        if column.startswith(("score_", "loglik_")):
            samples[column] = np.nan
    m = compute_metrics(samples)
    assert m["auc_macro"] is None and set(m["auc_per_class"].values()) == {None}
    assert m["auc_note"] == NO_SCORES_NOTE
    assert m["accuracy"] == round(5 / 9, 6)  # the parsed answers still count
    pooled = pool_patients(samples)
    assert set(pooled["pooling"]) == {POOL_VOTE}
    assert list(pooled["predicted"]) == ["DCM", "MI", "NOR"]  # the majorities
    p = m["patient"]
    assert p["pooling"] == POOL_VOTE and p["accuracy"] == round(2 / 3, 6)
    assert p["auc_macro"] is None and p["auc_note"] == NO_SCORES_NOTE
    # The bootstrap has no AUC to draw either, and says so with an empty interval.
    cohort = bs.cohort_of([samples])
    counts = bs.resample_counts(cohort, 50, seed=3)
    draws = bs.metric_draws(bs.slice_units(samples, cohort), counts)
    assert bs.interval([draws["auc_macro"]]) == (None, None)
    assert bs.interval([draws["accuracy"]])[0] is not None


def test_a_vote_tie_goes_to_the_first_class_and_partial_scores_give_no_auc():
    rows = [
        ("T", "DCM", _done("DCM"), _ll(DCM=-1.0)),
        ("T", "DCM", _done("HCM"), _ll(HCM=-1.0)),  # HCM comes before DCM in the class order
        ("U", "MI", "<think>cut off", _ll(MI=-1.0)),  # nothing parsed: unparsed
        ("V", "NOR", _done("NOR"), _ll(NOR=-1.0)),
    ]
    samples = _table(rows)
    samples.loc[3, [f"score_{c}" for c in CLASSES]] = np.nan  # one slice without scores
    m = compute_metrics(samples)
    assert m["auc_macro"] is None
    assert m["auc_note"].startswith("per-class scores missing for 1 of 4 slices")
    pooled = pool_patients(samples)
    assert pooled["predicted"][0] == "HCM" and pd.isna(pooled["predicted"][1])  # U: unparsed
    assert m["patient"]["accuracy"] == round(1 / 3, 6)


def test_a_patient_with_two_labels_is_refused():
    rows = [("P", "HCM", _done("HCM"), _ll(HCM=-1.0)), ("P", "DCM", _done("DCM"), _ll(DCM=-1.0))]
    with pytest.raises(ValueError, match=r"patient 'P' has slices labelled \['DCM', 'HCM'\]"):
        compute_metrics(_table(rows))


# ---- intervals --------------------------------------------------------------------------------


def _accuracy_interval(samples: pd.DataFrame, iterations=1000, seed=11, level="slice"):
    cohort = bs.cohort_of([samples])
    counts = bs.resample_counts(cohort, iterations, seed)
    units = (bs.slice_units if level == "slice" else bs.patient_units)(samples, cohort)
    return bs.interval([bs.metric_draws(units, counts)["accuracy"]])


def test_resamples_are_stratified_seeded_and_reproducible():
    samples = synthetic(patients_per_class=8, slices=2, seed=2)
    cohort = bs.cohort_of([samples])
    counts = bs.resample_counts(cohort, 200, seed=5)
    assert counts.shape == (200, 48)
    for c in range(len(CLASSES)):
        assert set(counts[:, cohort.labels == c].sum(axis=1)) == {8.0}
    assert counts.std() > 0
    assert bs.resample_counts(cohort, 200, seed=5).tobytes() == counts.tobytes()
    assert bs.resample_counts(cohort, 200, seed=6).tobytes() != counts.tobytes()


def test_intervals_hold_the_estimate_shrink_with_patients_and_follow_the_seed():
    small = synthetic(patients_per_class=10, slices=2, seed=4)
    large = synthetic(patients_per_class=90, slices=2, seed=4)
    for samples in (small, large):
        lo, hi = _accuracy_interval(samples)
        assert lo < compute_metrics(samples)["accuracy"] < hi
    (slo, shi), (llo, lhi) = _accuracy_interval(small), _accuracy_interval(large)
    assert (lhi - llo) < 0.6 * (shi - slo)  # 9x the patients: about a third of the width
    first = bs.evaluation_draws({"a": small}, 300, seed=1)
    again = bs.evaluation_draws({"a": small}, 300, seed=1)
    other = bs.evaluation_draws({"a": small}, 300, seed=2)
    for level in ("slice", "patient"):
        one, two, three = (getattr(d, level)["a"] for d in (first, again, other))
        assert all(one[k].tobytes() == two[k].tobytes() for k in one)
        assert one["accuracy"].tobytes() != three["accuracy"].tobytes()


def test_resampling_is_over_patients_so_correlated_slices_widen_the_interval():
    """Each patient's ten slices are all right or all wrong. Resampled as patients, the accuracy
    moves in steps of ten slices; treated as independent slices it would look far more precise."""
    rows = []
    for c, truth in enumerate(CLASSES):
        for k in range(12):
            answer = truth if k % 2 == 0 else CLASSES[(c + 1) % len(CLASSES)]
            for _ in range(10):
                rows.append((f"{truth}{k}", truth, _done(answer), _ll(**{answer: -0.5})))
    samples = _table(rows)
    per_slice = samples.assign(patient=samples["id"])  # every slice its own "patient"
    lo, hi = _accuracy_interval(samples)
    slo, shi = _accuracy_interval(per_slice)
    assert (hi - lo) > 2.5 * (shi - slo)  # about sqrt(10) wider
    assert lo < 0.5 < hi and slo < 0.5 < shi


def test_paired_p_value_is_small_for_a_better_left_side_and_large_for_a_worse_one():
    better = synthetic(patients_per_class=15, slices=2, seed=8, signal=4.0)
    worse = synthetic(patients_per_class=15, slices=2, seed=9, signal=0.5)
    draws = bs.evaluation_draws({"better": better, "worse": worse}, 1000, seed=3)
    b, w = draws.slice["better"]["accuracy"], draws.slice["worse"]["accuracy"]
    lo, hi, p = bs.paired([b, b], [w])  # two seeds on the left, one on the right
    assert 0 < lo < hi and p == pytest.approx(1 / 1001)
    lo, hi, p = bs.paired([w], [b])
    assert lo < hi < 0 and p == 1.0
    # The same side against itself: every difference is 0, counted as "not better".
    assert bs.paired([b], [b]) == (0.0, 0.0, 1.0)


def test_an_evaluation_set_must_agree_on_each_patients_label():
    a = _table([("P", "HCM", _done("HCM"), _ll(HCM=-1.0))])
    b = _table([("P", "DCM", _done("DCM"), _ll(DCM=-1.0))])
    with pytest.raises(ValueError, match="patient 'P' is labelled"):
        bs.cohort_of([a, b])
