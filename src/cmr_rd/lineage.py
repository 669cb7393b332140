"""Lineage manifests: every artifact folder says what produced it, from what, with which code.

Deliberately no wall-clock time in a manifest, so a deterministic rerun is byte-identical.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
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


def file_digests(root: str | Path) -> dict[str, str]:
    """Every file below a folder (relative posix path -> sha256), in sorted order."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != SNAKEMAKE_MARKER)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in files}


def _tree_digest(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for rel, sha in files.items():
        digest.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(sha.encode() + b"\n")
    return digest.hexdigest()


def sha256_tree(root: str | Path) -> tuple[str, int]:
    """One digest over a folder: sorted relative paths and file digests. Returns (hex, files)."""
    files = file_digests(root)
    return _tree_digest(files), len(files)


def checkpoint_digest(path: str | Path) -> dict:
    """A checkpoint folder's digest with every file's hash, so a later check can name the file
    that changed (a folder digest alone could only say that something did)."""
    files = file_digests(path)
    return {"sha256": _tree_digest(files), "files": len(files), "kind": "dir",
            "path": Path(path).as_posix(), "file_sha256": files}  # fmt: skip


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
    """Digest of each input file or folder, keyed by its path as given.

    A folder's entry also carries its path: callers store checkpoints under a role name
    ("parent_checkpoint") or as `final_sha256`, and the audit needs the path to walk back."""
    described = {}
    for path in paths:
        p = Path(path)
        if p.is_dir():
            record = checkpoint_digest(p)
            del record["file_sha256"]  # the folder digest is enough to notice a change
            described[str(path)] = record
        elif p.is_file():
            described[str(path)] = {"sha256": sha256_file(p), "kind": "file"}
        else:
            described[str(path)] = {"sha256": None, "kind": "missing"}
    return described


@functools.cache
def installed_packages() -> str:
    """Every installed distribution as sorted 'name==version' lines (names normalised as pip
    does), computed once per process: the same environment always gives the same bytes."""
    lines = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:  # a broken install can leave metadata without a name
            lines.add(f"{re.sub(r'[-_.]+', '-', name).lower()}=={dist.version}")
    return "".join(f"{line}\n" for line in sorted(lines))


def packages_path(manifest: str | Path) -> Path:
    """Where a manifest's package list lives: `x.manifest.json` -> `x.manifest.packages.txt`."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.name.removesuffix(".json") + ".packages.txt")


def _as_recorded(path: Path) -> str:
    """A path as manifests record them: relative to the working directory where possible."""
    if path.is_absolute():
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return path.as_posix()
    return path.as_posix()


def write_environment(manifest: str | Path) -> dict:
    """Save the package list beside `manifest` and return the manifest's `environment` entry.

    Unchanged lists are not rewritten, and a changed one replaces the old atomically, so a job
    reading it never sees half a file."""
    text = installed_packages()
    target = packages_path(manifest)
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, target)
    return {
        "python": sys.version.split()[0],
        "packages_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "packages_file": _as_recorded(target),
    }


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
    file, for folders that several rules write into), and the installed package list beside it
    (`<stem>.packages.txt`), so `cmr_rd.audit` can say which environment made an artifact."""
    target = Path(out_dir)
    path = target if target.suffix == ".json" else target / "manifest.json"
    outputs = sorted(map(str, outputs))
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "rule": rule,
        "git": git_state(),
        "config_sha256": sha256_json(config),
        "params": params,
        "inputs": inputs,
        "outputs": {p: sha256_file(p) for p in outputs if Path(p).is_file()},
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "environment": write_environment(path),
    }
    folders = [p for p in outputs if Path(p).is_dir()]
    if folders:  # folder outputs (image trees, checkpoints): digest and file count, by path
        manifest["output_dirs"] = describe_inputs(folders)
    if extra:
        manifest.update(extra)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return path
