"""Wall time of the demo: the default config end to end in a scratch copy of the workflow, then
the HTML report (`make demo` runs both), per job (Snakemake's own benchmark files), per rule and
in total, then a no-op rerun.

Writes results/benchmarks/demo.json and demo.md; --keep DIR copies the demo's results/report
there. Budget: 15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from cmr_rd.devtools import REPO, copy_workflow, snakemake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks")
    parser.add_argument("--keep", type=Path, help="copy the demo's results/report here")
    parser.add_argument("--workdir", type=Path, help="run in this new folder and keep it all")
    args = parser.parse_args()
    cores = str(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.workdir:
            args.workdir.mkdir(parents=True)  # refuses an existing folder: never mix two runs
        work = copy_workflow(args.workdir or Path(tmp))
        start = time.perf_counter()
        result = snakemake(work, "--cores", cores)
        total = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(result.stderr[-3000:])
        start = time.perf_counter()
        html = snakemake(work, "--report", "results/report/report.html")
        html_seconds = time.perf_counter() - start
        if html.returncode != 0:
            raise SystemExit(html.stderr[-3000:])
        start = time.perf_counter()
        noop = snakemake(work, "--cores", cores)
        noop_seconds = time.perf_counter() - start
        assert "Nothing to be done" in noop.stdout + noop.stderr
        jobs, per_rule = {}, defaultdict(list)
        root = work / "logs/benchmarks"
        for tsv in sorted(root.rglob("*.tsv")):  # nested: gppo/RUN/seedS/phaseT/, eval/MODEL/
            with open(tsv) as handle:
                row = next(csv.DictReader(handle, delimiter="\t"))
            name = tsv.relative_to(root).with_suffix("").as_posix()
            jobs[name.replace("/", " ")] = round(float(row["s"]), 1)
            first = name.split("/")[0]  # nested: gppo/RUN/seedS/phaseT, eval/MODEL, sft/seedS
            rule = {"gppo": "gppo_train", "eval": "evaluate"}.get(first, first)
            per_rule[rule].append(float(row["s"]))
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(work / "results/report", args.keep)
    report = {
        "cores": int(cores),
        "demo_seconds": round(total, 1),
        "html_report_seconds": round(html_seconds, 1),
        "demo_with_report_seconds": round(total + html_seconds, 1),
        "rule_seconds": {k: [len(v), round(sum(v), 1)] for k, v in sorted(per_rule.items())},
        "job_seconds": jobs,
        "noop_rerun_seconds": round(noop_seconds, 2),
        "budget_seconds": 900,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [("demo, end to end (s)", report["demo_seconds"])]
    rows += [("HTML report (s)", report["html_report_seconds"])]
    rows += [("demo + HTML report (s), budget 900", report["demo_with_report_seconds"])]
    rows += [(f"rule {k}: {n} jobs, summed (s)", t) for k, (n, t) in report["rule_seconds"].items()]
    rows += [("no-op rerun (s)", report["noop_rerun_seconds"])]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    (args.out / "demo.md").write_text(table + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
