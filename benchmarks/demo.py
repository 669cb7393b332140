"""Wall time of the demo: the default config end to end in a scratch copy of the workflow, then
the HTML report (`make demo` runs both), per job (Snakemake's own benchmark files), per rule and
in total, then a no-op rerun.

Where the time went, from Snakemake's log (cmr_rd.schedule): each rule's jobs and job-seconds, the
share of the cores' time that jobs held and the CPU time they used, and the critical path.
Beside it, a machine-speed reference measured in the same run on the demo's own model and data
(`benchmarks/train_step.py`'s SFT samples/s, the machine otherwise idle), so a time taken on
another machine can be compared as a ratio; and one that no change to our code moves
(`benchmarks/machine_speed.py`: a fixed torch MLP's training steps/s), for comparing runs of
different commits.

Writes results/benchmarks/demo.json and demo.md; --keep DIR copies the demo's results/report
there. Budget: 10 minutes on 2 cores (issue "The demo in 10 minutes").
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from cmr_rd import numerics
from cmr_rd.devtools import REPO, copy_workflow, snakemake
from cmr_rd.schedule import latest_log, parse_log, summary

sys.path.insert(0, str(Path(__file__).parent))
import machine_speed  # noqa: E402
from train_step import run_stage  # noqa: E402

BUDGET_SECONDS = 600


def cpu_seconds() -> float:
    """CPU time of every finished descendant (Snakemake and the jobs it waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def speed_reference(work: Path, tmp: Path) -> dict:
    """SFT samples/s of the demo's base model on its cold-start data (40 steps of 16, one thread
    as the demo's jobs, the machine otherwise idle)."""
    measured = run_stage("sft", work / "results/datasets/coldstart.jsonl",
                         work / "results/model/base", 40, 16, tmp, cwd=work, threads=1)  # fmt: skip
    return {"sft_samples_per_s": measured["samples_per_s"], "steps": 40, "batch_size": 16,
            "threads": 1}  # fmt: skip


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
        work = copy_workflow(args.workdir or Path(tmp) / "demo")
        machine_before = machine_speed.measure()  # with the one after: did the machine drift?
        cpu_before, start = cpu_seconds(), time.perf_counter()
        result = snakemake(work, "--cores", cores)
        total = time.perf_counter() - start
        cpu_used = cpu_seconds() - cpu_before
        if result.returncode != 0:
            raise SystemExit(result.stderr[-3000:])
        schedule = summary(parse_log(latest_log(work).read_text()), int(cores), total)
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
        reference = speed_reference(work, Path(tmp) / "reference")
        machine_after = machine_speed.measure()
        if args.keep:
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.copytree(work / "results/report", args.keep)
    record = numerics.record()
    machine_mean = (machine_before["mlp_steps_per_s"] + machine_after["mlp_steps_per_s"]) / 2
    report = {
        "cores": int(cores),
        "cpu": record["cpu"],
        "numerics": record["mode"],
        "demo_seconds": round(total, 1),
        "cpu_seconds": round(cpu_used, 1),
        "cpu_use": round(cpu_used / (total * int(cores)), 3),
        "speed_reference": reference,
        # The demo in units of the reference: the same on a faster or slower machine, if the
        # demo's time scales as SFT does.
        "demo_seconds_x_sft_samples_per_s": round(total * reference["sft_samples_per_s"]),
        # The same in units of a workload our code does not touch, measured before and after
        # the demo (the mean in the product): comparable across commits. A shared machine that
        # changes speed between the two makes any such product unreliable; the two say so.
        "machine_reference": {"before": machine_before, "after": machine_after},
        "demo_seconds_x_mlp_steps_per_s": round(total * machine_mean),
        "html_report_seconds": round(html_seconds, 1),
        "demo_with_report_seconds": round(total + html_seconds, 1),
        "rule_seconds": {k: [len(v), round(sum(v), 1)] for k, v in sorted(per_rule.items())},
        "job_seconds": jobs,
        "noop_rerun_seconds": round(noop_seconds, 2),
        "budget_seconds": BUDGET_SECONDS,
        "schedule": schedule,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [("machine", f"{record['cpu']['model']}, {cores} cores, numerics {record['mode']}")]
    rows += [("demo, end to end (s)", report["demo_seconds"])]
    rows += [("HTML report (s)", report["html_report_seconds"])]
    rows += [
        (f"demo + HTML report (s), budget {BUDGET_SECONDS}", report["demo_with_report_seconds"])
    ]
    rows += [("speed reference: SFT samples/s (40 steps of 16, 1 thread, alone)",
              reference["sft_samples_per_s"])]  # fmt: skip
    rows += [("demo s x reference samples/s", report["demo_seconds_x_sft_samples_per_s"])]
    before, after = machine_before["mlp_steps_per_s"], machine_after["mlp_steps_per_s"]
    rows += [("machine reference: MLP steps/s before; after the demo (machine_speed.py)",
              f"{before}; {after}")]  # fmt: skip
    rows += [("demo s x machine reference steps/s (their mean)",
              report["demo_seconds_x_mlp_steps_per_s"])]  # fmt: skip
    rows += [("CPU time of all jobs (s); use of the cores", f"{report['cpu_seconds']}; "
              f"{report['cpu_use']:.0%}")]  # fmt: skip
    rows += [
        ("core-time held by jobs (Snakemake threads)", f"{schedule['claimed_core_share']:.0%}")
    ]
    rows += [(f"rule {k}: {n} jobs, summed (s)", t) for k, (n, t) in report["rule_seconds"].items()]
    rows += [(f"critical path (s): {' > '.join(schedule['critical_path_by_rule'])}",
              schedule["critical_path_s"])]  # fmt: skip
    rows += [(f"critical path, {rule} (s)", t)
             for rule, t in schedule["critical_path_by_rule"].items()]  # fmt: skip
    rows += [("no-op rerun (s)", report["noop_rerun_seconds"])]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    (args.out / "demo.md").write_text(table + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
