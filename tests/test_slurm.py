"""The workflow through a real SLURM: a one-node cluster on loopback (tests/slurm_cluster.py), driven
by `snakemake --profile tests/slurm_profile` as a user drives `--profile slurm` (through
tests/slurm_snakemake.py, which only shortens the executor's wait between status checks).

What it covers, on tests/configs/tiny.yaml, targets `TARGETS` (the cohort to the end of the first
GPPO phase of sft-ts-iou seed 1, and the S1 evaluation: 15 jobs, 10 of them sbatch jobs, the rest
the Snakefile's localrules on the submit host):
- every non-local job went through sbatch, into the test partition, GPU rules with `--gpus=1`;
  its lineage manifest records the SLURM job id that Snakemake reported, and that job's log
  (`.snakemake/slurm_logs/rule_<rule>/<wildcards>/<id>.log`) exists; local rules record none;
- with the local profile's threads per job (the arithmetic depends on them), the cluster's
  artifacts are byte for byte those of the suite's local run of the whole workflow (conftest's
  `tiny_run`, built beside the SLURM run on the other worker): cohort, ingest, datasets, every
  checkpoint's weights, the posterior and the metrics. Only wall-clock records differ
  (train_summary.json, trainer_state.json, timing.json, TensorBoard event files), and the
  manifests differ only in `slurm_job_id` and those files' hashes;
- a job that fails on the cluster fails the run, and Snakemake names its SLURM log, which holds
  the error.
The rest of the chain (later phases, the other runs, the report) runs the same rules with other
wildcards; tests/test_workflow.py covers it locally.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cmr_rd.devtools import copy_workflow
from cmr_rd.lineage import is_wall_clock
from conftest import REPO
from slurm_cluster import LoopbackSlurm

SKIP = LoopbackSlurm.missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]

TARGETS = (
    "results/gppo/sft-ts-iou/seed1/phase1/posterior.json",
    "results/eval/s1/seed1/metrics.json",
)
GPU_RULES = {"foundation", "align", "sft", "sft_check", "evaluate", "gppo_train"}
# Snakemake with the executor's status checks at most 3 s apart (the plugin's backoff would leave
# each finished job unnoticed for 13-24 s: tests/slurm_snakemake.py).
SNAKEMAKE = [sys.executable, str(Path(__file__).with_name("slurm_snakemake.py"))]
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


def _env(base: dict | None = None) -> dict:
    return dict(os.environ if base is None else base, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")


def _workflow(root: Path, repo: Path) -> Path:
    work = copy_workflow(root, repo)
    shutil.copy(repo / "tests/configs/tiny.yaml", work / "config/tiny.yaml")
    shutil.copytree(repo / "tests/slurm_profile", work / "slurm_profile")
    return work


def _slurm_args(cluster: LoopbackSlurm) -> list[str]:
    # The node is this machine: lower threads and memory to what it has, as a site profile would,
    # and give each job the threads a local run gives it (profiles/local), so that both compute
    # the same bytes.
    local = yaml.safe_load((REPO / "profiles/local/config.yaml").read_text())["set-threads"]
    threads = [f"{rule}={n}" for rule, n in local.items()]
    return ["--profile", "slurm_profile", "--max-threads", str(cluster.cpus),
            "--resources", f"mem_mb={cluster.mem_mb}", "--set-threads", *threads]  # fmt: skip


def _files(root: Path) -> dict[str, Path]:
    return {
        p.relative_to(root).as_posix(): p
        for top in ("data", "results")
        for p in sorted((root / top).rglob("*"))
        if p.is_file() and not is_wall_clock(p.name)
    }


def _normalised_manifest(path: Path) -> dict:
    def strip(node):
        if isinstance(node, dict):
            return {
                k: strip(v) for k, v in node.items() if k != "slurm_job_id" and not is_wall_clock(k)
            }
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    manifest = strip(json.loads(path.read_text()))
    # What the job's own process loaded differs by design: a local run's evaluation or probe
    # check runs its arithmetic in a fork of the warm interpreter (the job records its numerics
    # as `worker_numerics`), a cluster job in its own process. The pins in force must not differ.
    numerics = (manifest.get("environment") or {}).pop("numerics", None)
    if numerics is not None:
        manifest["pins"] = (numerics["mode"], numerics["pins"])
    return manifest


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    t0 = time.monotonic()
    with LoopbackSlurm(tmp_path_factory.mktemp("cluster")) as c:
        print(f"\nloopback SLURM up in {time.monotonic() - t0:.1f} s")
        yield c


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory, repo, request):
    """The targets through SLURM, and the suite's local run of the same config (`tiny_run`);
    both folders and the SLURM output."""
    slurm = _workflow(tmp_path_factory.mktemp("wf_slurm"), repo)
    cmd = [*SNAKEMAKE, *TARGETS, "--configfile", "config/tiny.yaml"]
    t0 = time.monotonic()
    result = subprocess.run(
        [*cmd, *_slurm_args(cluster), "--verbose"],
        cwd=slurm,
        env=cluster.env(_env()),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    slurm_s = time.monotonic() - t0
    # Asked for only now, so that the other worker builds it while the SLURM run goes on.
    local = request.getfixturevalue("tiny_run")
    print(f"SLURM run {slurm_s:.0f} s, then {time.monotonic() - t0 - slurm_s:.0f} s for tiny_run")
    return {"slurm": slurm, "local": local, "output": output}


def _submitted(output: str) -> dict[str, Path]:
    """SLURM job id -> its log, as Snakemake reported the submissions."""
    return {jobid: Path(log) for jobid, log in SUBMITTED.findall(output)}


def _rules_run(output: str) -> tuple[set[str], set[str]]:
    cluster = set(re.findall(r"^(?:rule|checkpoint) (\w+):", output, flags=re.M))
    local = set(re.findall(r"^local(?:rule|checkpoint) (\w+):", output, flags=re.M))
    return cluster, local


def test_cluster_jobs_went_through_sbatch(runs, cluster):
    work, output = runs["slurm"], runs["output"]
    on_cluster, local = _rules_run(output)
    assert on_cluster >= GPU_RULES | {"synthesize_cohort", "ingest", "build_backbone"}
    assert local >= {"prompt_datasets", "rewrite_qc", "coldstart_dataset", "gppo_quota"}
    assert not on_cluster & local
    submitted = _submitted(output)
    assert len(submitted) == len(re.findall(r"^(?:rule|checkpoint) \w+:", output, flags=re.M))
    for jobid, log in submitted.items():
        assert log.is_file(), log
        assert log.is_relative_to(work / ".snakemake/slurm_logs")
        assert log.name == f"{jobid}.log"
    calls = re.findall(r"sbatch call: (.*)", output)
    assert len(calls) == len(submitted)
    for call in calls:
        comment = re.search(r"--comment (\S+)", call).group(1).strip("'")
        rule = comment.removeprefix("rule_").split("_wildcards_")[0]
        assert f"-p {cluster.partition}" in call, call
        assert ("--gpus=1" in call) == (rule in GPU_RULES), call

    manifests = sorted(work.glob("results/**/*manifest.json")) + [
        work / "data/synthetic/manifest.json"
    ]
    seen = set()
    for path in manifests:
        lineage = json.loads(path.read_text())
        rule, jobid = lineage["rule"], lineage["slurm_job_id"]
        if rule in local:
            assert jobid is None, path
            continue
        assert rule in on_cluster, (path, rule)
        assert jobid in submitted, (path, jobid)
        log = submitted[jobid]
        assert log.parent.relative_to(work / ".snakemake/slurm_logs").parts[0] == f"rule_{rule}"
        assert f"rule {rule}:" in log.read_text(), log
        seen.add(rule)
    assert seen == on_cluster, on_cluster - seen


def test_artifacts_equal_a_local_run(runs):
    slurm, local = _files(runs["slurm"]), _files(runs["local"])
    assert slurm.keys() <= local.keys(), slurm.keys() - local.keys()  # the local run went on
    for key in (
        "data/synthetic/labels.csv",
        "results/ingest/manifest.parquet",
        "results/datasets/coldstart.jsonl",
        "results/datasets/rl_prompts.jsonl",
        "results/datasets/test.jsonl",
        "results/model/base/model.safetensors",
        "results/model/align/final/model.safetensors",
        "results/model/sft/seed1/final/model.safetensors",
        "results/gppo/sft-ts-iou/seed1/phase1/model/model.safetensors",
        "results/gppo/sft-ts-iou/seed1/phase1/posterior.json",
        "results/eval/s1/seed1/metrics.json",
        "results/eval/s1/seed1/samples.parquet",
    ):
        assert key in slurm, key
    differ = []
    for key, path in slurm.items():
        if path.name.endswith("manifest.json"):
            same = _normalised_manifest(path) == _normalised_manifest(local[key])
        else:
            same = path.read_bytes() == local[key].read_bytes()
        if not same:
            differ.append(key)
    assert differ == []
    # The manifests differ in what they should: the SLURM run's name their jobs.
    sft = {
        k: json.loads((runs[k] / "results/model/sft/seed1/manifest.json").read_text())
        for k in ("slurm", "local")
    }
    assert sft["slurm"]["slurm_job_id"] and sft["local"]["slurm_job_id"] is None
    assert sft["slurm"]["output_dirs"] == sft["local"]["output_dirs"]
    # The evaluation's arithmetic ran under the same kernels, in a warm fork locally and in the
    # SLURM job's own process.
    evaluation = {
        k: json.loads((runs[k] / "results/eval/s1/seed1/manifest.json").read_text())
        for k in ("slurm", "local")
    }
    assert evaluation["slurm"]["worker_numerics"] == evaluation["local"]["worker_numerics"]
    assert evaluation["local"]["worker_numerics"]["torch"]["cpu_capability"] == "AVX2"
    assert evaluation["local"]["environment"]["numerics"]["torch"] is None  # the fork did it


def test_failed_job_names_its_slurm_log(runs, cluster, tmp_path):
    """A zero-shot model that is not there: the evaluate job fails inside SLURM."""
    work = tmp_path / "wf"
    shutil.copytree(runs["slurm"], work, symlinks=True, ignore=shutil.ignore_patterns("slurm_logs"))
    (work / "config/broken.yaml").write_text(
        "evaluate:\n  zero_shot:\n    - {name: broken, model: cmr-rd-tests/no-such-model}\n"
    )
    result = subprocess.run(
        [*SNAKEMAKE, "results/eval/zeroshot/broken/metrics.json",
         "--configfile", "config/tiny.yaml", "config/broken.yaml", *_slurm_args(cluster)],
        cwd=work, env=cluster.env(_env()), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    (jobid, log), *others = _submitted(output).items()
    assert others == [], output[-4000:]  # only the evaluation ran: everything else was up to date
    assert re.search(rf"SLURM-job '{jobid}' failed, SLURM status is: 'FAILED'", output)
    block = output[output.index("Error in rule evaluate:") :]
    assert str(log) in block, block[:2000]
    assert log.is_file() and log.parent.name == "zeroshot_broken"
    text = log.read_text()
    assert "no-such-model" in text and "Error in rule evaluate" in text, text[-3000:]
