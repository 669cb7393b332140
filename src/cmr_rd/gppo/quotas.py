"""Per-phase class quotas and the phase dataset built from them.

Before phase t GPPO draws θ̃_c ~ Beta(α_c, β_c) per class and gives each class a share of every
generation batch proportional to w_c = 1 - θ̃_c: classes the policy still gets wrong get more
prompts, and the randomness of the draw (Thompson sampling) keeps a class the posterior is unsure
about from being starved on one unlucky probe. Shares become integer quotas by floor plus largest
remainder, so every batch holds exactly B prompts.

Items are drawn from per-class buckets. A class with fewer than τ (pool_threshold) items is a
minority class and is drawn with replacement, so it never runs dry; larger pools are drawn without
replacement and reshuffled only when exhausted (counted as a refill). That split is our reading of
the paper's "bucket refill", fixed once per class at phase start.

Everything random goes through one Generator, np.random.default_rng([seed, phase]), consumed in a
fixed order (θ̃, initial shuffles, then batch by batch), so a seed and phase name one dataset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cmr_rd.classes import CLASSES
from cmr_rd.gppo.posterior import Posterior

STRATEGIES = ("ts", "static", "full")
REDRAWS = ("phase", "batch")


def draw_theta(
    posterior: Posterior, rng: np.random.Generator, classes: tuple[str, ...] = CLASSES
) -> dict[str, float]:
    # One rng.beta per class in a fixed order, empty pools included, so the stream never depends
    # on which pools happen to be empty.
    return {c: float(rng.beta(posterior.alpha[c], posterior.beta[c])) for c in classes}


def strategy_weights(
    strategy: str,
    posterior: Posterior,
    pool_sizes: Mapping[str, int],
    rng: np.random.Generator,
) -> tuple[dict[str, float] | None, dict[str, float]]:
    """(θ̃ or None, unnormalised weights). Weights may all be 0; plan_phase decides the fallback."""
    has_items = {c: pool_sizes.get(c, 0) > 0 for c in CLASSES}
    if strategy == "ts":
        theta = draw_theta(posterior, rng)
        return theta, {c: (1.0 - theta[c]) if has_items[c] else 0.0 for c in CLASSES}
    if strategy == "static":
        return None, {c: 1.0 if has_items[c] else 0.0 for c in CLASSES}
    if strategy == "full":
        return None, {c: float(pool_sizes.get(c, 0)) for c in CLASSES}
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


def allocate(
    weights: Mapping[str, float], batch_size: int
) -> tuple[dict[str, int], dict[str, float]]:
    """Integer quotas summing to batch_size: floor of each exact share, then one slot each to the
    largest fractional parts (ties in CLASSES order). Returns (quotas, exact shares w/Σw·B)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for c, w in weights.items():
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"weight for {c!r} must be finite and >= 0, got {w!r}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("all weights are 0; nothing to allocate")
    order = [c for c in CLASSES if c in weights] + [c for c in weights if c not in CLASSES]
    exact = {c: weights[c] / total * batch_size for c in order}
    quotas = {c: math.floor(exact[c]) for c in order}
    remainder = batch_size - sum(quotas.values())
    # Only classes with weight can take a slot; sorted() is stable, so ties keep CLASSES order.
    # Rounding cannot push remainder past the number of such classes (it is < Σ frac + 1).
    by_fraction = sorted(
        (c for c in order if weights[c] > 0), key=lambda c: -(exact[c] - quotas[c])
    )
    for c in by_fraction[:remainder]:
        quotas[c] += 1
    return quotas, exact


@dataclass
class _Bucket:
    """One class's pool. With replacement: uniform draws. Without: a shuffled deck, reshuffled
    (and counted) only when empty, so no item repeats before every item has been used."""

    items: np.ndarray
    with_replacement: bool
    deck: list[int] = field(default_factory=list)
    draws: int = 0
    refills: int = 0
    seen: set[int] = field(default_factory=set)

    def take(self, k: int, rng: np.random.Generator) -> list[int]:
        if self.with_replacement:
            out = [int(i) for i in self.items[rng.integers(0, len(self.items), size=k)]]
        else:
            out = []
            while len(out) < k:
                if not self.deck:
                    self.deck = [int(i) for i in rng.permutation(self.items)]
                    self.refills += 1
                out.append(self.deck.pop())
        self.draws += k
        self.seen.update(out)
        return out


def _shuffled_pool_batches(
    labels: list[str], batch_size: int, n_batches: int, rng: np.random.Generator, buckets: dict
) -> tuple[list[list[int]], list[dict[str, int]]]:
    """`full`: consecutive chunks of one shuffled deck over the whole pool (reshuffled when
    exhausted), i.e. plain GRPO's sampling. Each batch follows the natural distribution in
    expectation; fixed integer quotas would instead give a class below one slot per batch none.
    Per-class draw counts are kept in the buckets so the record reads like the other modes."""
    deck: list[int] = []
    batches, per_batch = [], []
    for _ in range(n_batches):
        batch = []
        while len(batch) < batch_size:
            if not deck:
                deck = [int(i) for i in rng.permutation(len(labels))]
            batch.append(deck.pop())
        for i in batch:
            bucket = buckets[labels[i]]
            bucket.draws += 1
            bucket.seen.add(i)
        counts = {c: sum(labels[i] == c for i in batch) for c in CLASSES}
        batches.append(batch)
        per_batch.append(counts)
    return batches, per_batch


@dataclass
class PhasePlan:
    batches: list[list[int]]  # indices into the item list, batch_size per batch
    record: dict  # JSON-friendly summary, see plan_phase


def _r6(d: Mapping[str, float]) -> dict[str, float]:
    return {c: round(float(v), 6) for c, v in d.items()}


def plan_phase(
    labels: list[str],
    posterior: Posterior,
    *,
    strategy: str,
    batch_size: int,
    n_batches: int,
    pool_threshold: int,
    seed: int,
    phase: int,
    redraw: str = "phase",
) -> PhasePlan:
    """The phase's batches: n_batches lists of batch_size item indices, each batch holding exactly
    the quotas of its draw (one draw per phase, or with redraw="batch" a fresh one per batch, the
    first of which is the one recorded at the top level)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    if redraw not in REDRAWS:
        raise ValueError(f"redraw must be one of {REDRAWS}, got {redraw!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    if pool_threshold < 0:
        raise ValueError(f"pool_threshold must be >= 0, got {pool_threshold}")
    if not labels:
        raise ValueError("no training items: labels is empty")
    unknown = sorted({lab for lab in labels if lab not in CLASSES})
    if unknown:
        raise ValueError(f"labels outside CLASSES {CLASSES}: {unknown}")
    missing = [c for c in CLASSES if c not in posterior.alpha]
    if missing:
        raise ValueError(f"posterior lacks classes {missing}")

    rng = np.random.default_rng([seed, phase])
    pools = {c: np.array([i for i, lab in enumerate(labels) if lab == c]) for c in CLASSES}
    pool_sizes = {c: len(pools[c]) for c in CLASSES}
    buckets = {c: _Bucket(pools[c], pool_sizes[c] < pool_threshold) for c in CLASSES}
    fallbacks = 0

    def draw_quotas() -> tuple[dict | None, dict, dict, dict]:
        nonlocal fallbacks
        theta, weights = strategy_weights(strategy, posterior, pool_sizes, rng)
        if sum(weights.values()) <= 0:  # e.g. every θ̃ == 1.0: no class looks worth a prompt
            fallbacks += 1
            weights = {c: 1.0 if pool_sizes[c] > 0 else 0.0 for c in CLASSES}
        quotas, shares = allocate(weights, batch_size)
        return theta, weights, shares, quotas

    theta, weights, shares, quotas = draw_quotas()
    # Deal the first deck of every without-replacement bucket now, in CLASSES order, so that a
    # refill is counted only when a phase really uses more items than the pool holds.
    for c in CLASSES:
        if not buckets[c].with_replacement and pool_sizes[c] > 0:
            buckets[c].deck = [int(i) for i in rng.permutation(pools[c])]

    batches, per_batch = [], []
    if strategy == "full":
        batches, per_batch = _shuffled_pool_batches(labels, batch_size, n_batches, rng, buckets)
    batch_quotas = quotas
    for k in range(n_batches if strategy != "full" else 0):
        if redraw == "batch" and k > 0:
            batch_quotas = draw_quotas()[3]
        batch = [i for c in CLASSES for i in buckets[c].take(batch_quotas[c], rng)]
        batches.append([batch[j] for j in rng.permutation(len(batch))])
        per_batch.append(dict(batch_quotas))

    fallback = None
    if fallbacks:
        draws = n_batches if redraw == "batch" else 1
        fallback = (
            f"all weights were 0 in {fallbacks} of {draws} draw(s); "
            "used equal weights over classes with items"
        )
    record = {
        "phase": phase,
        "strategy": strategy,
        "seed": seed,
        "batch_size": batch_size,
        "n_batches": n_batches,
        "redraw": redraw,
        "pool_threshold": pool_threshold,
        "theta": None if theta is None else _r6(theta),
        "weights": _r6(weights),
        "shares": _r6(shares),
        "quotas": quotas,
        "pool_sizes": pool_sizes,
        "modes": {
            c: "with_replacement" if buckets[c].with_replacement else "without_replacement"
            for c in CLASSES
        },
        "draws": {c: buckets[c].draws for c in CLASSES},
        "distinct": {c: len(buckets[c].seen) for c in CLASSES},
        "refills": {c: buckets[c].refills for c in CLASSES},
    }
    if redraw == "batch" or strategy == "full":
        record["per_batch_quotas"] = per_batch
    if strategy == "full":
        record["modes"] = dict.fromkeys(CLASSES, "shuffled_pool")
    record["fallback"] = fallback
    return PhasePlan(batches=batches, record=record)
