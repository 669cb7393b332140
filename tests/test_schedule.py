"""cmr_rd.schedule reads a Snakemake log into jobs, core use and the critical path; and the
workflow's shape it measures: the foundation chain does not wait for the cohort."""

from __future__ import annotations

import re

from cmr_rd.devtools import copy_workflow, snakemake
from cmr_rd.schedule import critical_path, parse_log, summary

LOG = """\
Select jobs to execute...
[Sun Dec  6 10:00:00 2026]
localrule make_a:
    output: a.txt
    jobid: 3
    threads: 2
[Sun Dec  6 10:00:10 2026]
Finished jobid: 3 (Rule: make_a)
[Sun Dec  6 10:00:10 2026]
rule make_b:
    input: a.txt
    output: b.txt
    log: logs/b.log
    jobid: 1
    threads: 1
[Sun Dec  6 10:00:11 2026]
localcheckpoint make_c:
    input: a.txt
    output: c/
    jobid: 2
    threads: 1
[Sun Dec  6 10:00:20 2026]
Finished jobid: 1 (Rule: make_b)
[Sun Dec  6 10:00:41 2026]
Finished jobid: 2 (Rule: make_c)
[Sun Dec  6 10:00:41 2026]
localrule all:
    input: b.txt, c
    jobid: 0
[Sun Dec  6 10:00:42 2026]
Finished jobid: 0 (Rule: all)
"""


def test_jobs_times_and_threads():
    jobs = {j.jobid: j for j in parse_log(LOG)}
    assert sorted(jobs) == [0, 1, 2, 3]
    assert (jobs[3].rule, jobs[3].start, jobs[3].end, jobs[3].threads) == ("make_a", 0, 10, 2)
    assert (jobs[2].rule, jobs[2].start, jobs[2].seconds) == ("make_c", 11, 30)
    assert jobs[1].inputs == ["a.txt"] and jobs[0].inputs == ["b.txt", "c"]


def test_critical_path_follows_the_input_that_ended_last():
    path = critical_path(parse_log(LOG))
    assert [j.rule for j in path] == ["make_a", "make_c", "all"]  # c ended after b


def test_summary_counts_core_time_per_rule():
    report = summary(parse_log(LOG), cores=2)
    assert report["wall_s"] == 42
    assert report["rules"]["make_a"] == {"jobs": 1, "seconds": 10.0, "core_seconds": 20.0}
    # 20 + 10 + 30 + 1 core-seconds of 2 x 42
    assert report["claimed_core_share"] == round(61 / 84, 3)
    assert report["critical_path_s"] == 41
    assert [s["waited_s"] for s in report["critical_path"]] == [0, 1, 0]


def test_the_backbone_and_foundation_do_not_wait_for_the_cohort(repo, tmp_path):
    """The tiny tokenizer reads the pool's text, so nothing of the cohort (synthesis, ingestion,
    rewriting, datasets) sits before the foundation stage."""
    work = copy_workflow(tmp_path / "wf", repo)
    plan = snakemake(work, "-n", "--cores", "2", "results/model/base")
    assert plan.returncode == 0, plan.stderr[-2000:]
    rules = set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", plan.stdout, re.M))
    assert rules == {"foundation_data", "build_backbone", "foundation"}
