"""Style gates run in the suite, so CI enforces them: ruff, snakefmt, snakemake --lint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
CODE = ["src", "tests", "workflow", "benchmarks"]


def _run(repo, *cmd):
    return subprocess.run(cmd, cwd=repo, capture_output=True, text=True)


def test_ruff_check_and_format(repo):
    check = _run(repo, str(BIN / "ruff"), "check", "--no-cache", *CODE)
    assert check.returncode == 0, check.stdout
    fmt = _run(repo, str(BIN / "ruff"), "format", "--check", "--no-cache", *CODE)
    assert fmt.returncode == 0, fmt.stdout


def test_snakefmt(repo):
    result = _run(repo, str(BIN / "snakefmt"), "--check", "Snakefile", "rules")
    assert result.returncode == 0, result.stderr


def test_snakemake_lint_is_clean(repo):
    result = _run(repo, sys.executable, "-m", "snakemake", "--lint", "--cores", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr
