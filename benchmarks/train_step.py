"""Training throughput of the tiny backbone: alignment and SFT steps, measured side by side.

Runs `python -m cmr_rd.model.cli train` for a fixed number of steps per stage on the demo's
datasets and backbone (run `make demo` first), each in its own process, and reports samples per
second (from the trainer) and the process's peak resident memory. Writes
results/benchmarks/train_step.json and .md. GPU figures come from a device run, not from here.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cmr_rd.devtools import REPO

STAGES = {
    "align": "results/datasets/alignment.jsonl",
    "sft": "results/datasets/coldstart.jsonl",
}


def run_stage(
    stage: str,
    data: Path,
    model: Path,
    steps: int,
    batch: int,
    out: Path,
    cwd: Path = REPO,
    env: dict | None = None,
    threads: int | None = None,
) -> dict:
    """One stage's steps in a child process run in `cwd`, where the dataset's image paths hold
    (`env`: the child's environment, default this one's)."""
    out.mkdir(parents=True, exist_ok=True)
    config = out / f"{stage}.json"
    settings = {"max_steps": steps, "batch_size": batch, "save_steps": 10**6}
    config.write_text(json.dumps(settings | ({"threads": threads} if threads else {})))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "cmr_rd.model.cli", "train", "--stage", stage, "--model",
         str(model), "--data", str(data), "--out", str(out / stage), "--config", str(config)],
        capture_output=True, text=True, cwd=cwd, env=env,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads((out / stage / "train_summary.json").read_text())
    return {
        "steps": summary["steps"],
        "batch_size": batch,
        "samples_per_s": round(summary["samples_per_second"], 1),
        "wall_s_incl_start": round(wall, 1),
        "peak_rss_mib": round(max(peak_kib, before) / 1024, 1),
        "precision": summary["precision"],
        "trainable": summary["trainable_parameters"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks")
    args = parser.parse_args()
    model = REPO / "results/model/base"
    missing = [p for p in [model, *(REPO / d for d in STAGES.values())] if not p.exists()]
    if missing:
        raise SystemExit(f"run `make demo` first: missing {', '.join(map(str, missing))}")
    with tempfile.TemporaryDirectory() as tmp:
        report = {
            stage: run_stage(stage, REPO / data, model, args.steps, args.batch, Path(tmp))
            for stage, data in STAGES.items()
        }
    report["note"] = "CPU, tiny Gemma3; peak RSS is the largest child process so far"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_step.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        f"| {s} | {r['steps']} | {r['batch_size']} | {r['samples_per_s']} | {r['peak_rss_mib']} |"
        for s, r in report.items()
        if s != "note"
    ]
    table = "| stage | steps | batch | samples/s | peak RSS (MiB) |\n|---|---|---|---|---|\n"
    (args.out / "train_step.md").write_text(table + "\n".join(rows) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
