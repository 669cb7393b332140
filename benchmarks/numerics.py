"""What the pinned CPU numerics cost (cmr_rd.numerics): alignment and SFT steps of the demo's tiny
backbone in each mode (CMR_RD_NUMERICS): pinned (the default), portable (MKL's COMPATIBLE branch
on every CPU; on a non-Intel CPU the same as pinned) and native (each library's own kernel
choice), run alternately in child processes, one thread each as the demo's jobs run, and the
ratios to native.

Needs the demo's results (run `make demo` first). Writes results/benchmarks/numerics.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from cmr_rd import numerics
from cmr_rd.devtools import REPO

sys.path.insert(0, str(Path(__file__).parent))
from train_step import STAGES, run_stage  # noqa: E402

MODES = numerics.MODES


def child_env(mode: str) -> dict:
    """This environment without the pins, in `mode`: the child's `import cmr_rd` pins it."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.PIN_KEYS}
    env.update({numerics.MODE_ENV: mode, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO, help="a folder the demo ran in")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks")
    args = parser.parse_args()
    model = args.workdir / "results/model/base"
    if not model.exists():
        raise SystemExit(f"run `make demo` first: missing {model}")
    speeds: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for mode in MODES:  # alternated: drift on a shared machine evens out
                for stage, data in STAGES.items():
                    out = Path(tmp) / f"{mode}{round_}"
                    measured = run_stage(stage, args.workdir / data, model, args.steps,
                                         args.batch, out, cwd=args.workdir,
                                         env=child_env(mode), threads=1)  # fmt: skip
                    speeds.setdefault(stage, {}).setdefault(mode, []).append(
                        measured["samples_per_s"]
                    )
    report = {
        "cpu": numerics.cpu(),
        "pins": {mode: numerics.pins(mode) for mode in MODES},
        "stages": {
            stage: {
                **{f"{mode}_samples_per_s": runs for mode, runs in by_mode.items()},
                **{
                    f"{mode}_over_native": round(
                        statistics.median(by_mode[mode]) / statistics.median(by_mode["native"]), 3
                    )
                    for mode in ("pinned", "portable")
                },
            }
            for stage, by_mode in speeds.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "numerics.json").write_text(json.dumps(report, indent=2) + "\n")

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    rows = [
        f"| {stage} | {runs(r['pinned_samples_per_s'])} | {runs(r['portable_samples_per_s'])} | "
        f"{runs(r['native_samples_per_s'])} | {r['pinned_over_native']} | "
        f"{r['portable_over_native']} |"
        for stage, r in report["stages"].items()
    ]
    table = (
        f"CPU: {report['cpu']['model']} ({report['cpu']['vendor']})\n\n"
        "| stage (1 thread, batch 16) | pinned samples/s | portable samples/s | native samples/s "
        "| pinned / native | portable / native |\n"
        "|---|---|---|---|---|---|\n"
    )
    (args.out / "numerics.md").write_text(table + "\n".join(rows) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
