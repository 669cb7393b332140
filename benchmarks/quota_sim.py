"""Quota strategies on a simulated learner: worst-class and macro accuracy after T GPPO phases.

What it measures: how the class quotas of each strategy (Thompson sampling `ts`, class-balanced
`static`, natural-distribution `full`, and `ts` with posterior discount λ = 0.5) spend a fixed
budget of prompts on a long-tailed pool shaped like the paper's training counts, and what that
does to per-class accuracy. Phases are planned with the real `plan_phase` and posteriors updated
with the real `update`; only the learner is made up.

The learner is a model of learning, not the model: class c's accuracy after n prompts of that
class is a0_c + (amax_c - a0_c)(1 - exp(-n / k_c)), with the rare classes starting lowest and
learning slowest. Classes do not interact, a repeated prompt teaches as much as a new one (which
flatters oversampling the small pools), and GRPO's loss of signal on groups that are all right or
all wrong is not modelled. After each phase every class is probed with a binomial draw of probe_n
items at its true accuracy, and those counts update the posterior. The figures rank the quota
strategies under these assumptions; they say nothing about the VLM's accuracy.

Writes results/benchmarks/quota_sim.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cmr_rd.classes import CLASSES, PAPER_COUNTS
from cmr_rd.devtools import REPO
from cmr_rd.gppo.posterior import Posterior, update
from cmr_rd.gppo.quotas import plan_phase

# (a0, amax, k): accuracy after SFT, ceiling, prompts per e-fold. Rare classes start low and
# learn slowest.
LEARNER = {
    "HCM": (0.70, 0.95, 300),
    "DCM": (0.65, 0.93, 300),
    "CAM": (0.25, 0.85, 1200),
    "LVNC": (0.35, 0.88, 900),
    "MI": (0.60, 0.92, 400),
    "NOR": (0.55, 0.92, 400),
}
# name -> (strategy, discount)
ARMS = {
    "ts": ("ts", 1.0),
    "static": ("static", 1.0),
    "full": ("full", 1.0),
    "ts λ=0.5": ("ts", 0.5),
}


def accuracy(seen: dict[str, int]) -> dict[str, float]:
    return {
        c: a0 + (amax - a0) * (1 - np.exp(-seen[c] / k)) for c, (a0, amax, k) in LEARNER.items()
    }


def run_arm(arm: str, labels: list[str], seed: int, args: argparse.Namespace) -> dict:
    """One strategy, one seed: per-phase true accuracy (phase 0 = after SFT) and prompts seen."""
    strategy, discount = ARMS[arm]
    posterior = Posterior.uniform()
    seen = {c: 0 for c in CLASSES}
    curve = [accuracy(seen)]
    # Probe noise depends on seed and phase only, so strategies share it (common random numbers).
    for phase in range(1, args.phases + 1):
        plan = plan_phase(
            labels,
            posterior,
            strategy=strategy,
            batch_size=args.batch_size,
            n_batches=args.n_batches,
            pool_threshold=args.pool_threshold,
            seed=seed,
            phase=phase,
        )
        for c in CLASSES:
            seen[c] += plan.record["draws"][c]
        acc = accuracy(seen)
        curve.append(acc)
        probe = np.random.default_rng([seed, phase, 7])
        correct = {c: int(probe.binomial(args.probe_n, acc[c])) for c in CLASSES}
        wrong = {c: args.probe_n - correct[c] for c in CLASSES}
        posterior = update(posterior, correct, wrong, discount=discount)
    return {"curve": curve, "seen": dict(seen)}


def plot(summary: dict, phases: int, out_png: Path) -> None:
    fig = Figure(figsize=(10, 4), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    x = np.arange(phases + 1)
    for arm, s in summary.items():
        for ax, key in zip(axes, ("macro_curve", "worst_curve"), strict=True):
            mean, std = np.array(s[key]["mean"]), np.array(s[key]["std"])
            ax.plot(x, mean, marker="o", ls="--" if "λ" in arm else "-", label=arm)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15)
    axes[0].set_title("macro accuracy")
    axes[1].set_title("worst-class accuracy")
    for ax in axes:
        ax.set_xlabel("phase (0 = after SFT)")
        ax.set_xticks(x)
    axes[0].set_ylabel("true accuracy of the simulated learner")
    axes[0].legend(frameon=False)
    fig.suptitle("Quota strategies on a simulated learner (mean ± sd over seeds)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120, metadata={"Software": None})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generation batch B")
    parser.add_argument("--n-batches", type=int, default=50, help="batches per phase")
    parser.add_argument("--pool-threshold", type=int, default=50, help="τ: smaller pools resample")
    parser.add_argument("--probe-n", type=int, default=40, help="probe items per class per phase")
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of the paper's counts")
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks")
    args = parser.parse_args()

    start = time.perf_counter()
    pools = {c: max(1, round(PAPER_COUNTS[c] * args.scale)) for c in CLASSES}
    labels = [c for c in CLASSES for _ in range(pools[c])]
    summary = {}
    for arm in ARMS:
        runs = [run_arm(arm, labels, seed, args) for seed in range(args.seeds)]
        # acc[s, t, c]: seed s, phase t, class c.
        acc = np.array([[[a[c] for c in CLASSES] for a in r["curve"]] for r in runs])
        macro, worst = acc.mean(axis=2), acc.min(axis=2)
        seen = np.array([[r["seen"][c] for c in CLASSES] for r in runs])
        summary[arm] = {
            "worst_final": {"mean": worst[:, -1].mean(), "std": worst[:, -1].std()},
            "macro_final": {"mean": macro[:, -1].mean(), "std": macro[:, -1].std()},
            "final_by_class": dict(zip(CLASSES, acc[:, -1].mean(axis=0).tolist(), strict=True)),
            "prompts_seen": dict(zip(CLASSES, seen.mean(axis=0).tolist(), strict=True)),
            "macro_curve": {"mean": macro.mean(axis=0).tolist(), "std": macro.std(axis=0).tolist()},
            "worst_curve": {"mean": worst.mean(axis=0).tolist(), "std": worst.std(axis=0).tolist()},
        }
    wall = time.perf_counter() - start

    rows = [
        f"| {arm} | {s['worst_final']['mean']:.3f} ± {s['worst_final']['std']:.3f} "
        f"| {s['macro_final']['mean']:.3f} ± {s['macro_final']['std']:.3f} "
        f"| {s['prompts_seen']['CAM']:.0f} | {s['prompts_seen']['LVNC']:.0f} "
        f"| {s['prompts_seen']['HCM']:.0f} |"
        for arm, s in summary.items()
    ]
    table = (
        f"Simulated learner, {args.phases} phases x {args.n_batches} batches "
        f"x B={args.batch_size}, "
        f"{args.seeds} seeds, pools {pools}, τ={args.pool_threshold}, probe_n={args.probe_n}.\n\n"
        "| strategy | worst-class acc | macro acc | CAM prompts | LVNC prompts | HCM prompts |\n"
        "|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        "`full` draws batches as chunks of one shuffled pool (plain GRPO), so each class gets its "
        "natural share in expectation; `ts` and `static` follow integer quotas per batch.\n"
    )
    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pools": pools,
        "learner": {c: {"a0": a, "amax": m, "k": k} for c, (a, m, k) in LEARNER.items()},
        "arms": {arm: {"strategy": s, "discount": d} for arm, (s, d) in ARMS.items()},
        "summary": summary,
        "wall_s": round(wall, 2),
        "note": "a model of learning, not the model: see benchmarks/quota_sim.py docstring",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quota_sim.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (args.out / "quota_sim.md").write_text(table)
    plot(summary, args.phases, args.out / "quota_sim.png")
    print(table)
    print(f"({wall:.1f} s; wrote {args.out / 'quota_sim.md'}, .json, .png)")


if __name__ == "__main__":
    main()
