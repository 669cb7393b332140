"""Patient-level stratified split into train / probe / test.

The probe split feeds GPPO's posteriors; the test split is touched only by final evaluation.
A patient is in exactly one split, so slices of one heart never leak across.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmr_rd.classes import CLASSES

SPLIT_SEED_OFFSET = 101


@dataclass(frozen=True)
class SplitConfig:
    test_per_class: int = 30
    probe_per_class: int = 10
    min_train_per_class: int = 4


def holdout_sizes(n: int, cfg: SplitConfig) -> tuple[int, int, str]:
    """(test, probe, note) for a class with n patients; shrinks both when the class is small."""
    wanted = cfg.test_per_class + cfg.probe_per_class
    if n >= wanted + cfg.min_train_per_class:
        return cfg.test_per_class, cfg.probe_per_class, ""
    available = max(0, n - cfg.min_train_per_class)
    test = round(available * cfg.test_per_class / wanted) if wanted else 0
    probe = available - test
    note = (
        f"only {n} patients: test {test} and probe {probe} instead of "
        f"{cfg.test_per_class} and {cfg.probe_per_class}"
    )
    return test, probe, note


def assign_splits(
    patients: dict[str, str], cfg: SplitConfig, seed: int
) -> tuple[dict[str, str], dict[str, str]]:
    """patients: pseudonym -> class. Returns (pseudonym -> split, class -> note)."""
    rng = np.random.default_rng([seed, SPLIT_SEED_OFFSET])
    assignment: dict[str, str] = {}
    notes: dict[str, str] = {}
    for label in CLASSES:
        members = sorted(p for p, c in patients.items() if c == label)
        order = rng.permutation(len(members))
        test, probe, note = holdout_sizes(len(members), cfg)
        notes[label] = note
        for rank, idx in enumerate(order):
            if rank < test:
                assignment[members[idx]] = "test"
            elif rank < test + probe:
                assignment[members[idx]] = "probe"
            else:
                assignment[members[idx]] = "train"
    return assignment, notes
