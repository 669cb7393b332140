"""Lineage manifests: every artifact folder says what produced it, from what, with which code.

Deliberately no wall-clock time in a manifest, so a deterministic rerun is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20
# Snakemake drops this marker into every directory() output after the job; it is not content.
SNAKEMAKE_MARKER = ".snakemake_timestamp"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(root: str | Path) -> tuple[str, int]:
    """One digest over a folder: sorted relative paths and file digests. Returns (hex, files)."""
    root = Path(root)
    digest = hashlib.sha256()
    count = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != SNAKEMAKE_MARKER):
        rel = path.relative_to(root).as_posix()
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(sha256_file(path).encode() + b"\n")
        count += 1
    return digest.hexdigest(), count


def sha256_json(obj) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def git_state(repo: str | Path = ".") -> dict:
    """Commit and dirtiness of the code that ran; 'unknown' outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}


def describe_inputs(paths: Iterable[str | Path]) -> dict[str, dict]:
    """Digest of each input file or folder, keyed by its path as given."""
    described = {}
    for path in paths:
        p = Path(path)
        if p.is_dir():
            digest, files = sha256_tree(p)
            described[str(path)] = {"sha256": digest, "files": files, "kind": "dir"}
        elif p.is_file():
            described[str(path)] = {"sha256": sha256_file(p), "kind": "file"}
        else:
            described[str(path)] = {"sha256": None, "kind": "missing"}
    return described


def write_manifest(
    out_dir: str | Path,
    *,
    rule: str,
    config: dict,
    params: dict,
    inputs: dict[str, dict],
    outputs: Iterable[str | Path] = (),
    extra: dict | None = None,
) -> Path:
    """Write `out_dir/manifest.json` for one stage (or `out_dir` itself when it names a .json
    file, for folders that several rules write into)."""
    target = Path(out_dir)
    path = target if target.suffix == ".json" else target / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "rule": rule,
        "git": git_state(),
        "config_sha256": sha256_json(config),
        "params": params,
        "inputs": inputs,
        "outputs": {str(p): sha256_file(p) for p in sorted(map(str, outputs)) if Path(p).is_file()},
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    if extra:
        manifest.update(extra)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return path
