"""What the pinned CPU numerics cost (cmr_rd.numerics): alignment and SFT steps of the demo's tiny
backbone, pinned, native (CMR_RD_NUMERICS=native: each library's own kernel choice) and with every
pin but MKL's CBWR (which pin costs the speed), run alternately in child processes, one thread
each as the demo's jobs run, and the ratios to native.

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

# Which pin costs the speed: every pin but MKL's CBWR, set by hand over native mode.
WITHOUT_MKL = "pinned_except_mkl"
MODES = ("pinned", "native", WITHOUT_MKL)


def child_env(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINS}
    library_mode = "native" if mode == WITHOUT_MKL else mode
    env.update({numerics.MODE_ENV: library_mode, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    if mode == WITHOUT_MKL:
        env.update({k: v for k, v in numerics.PINS.items() if k != "MKL_CBWR"})
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
        "pins": numerics.PINS,
        "stages": {
            stage: {
                **{f"{mode}_samples_per_s": runs for mode, runs in by_mode.items()},
                **{
                    f"{mode}_over_native": round(
                        statistics.median(by_mode[mode]) / statistics.median(by_mode["native"]), 3
                    )
                    for mode in ("pinned", WITHOUT_MKL)
                },
            }
            for stage, by_mode in speeds.items()
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "numerics.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        f"| {stage} | {r['pinned_samples_per_s']} | {r['native_samples_per_s']} | "
        f"{r['pinned_over_native']} | {r[f'{WITHOUT_MKL}_samples_per_s']} | "
        f"{r[f'{WITHOUT_MKL}_over_native']} |"
        for stage, r in report["stages"].items()
    ]
    table = (
        "| stage (1 thread, batch 16) | pinned samples/s | native samples/s | pinned / native "
        "| every pin but MKL_CBWR, samples/s | that / native |\n"
        "|---|---|---|---|---|---|\n"
    )
    (args.out / "numerics.md").write_text(table + "\n".join(rows) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
