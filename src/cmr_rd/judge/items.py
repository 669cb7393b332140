"""What the judges rate: a seeded sample of test cases, the same for every model, and blinded items.

An item is one (case, evaluation) pair: one model's chain for one test image. Its id is an HMAC of
the case id and the evaluation key under a key derived from the judge seed, truncated: opaque (no
model name, run path or case id can be read from it), and stable when a model is added or
removed, so a clinician sheet filled months ago still joins. Only the key file maps ids back.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmr_rd.classes import CLASSES

SEED_OFFSET = 1700
ID_CHARS = 12
KEY_COLUMNS = ("id", "model", "evaluation", "case", "patient", "label", "image")
_SEED_SUFFIX = re.compile(r"/seed\d+$")


class JudgeInputError(ValueError):
    """An evaluation or a reference the judge stage needs is missing or does not fit."""


def model_name(evaluation: str) -> str:
    """The table row of an evaluation key: the key without its /seedS (seeds are pooled)."""
    return _SEED_SUFFIX.sub("", evaluation)


def evaluation_key(samples_path: str | Path, eval_root: str | Path) -> str:
    """results/eval/sft-ts-iou/seed1/samples.parquet -> sft-ts-iou/seed1."""
    return Path(samples_path).parent.relative_to(Path(eval_root)).as_posix()


def sample_cases(test: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """`per_class` test cases per class (all of a class that has fewer), seeded, in id order."""
    rng = np.random.default_rng([seed, SEED_OFFSET])
    chosen = []
    for label in CLASSES:
        pool = test[test["label"] == label].sort_values("id")
        take = np.sort(rng.permutation(len(pool))[:per_class])
        chosen.append(pool.iloc[take])
    return pd.concat(chosen).sort_values("id").reset_index(drop=True)


def item_id(seed: int, case: str, evaluation: str) -> str:
    """Opaque and stable: HMAC-SHA256(seed, case + evaluation), first ID_CHARS hex digits."""
    key = hashlib.sha256(f"cmr-rd judge {seed}".encode()).digest()
    digest = hmac.new(key, f"{case}\x00{evaluation}".encode(), hashlib.sha256).hexdigest()
    return "J" + digest[:ID_CHARS]


@dataclass(frozen=True)
class Items:
    key: pd.DataFrame  # KEY_COLUMNS: id -> model, evaluation, case (never shown to a judge)
    completions: dict[str, str]  # id -> the model's completion


def build_items(cases: pd.DataFrame, samples: dict[str, pd.DataFrame], seed: int) -> Items:
    """One item per (case, evaluation); every evaluation must hold every sampled case."""
    rows, completions = [], {}
    for evaluation in sorted(samples):
        frame = samples[evaluation].set_index("id")
        missing = sorted(set(cases["id"]) - set(frame.index))
        if missing:
            raise JudgeInputError(
                f"evaluation {evaluation!r} has no sample for test case(s) {missing[:3]} "
                f"({len(missing)} missing): rerun its evaluation on the current test split"
            )
        for case in cases.itertuples(index=False):
            ident = item_id(seed, case.id, evaluation)
            completion = frame.at[case.id, "completion"]
            completions[ident] = completion if isinstance(completion, str) else ""
            rows.append(
                {
                    "id": ident,
                    "model": model_name(evaluation),
                    "evaluation": evaluation,
                    "case": case.id,
                    "patient": case.patient,
                    "label": case.label,
                    "image": case.image,
                }
            )
    key = pd.DataFrame.from_records(rows, columns=list(KEY_COLUMNS))
    if key["id"].duplicated().any():  # 48 bits: a clash would need ~16 million items
        raise JudgeInputError("two judge items share an id; choose another judge.seed")
    return Items(key.sort_values("id").reset_index(drop=True), completions)


def shuffled(ids: list[str], seed: int, judge: str) -> list[str]:
    """The order one judge sees the items in: seeded per judge, unrelated to model or case."""
    salt = int.from_bytes(hashlib.sha256(judge.encode()).digest()[:4], "big")
    order = np.random.default_rng([seed, SEED_OFFSET, salt]).permutation(len(ids))
    ordered = sorted(ids)
    return [ordered[i] for i in order]
