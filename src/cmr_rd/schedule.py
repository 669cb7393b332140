"""Where a Snakemake run's time went, read from its own log: each job's start, end, threads, inputs
and outputs; the cores' use; and the critical path, the chain of jobs that each waited for the
one before.

Snakemake writes every run's log to `.snakemake/log/<date>.snakemake.log`: a timestamp line, then
`rule NAME:` (or `localrule`, `checkpoint`, `localcheckpoint`) with indented `input:`, `output:`,
`jobid:` and `threads:` lines when a job starts, and `Finished jobid: N (Rule: NAME)` after a
timestamp when it ends.
Timestamps have one-second resolution, so a job's time here is good to a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_FIELD = re.compile(r"^    (input|output|jobid|threads): (.*)$")
_FINISH = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


@dataclass
class Job:
    jobid: int
    rule: str
    start: float
    end: float | None = None
    threads: int = 1
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return (self.end or self.start) - self.start


def _paths(text: str) -> list[str]:
    return [p.strip() for p in text.split(", ") if p.strip()]


def parse_log(text: str) -> list[Job]:
    """The jobs of one Snakemake log, in start order; times in seconds from the first stamp."""
    jobs: dict[int, Job] = {}
    first: datetime | None = None
    now = 0.0
    pending: dict | None = None
    for line in text.splitlines():
        stamp = _STAMP.match(line)
        if stamp:
            when = datetime.strptime(" ".join(stamp.group(1).split()), "%a %b %d %H:%M:%S %Y")
            first = first or when
            now = (when - first).total_seconds()
            continue
        start = _START.match(line)
        if start:
            pending = {"rule": start.group(1), "start": now}
            continue
        found = _FIELD.match(line)
        if found and pending is not None:
            key, value = found.groups()
            if key == "jobid":
                pending["jobid"] = int(value)
                job = Job(jobid=int(value), rule=pending["rule"], start=pending["start"])
                job.inputs, job.outputs = pending.get("input", []), pending.get("output", [])
                jobs[job.jobid] = job
            elif key == "threads" and "jobid" in pending:
                jobs[pending["jobid"]].threads = int(value)
            elif key in ("input", "output"):
                pending[key] = _paths(value)
            continue
        finish = _FINISH.match(line)
        if finish and int(finish.group(1)) in jobs:
            jobs[int(finish.group(1))].end = now
    return sorted(jobs.values(), key=lambda j: (j.start, j.jobid))


def latest_log(workdir: str | Path) -> Path:
    logs = sorted((Path(workdir) / ".snakemake/log").glob("*.snakemake.log"))
    if not logs:
        raise FileNotFoundError(f"no Snakemake log under {workdir}/.snakemake/log")
    return logs[-1]


def _producer_of(jobs: list[Job]) -> dict[str, Job]:
    made = {}
    for job in jobs:
        for path in job.outputs:
            made[path.rstrip("/")] = job
    return made


def critical_path(jobs: list[Job]) -> list[Job]:
    """From the job that ended last, back through the input whose producer ended last: the chain
    that set the run's length (in this run's schedule; another schedule may wait elsewhere)."""
    done = [j for j in jobs if j.end is not None]
    if not done:
        return []
    made = _producer_of(done)
    job = max(done, key=lambda j: (j.end, j.start))
    path = [job]
    while True:
        parents = [made[p.rstrip("/")] for p in job.inputs if p.rstrip("/") in made]
        parents = [p for p in parents if p is not job]
        if not parents:
            break
        job = max(parents, key=lambda j: (j.end, j.start))
        path.append(job)
    return path[::-1]


def summary(jobs: list[Job], cores: int, wall: float | None = None) -> dict:
    """Per rule: jobs, summed job seconds and core-seconds claimed; the run's wall time, the share
    of the cores' time that jobs claimed, and the critical path with its idle gaps."""
    done = [j for j in jobs if j.end is not None]
    wall = wall if wall is not None else max((j.end for j in done), default=0.0)
    per_rule: dict[str, dict] = {}
    for job in done:
        entry = per_rule.setdefault(job.rule, {"jobs": 0, "seconds": 0.0, "core_seconds": 0.0})
        entry["jobs"] += 1
        entry["seconds"] += job.seconds
        entry["core_seconds"] += job.seconds * min(job.threads, cores)
    claimed = sum(e["core_seconds"] for e in per_rule.values())
    path = critical_path(done)
    steps, previous_end = [], 0.0
    for job in path:
        steps.append(
            {
                "rule": job.rule,
                "jobid": job.jobid,
                "waited_s": round(max(job.start - previous_end, 0.0), 1),
                "start_s": round(job.start, 1),
                "seconds": round(job.seconds, 1),
            }
        )
        previous_end = job.end or job.start
    on_path: dict[str, float] = {}
    for job in path:
        on_path[job.rule] = on_path.get(job.rule, 0.0) + job.seconds
    return {
        "wall_s": round(wall, 1),
        "cores": cores,
        "claimed_core_share": round(claimed / (wall * cores), 3) if wall else None,
        "rules": {
            rule: {k: round(v, 1) if isinstance(v, float) else v for k, v in e.items()}
            for rule, e in sorted(per_rule.items())
        },
        "critical_path_s": round(sum(j.seconds for j in path), 1),
        "critical_path_by_rule": {k: round(v, 1) for k, v in on_path.items()},
        "critical_path": steps,
    }
