"""DVC for real, in a scratch git + DVC repository with a local remote in tmp.

The repository is a copy of the suite's tiny run (the whole tiny workflow, run once per session),
its DVC stages the first half of it (cohort, ingestion with its montages, rewriting, the QC
checkpoint and its shards, the datasets, the backbone: files, folders, benchmarks). Then: commit
+ push leave Snakemake and `dvc status` clean, `dvc dag` is the rule graph, git sees no change but
the new dvc.lock (the dvc.yaml generated before any run is what the commit writes), and after
`rm -rf results` and an empty cache, the restore (pull, status, touch) leaves Snakemake with
nothing to do and the results byte for byte as they were.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cmr_rd.classes import CLASSES
from cmr_rd.devtools import copy_workflow, snakemake
from cmr_rd.dvcgen import RECORD, commit, generate, restore
from conftest import copy_run
from test_dvc_mirror import dvc_dag, snakemake_graph

REPO = Path(__file__).resolve().parents[1]

TINY = ("--configfile=config/tiny.yaml",)  # "=": the targets after it are not config files
# The base model (its foundation chain) and the cohort's chain through the rewrite checkpoint to
# the cold-start dataset: since the tokenizer reads the pool's text, the first no longer pulls in
# the second.
TARGETS = (
    "results/model/base",
    "results/ingest/qc/manifest.json",
    "results/datasets/coldstart.jsonl",
)
NOTHING = "Nothing to be done"


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, check=True
    )


def _git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=True).stdout


def _files(root: Path) -> dict[str, tuple[str, int]]:
    """Every result and data file: its digest and modification time."""
    return {
        p.relative_to(root).as_posix(): (_sha256(p), p.stat().st_mtime_ns)
        for top in ("results", "data")
        for p in sorted((root / top).rglob("*"))
        if p.is_file()
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tracked(root: Path, files: dict) -> dict:
    """The files inside DVC's outs (dvc.lock), by their digest."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    outs = [o["path"] for stage in lock.values() for o in stage["outs"]]
    return {
        path: digest
        for path, (digest, _) in files.items()
        if any(path == o or path.startswith(o + "/") for o in outs)
        and not path.endswith(".snakemake_timestamp")  # in .dvcignore: Snakemake's, not data
    }


@pytest.fixture(scope="module")
def work(tmp_path_factory, repo, tiny_run):
    """A DVC repository like ours (its .dvc/config, .dvcignore, .gitignore, the library), the
    remote `local` pointed at tmp, committed to git as a fresh clone is: with the dvc.yaml that
    `python -m cmr_rd.dvcgen` writes before any run (generated in a copy of the workflow with no
    results), for this config and these targets. The results are the tiny run's; then
    dvc_commit's commit + push, and `git status` right after them."""
    fresh = copy_workflow(tmp_path_factory.mktemp("dvcgen"), repo)
    shutil.copy(repo / "tests/configs/tiny.yaml", fresh / "config/tiny.yaml")
    dvc_yaml = generate(fresh, ["config/tiny.yaml"], list(TARGETS))
    root = copy_run(tiny_run, tmp_path_factory.mktemp("dvcwf") / "work")
    shutil.copytree(repo / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(repo / name, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc(root, "init", "-q")
    shutil.copy(repo / ".dvc/config", root / ".dvc/config")
    remote = tmp_path_factory.mktemp("remote")
    _dvc(root, "remote", "modify", "--local", "local", "url", str(remote))
    (root / "dvc.yaml").write_text(dvc_yaml)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "the workflow, dvc.yaml generated before any run")
    noop = snakemake(root, "--cores", "1", "-n", *TINY, *TARGETS)
    assert noop.returncode == 0 and NOTHING in noop.stdout + noop.stderr  # the copy is current
    before = _files(root)
    record = commit(root, ["config/tiny.yaml"], remote="local", targets=list(TARGETS))
    git_status = _git(root, "status", "--porcelain", "--untracked-files=all")
    return {
        "root": root,
        "remote": remote,
        "record": record,
        "before": before,
        "git_status": git_status,
    }


@pytest.mark.slow
def test_commit_records_every_stage_and_pushes(work):
    root, record = work["root"], work["record"]
    assert record["status"] == "committed" and record["dvc_status"] == {}
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert {name.split("@")[0] for name in lock} == set(stages)
    assert {"synthesize_cohort", "coldstart_shard", "build_backbone"} <= set(lock)
    # The shards, one per class QC accepted (here all), are recorded as their folder.
    (shards,) = lock["coldstart_shard"]["outs"]
    folder = root / "results/datasets/coldstart"
    assert shards["path"] == "results/datasets/coldstart"
    assert shards["nfiles"] == sum(1 for p in folder.iterdir() if p.is_file())
    assert {p.stem for p in folder.glob("*.jsonl")} == set(CLASSES)
    assert "Data and pipelines are up to date" in _dvc(root, "status").stdout
    assert "in sync" in _dvc(root, "status", "--cloud", "--remote", "local").stdout
    assert len(_tracked(root, work["before"])) > 200  # images, DICOM, the model's files


@pytest.mark.slow
def test_commit_leaves_the_workspace_alone(work):
    """No relink: same bytes, same modification times, so Snakemake has nothing to do."""
    root = work["root"]
    assert _files(root) == work["before"]
    noop = snakemake(root, "--cores", "1", "-n", *TINY, *TARGETS)
    assert noop.returncode == 0 and NOTHING in noop.stdout + noop.stderr


@pytest.mark.slow
def test_commit_after_a_run_leaves_git_clean_but_for_the_new_lock(work):
    """The demo ends with dvc_commit, which regenerates dvc.yaml once the QC checkpoint has run
    (its shards known) and writes dvc.lock: the committed dvc.yaml, generated before any run, is
    what it writes, and it touches no other file git tracks or sees (.gitignore included).
    dvc.lock is new and untracked, for the user to commit: DVC refuses to write a git-ignored
    lock ("dvc.lock is git-ignored"), so it cannot be hidden."""
    assert work["git_status"].splitlines() == ["?? dvc.lock"]


@pytest.mark.slow
def test_dvc_dag_is_the_rule_graph(work):
    root = work["root"]
    assert dvc_dag(root) == snakemake_graph(root, *TINY, *TARGETS)


@pytest.mark.slow
def test_dvc_commit_is_the_last_rule_and_local(work, repo):
    plan = snakemake(work["root"], "--cores", "1", "-n", *TINY, "dvc_commit")
    assert plan.returncode == 0, plan.stderr[-2000:]
    job = plan.stdout.split("rule dvc_commit:")[1].split("reason:")[0]
    assert "results/report/report.md" in job and ".dvc/config" in job
    snakefile = (repo / "Snakefile").read_text()
    localrules = re.search(r"^localrules:\n((?:    \w+,\n)+)", snakefile, re.M).group(1)
    assert "dvc_commit" in re.findall(r"\w+", localrules), "never a cluster job"


@pytest.mark.slow
def test_restore_after_removing_results_and_cache(work, tmp_path):
    """A checkout stamps files in DVC's order; the restore (checkout or pull, `dvc status`
    clean, `snakemake --touch`) gives Snakemake nothing to do, with the same bytes."""
    root = copy_run(work["root"], tmp_path / "dvcwf")  # its own copy: the other tests read work
    shutil.rmtree(root / "results")
    shutil.rmtree(root / ".dvc/cache")  # as on a fresh clone: everything comes from the remote
    restore(root, ["config/tiny.yaml"], remote="local")
    noop = snakemake(root, "--cores", "1", "-n", *TINY, *TARGETS)
    assert noop.returncode == 0 and NOTHING in noop.stdout + noop.stderr
    assert _tracked(root, _files(root)) == _tracked(root, work["before"])
    record = json.loads((root / RECORD).read_text())  # dvc_commit's job is current too
    assert record["status"] == "restored" and record["dvc_status"] == {}
    assert "Data and pipelines are up to date" in _dvc(root, "status").stdout


def test_commit_outside_a_dvc_repository_only_says_so(tmp_path):
    record = commit(tmp_path)
    assert record["status"] == "skipped" and "no .dvc/" in record["reason"]
    assert list(tmp_path.iterdir()) == []  # no dvc.yaml, nothing else


def test_commit_in_an_unpacked_archive_only_says_so(tmp_path):
    """An archive of the repository (a release tarball, GitHub's "Download ZIP") has .dvc/ but
    no git, and DVC refuses every command there: the demo's last job would fail after all the
    work. The commit is skipped with the way to version instead (with core.no_scm set DVC runs
    without git, and the commit goes ahead); a DVC command that fails is one StageError line
    with DVC's own message."""
    from cmr_rd.dvcgen import outside_git
    from cmr_rd.stage import StageError

    (tmp_path / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    assert not any((folder / ".git").exists() for folder in (tmp_path, *tmp_path.parents))
    record = commit(tmp_path)
    assert record["status"] == "skipped" and "outside git" in record["reason"]
    assert "core.no_scm" in record["reason"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dvc"]  # no dvc.yaml
    with pytest.raises(StageError, match="not a git repository") as caught:
        restore(tmp_path)
    assert "\n" not in str(caught.value)

    (tmp_path / ".dvc" / "config.local").write_text("[core]\n    no_scm = true\n")
    assert outside_git(tmp_path) is False


def test_snakemake_is_the_version_dvcgen_reads_the_dag_of():
    """dvcgen reads job inputs, outputs, params and wildcards through Snakemake internals (no
    public API gives them; the list is in cmr_rd.dvcgen above SNAKEMAKE_CHECKED). On an upgrade:
    recheck those names, regenerate dvc.yaml, run this file and test_dvc_mirror.py, then move
    SNAKEMAKE_CHECKED."""
    import snakemake

    from cmr_rd.dvcgen import SNAKEMAKE_CHECKED

    assert snakemake.__version__ == SNAKEMAKE_CHECKED == "9.27.1", (
        f"Snakemake {snakemake.__version__}: dvcgen was written against {SNAKEMAKE_CHECKED}; "
        "recheck WorkflowApi._workflow, Workflow._prepare_dag/_build_dag/.dag.jobs and Job "
        "attributes (cmr_rd/dvcgen.py)"
    )
