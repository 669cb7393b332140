"""Fixtures and collection order shared by the test files.

`tiny_run`, the whole workflow on tests/configs/tiny.yaml, is built once per test session and
read by the workflow tests; a test that edits files in it or reruns Snakemake there works on its
own copy (`copy_run`; tests/test_workflow.py's `run` fixture gives one to tests marked
`edits_run`). So no test depends on another one having run before it.

`make test` runs two pytest-xdist workers (`-n 2 --dist loadfile`). A session fixture is then
built once per worker, so `_once` builds `tiny_run` in a folder that all workers of the session
share, under a file lock: the first worker to need it builds it, the other waits and reuses it.
The scheduler below keeps each test file on one worker (its module fixtures built once), except
test_workflow.py, whose tests are independent and go to whichever worker is free, and the
collection puts the longest files first so that both workers finish at about the same time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Torch's OpenMP threads sleep when idle instead of spinning. The tests share 2 cores (two xdist
# workers, Snakemake's parallel jobs): beside two busy processes, test_sft_learns_the_format
# (two torch threads) took 46 s and 41 s of CPU spinning, 25 s and 14 s of CPU passive. Set
# before torch is imported, inherited by every job the tests start; results do not change.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The pinned CPU numerics (cmr_rd.numerics), set on import before any test's torch or NumPy does
# arithmetic, and inherited by every process a test starts.
import cmr_rd  # noqa: E402, F401

# Files whose tests may run on different workers (each test sets up what it needs).
SPREAD = {"test_workflow.py"}
# The longest files first (measured in `make test`), so that no long one starts last; the other
# files follow in name order. The SLURM file's run and tiny_run's build start side by side.
LONGEST = (
    "test_slurm.py",
    "test_workflow.py",
    "test_rewrite_openai_workflow.py",
    "test_evaluate_api.py",
    "test_judge_workflow.py",
    "test_predict.py",
    "test_dvc.py",
    "test_foundation.py",
    "test_train.py",
    "test_phi_gate.py",
    "test_gppo_train.py",
    "test_burned_in.py",
    "test_gppo_effect.py",
    "test_rewrite_client.py",
    "test_ingest_faults.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST.index(name) if name in LONGEST else len(LONGEST)

    items.sort(key=rank)  # stable: a file's tests keep their order, and stay together


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadfile` (a file's tests on one worker, its module fixtures built once), except
    that the tests of SPREAD files go one by one to whichever worker is free. (xdist's own
    `loadgroup` would do it with marks, but it renames node ids in a way pytest 9.2 ignores.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SpreadFileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if Path(path).name in SPREAD else path

    return SpreadFileScheduling(config, log)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def _once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """`build(folder)` once per test session, whatever the number of xdist workers; once a
    build has failed, every later request fails at once with its error."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-of-<user>/pytest-<N>/popen-gw<K>: the session's folder
    folder = base / name
    done, failed = base / f"{name}.done", base / f"{name}.failed"
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if failed.exists():
            pytest.fail(f"building {name} failed earlier in this session:\n{failed.read_text()}")
        if not done.exists():
            try:
                build(folder)
            except BaseException:
                failed.write_text(traceback.format_exc()[-6000:])
                raise
            done.touch()
    return folder


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of a finished workflow folder that Snakemake finds just as finished: every file
    and folder keeps its modification time (copy2, copystat) and `.snakemake/` its metadata."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file (and link) under root with its size and modification time."""
    return {
        p.relative_to(root).as_posix(): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_symlink() or not p.is_dir()
    }


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, repo: Path) -> Path:
    """The whole workflow on tests/configs/tiny.yaml (config/tiny.yaml in the folder), run to
    the end once per session. Read it; never write into it or run Snakemake in it (Snakemake
    would take the folder's lock): copy it with `copy_run` first."""
    from cmr_rd.devtools import copy_workflow, snakemake

    def build(work: Path) -> None:
        copy_workflow(work, repo)
        shutil.copy(repo / "tests/configs/tiny.yaml", work / "config/tiny.yaml")
        result = snakemake(work, "--cores", "2", "--configfile", "config/tiny.yaml")
        assert result.returncode == 0, result.stderr[-4000:]

    return _once(tmp_path_factory, "tiny_run", build)
