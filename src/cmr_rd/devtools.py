"""Developer tooling shared by the workflow tests and the benchmarks: a scratch copy of the
workflow (code and config, no data or results) in which Snakemake runs as it would in a clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_PARTS = ("Snakefile", "rules", "workflow", "config", "profiles", "envs", "slurm")


def copy_workflow(dst: Path, repo: Path = REPO) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = repo / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst / part)
    return dst


def snakemake(workdir: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the venv's Snakemake in workdir; output captured as text."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
