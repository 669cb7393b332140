"""Wall time of the demo: the default config end to end in a scratch copy of the workflow,
per rule (Snakemake's own benchmark files) and in total, then a no-op rerun.

Writes results/benchmarks/demo.json and demo.md. Budget: 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

from cmr_rd.devtools import REPO, copy_workflow, snakemake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks")
    args = parser.parse_args()
    cores = str(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = copy_workflow(Path(tmp))
        start = time.perf_counter()
        result = snakemake(work, "--cores", cores)
        total = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(result.stderr[-3000:])
        start = time.perf_counter()
        noop = snakemake(work, "--cores", cores)
        noop_seconds = time.perf_counter() - start
        assert "Nothing to be done" in noop.stdout + noop.stderr
        rules = {}
        root = work / "logs/benchmarks"
        for tsv in sorted(root.rglob("*.tsv")):  # GPPO phases nest: gppo/RUN/seedS/phaseT/
            with open(tsv) as handle:
                row = next(csv.DictReader(handle, delimiter="\t"))
            name = tsv.relative_to(root).with_suffix("").as_posix()
            rules[name.replace("/", " ")] = round(float(row["s"]), 1)
    report = {
        "cores": int(cores),
        "demo_seconds": round(total, 1),
        "rule_seconds": rules,
        "noop_rerun_seconds": round(noop_seconds, 2),
        "budget_seconds": 900,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [("demo, end to end (s)", report["demo_seconds"])]
    rows += [(f"rule {k} (s)", v) for k, v in rules.items()]
    rows += [("no-op rerun (s)", report["noop_rerun_seconds"])]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    (args.out / "demo.md").write_text(table + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
