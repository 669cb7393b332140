"""Per-class Beta posteriors over probe accuracy, the state GPPO carries from phase to phase.

θ_c ~ Beta(α_c, β_c) is the policy's accuracy on class c. It starts uniform (α = β = 1) and after
each phase absorbs the greedy probe counts: α += n+, β += n-. The optional discount λ (ours, not the
paper's) shrinks the evidence so far toward the uniform prior before adding the new counts, so that
a posterior fitted to an earlier, weaker policy does not outvote the current one:

    α_t = 1 + λ(α_{t-1} - 1) + n+_t,    β_t = 1 + λ(β_{t-1} - 1) + n-_t

With λ = 1 this is exactly the paper's update.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmr_rd.classes import CLASSES


def _ordered(names: Iterable[str]) -> list[str]:
    # CLASSES order first, so JSON and figures read the same everywhere; unknown names keep theirs.
    names = list(names)
    known = [c for c in CLASSES if c in names]
    return known + [c for c in names if c not in CLASSES]


def _check_param(kind: str, cls: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{kind}[{cls!r}] must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{kind}[{cls!r}] must be finite and > 0, got {value!r}")
    return value


@dataclass(frozen=True)
class Posterior:
    """Beta(alpha[c], beta[c]) per class; construction validates, so a bad state fails early."""

    alpha: dict[str, float]
    beta: dict[str, float]

    def __post_init__(self) -> None:
        if set(self.alpha) != set(self.beta):
            odd = sorted(set(self.alpha) ^ set(self.beta))
            raise ValueError(f"alpha and beta must name the same classes; mismatched: {odd}")
        if not self.alpha:
            raise ValueError("a posterior needs at least one class")
        order = _ordered(self.alpha)
        alpha = {c: _check_param("alpha", c, self.alpha[c]) for c in order}
        beta = {c: _check_param("beta", c, self.beta[c]) for c in order}
        # Frozen, so normalise (floats, CLASSES order) through object.__setattr__.
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)

    @classmethod
    def uniform(cls, classes: Iterable[str] = CLASSES) -> Posterior:
        classes = list(classes)
        return cls(alpha={c: 1.0 for c in classes}, beta={c: 1.0 for c in classes})

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.alpha)

    def mean(self) -> dict[str, float]:
        return {c: self.alpha[c] / (self.alpha[c] + self.beta[c]) for c in self.classes}

    def expected_weight_share(self) -> dict[str, float]:
        """E[1-θ_c] / Σ E[1-θ]: the sampler's mean shares to first order (exact as var -> 0)."""
        miss = {c: self.beta[c] / (self.alpha[c] + self.beta[c]) for c in self.classes}
        total = sum(miss.values())
        return {c: m / total for c, m in miss.items()}

    def to_dict(self) -> dict:
        return {"alpha": dict(self.alpha), "beta": dict(self.beta)}

    @classmethod
    def from_dict(cls, d: Mapping) -> Posterior:
        if not isinstance(d, Mapping):
            raise ValueError(f"posterior must be a mapping with 'alpha' and 'beta', got {d!r}")
        for key in ("alpha", "beta"):
            if key not in d:
                raise ValueError(f"posterior dict lacks key {key!r}")
            if not isinstance(d[key], Mapping):
                raise ValueError(f"posterior key {key!r} must map class -> number")
        return cls(alpha=dict(d["alpha"]), beta=dict(d["beta"]))


def _check_counts(kind: str, counts: Mapping[str, int], classes: tuple[str, ...]) -> None:
    for c, n in counts.items():
        if c not in classes:
            raise ValueError(f"{kind} count for unknown class {c!r}; posterior has {classes}")
        if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)):
            raise ValueError(f"{kind}[{c!r}] must be a count, got {n!r}")
        if not (math.isfinite(n) and n >= 0):
            raise ValueError(f"{kind}[{c!r}] must be >= 0, got {n!r}")


def update(
    prior: Posterior,
    correct: Mapping[str, int],
    wrong: Mapping[str, int],
    discount: float = 1.0,
) -> Posterior:
    """The posterior after one probe: discounted evidence plus the new counts (λ = 1: the paper)."""
    if not (isinstance(discount, (int, float)) and 0 < discount <= 1):
        raise ValueError(f"discount must be in (0, 1], got {discount!r}")
    _check_counts("correct", correct, prior.classes)
    _check_counts("wrong", wrong, prior.classes)

    def keep(v: float) -> float:
        # λ = 1 is taken literally (α + n): the paper's update, without rounding from 1 + (α - 1).
        return v if discount == 1 else 1 + discount * (v - 1)

    alpha = {c: keep(a) + correct.get(c, 0) for c, a in prior.alpha.items()}
    beta = {c: keep(b) + wrong.get(c, 0) for c, b in prior.beta.items()}
    return Posterior(alpha=alpha, beta=beta)


def density(posterior: Posterior, cls: str, x: np.ndarray) -> np.ndarray:
    if cls not in posterior.alpha:
        raise ValueError(f"class {cls!r} not in posterior {posterior.classes}")
    # The Beta pdf in closed form: scipy.stats costs 0.7-1.1 s of import in every figures job.
    a, b = posterior.alpha[cls], posterior.beta[cls]
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pdf = (
            math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
            + _xlogy(a - 1.0, x) + _xlogy(b - 1.0, 1.0 - x)
        )  # fmt: skip
        pdf = np.exp(log_pdf)
    return np.where((x < 0.0) | (x > 1.0), 0.0, pdf)


def _xlogy(c: float, v: np.ndarray) -> np.ndarray:
    """c * log(v), and 0 where c is 0 (so Beta(1, b) is b at 0, not 0 * -inf)."""
    return np.zeros_like(v) if c == 0 else c * np.log(v)


def load_prior(paths: list[str] | list[Path]) -> Posterior:
    """The posterior a phase starts from.

    No file: Beta(1, 1) for every class. A previous phase's posterior.json: its posterior. The
    start model's probe check (phase 1 with `gppo.prior: start_probe`): Beta(1, 1) updated with
    the start model's correct and wrong counts, so the first quotas already target the classes
    the cold start gets wrong instead of a draw from the flat prior.
    """
    if not paths:
        return Posterior.uniform()
    record = json.loads(Path(paths[0]).read_text(encoding="utf-8"))
    if "posterior" in record:
        return Posterior.from_dict(record["posterior"])
    correct = record["per_class_correct"]
    wrong = {c: record["per_class_n"][c] - correct[c] for c in correct}
    return update(Posterior.uniform(), correct, wrong)
