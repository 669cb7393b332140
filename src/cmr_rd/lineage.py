"""Lineage manifests: every artifact folder says what produced it, from what, with which code.

Deliberately no wall-clock time in a manifest, so a deterministic rerun is byte-identical.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import posixpath
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cmr_rd import numerics

CHUNK = 1 << 20
# Snakemake drops this marker into every directory() output after the job; it is not content.
SNAKEMAKE_MARKER = ".snakemake_timestamp"
# A folder output with at most this many files (a checkpoint) records every file's digest.
FILE_LIST_LIMIT = 256


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


def _output_dir(path: str | Path) -> dict:
    """A folder output's record: a checkpoint-sized folder lists every file's digest, so a check
    can name the file that changed; an image tree (thousands of files) only its tree digest."""
    record = checkpoint_digest(path)
    if record["files"] > FILE_LIST_LIMIT:
        del record["file_sha256"]
    return record


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

    A folder's entry also carries its path: older manifests stored checkpoints under a role
    name ("parent_checkpoint"), and the audit needs the path to walk back."""
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
        metadata = dist.metadata  # parsed on each access: `dist.version` would parse it again
        name = metadata["Name"]
        if name:  # a broken install can leave metadata without a name
            lines.add(f"{re.sub(r'[-_.]+', '-', name).lower()}=={metadata['Version']}")
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
        # The kernels that made this job's numbers (cmr_rd.numerics): pins, CPU, torch's level.
        "numerics": numerics.record(),
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
    (`<stem>.packages.txt`), so `cmr_rd.audit` can say which environment made an artifact.

    Rule scripts do not call this themselves: `cmr_rd.stage.RuleRun` does, from the snakemake
    object, so that every declared input, output and param is recorded."""
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
        manifest["output_dirs"] = {p: _output_dir(p) for p in folders}
    if extra:
        manifest.update(extra)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return path


# Reading manifests back: the audit and the checkpoint check share one index.
MANIFEST_GLOBS = ("results/**/*manifest.json", "data/**/manifest.json")
# Keys every manifest has; any other key holding a folder digest describes a directory output.
CORE_KEYS = {
    "rule", "git", "config_sha256", "params", "inputs", "outputs", "output_dirs", "slurm_job_id"
}  # fmt: skip
# Outputs that record wall-clock time (the speed a run went at), so no two runs agree on them:
# comparisons of runs (the SLURM test, `cmr_rd.divergence`) leave them out.
WALL_CLOCK_FILES = frozenset({"train_summary.json", "trainer_state.json", "timing.json"})


def is_wall_clock(path: str) -> bool:
    name = PurePosixPath(path).name
    return name in WALL_CLOCK_FILES or name.startswith("events.out.tfevents")


# Resumable checkpoint folders beside a train manifest: never the published model.
RUN_FOLDERS = {"runs"}


@dataclass
class Index:
    """Every manifest under the root, read once, with lookups from artifact path to producer."""

    root: Path
    manifests: dict[str, dict] = field(default_factory=dict)
    outputs: dict[str, list[str]] = field(default_factory=dict)
    dirs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    by_hash: dict[str, list[str]] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    digests: dict[str, dict] = field(default_factory=dict)

    def digest(self, path: str) -> dict:
        """Current digest of a file or folder under the root (cached: ancestors are shared)."""
        if path not in self.digests:
            target = self.root / path
            if target.is_dir():
                sha, files = sha256_tree(target)
                self.digests[path] = {"sha256": sha, "kind": "dir", "files": files}
            elif target.is_file():
                self.digests[path] = {"sha256": sha256_file(target), "kind": "file"}
            else:
                self.digests[path] = {"sha256": None, "kind": "missing"}
        return self.digests[path]

    def norm(self, path: str) -> str:
        """A manifest's path as a key relative to the root (manifests record them as given)."""
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.relative_to(self.root.resolve())
            except ValueError:
                return p.as_posix()
        return posixpath.normpath(p.as_posix())


def build_index(root: str | Path = ".") -> Index:
    """Read every lineage manifest under `root` (files that are not one are skipped)."""
    index = Index(Path(root))
    for pattern in MANIFEST_GLOBS:
        for path in sorted(index.root.glob(pattern)):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and "rule" in data and isinstance(data.get("inputs"), dict):
                index.manifests[path.relative_to(index.root).as_posix()] = data
    for rel, data in index.manifests.items():
        for out in data.get("outputs") or {}:
            index.outputs.setdefault(index.norm(out), []).append(rel)
        digests = [(key, value) for key, value in data.items() if key not in CORE_KEYS]
        digests += list((data.get("output_dirs") or {}).items())
        for key, value in digests:
            if not is_dir_digest(value):
                continue
            folder = value.get("path") or infer_dir(index.root, rel, key)
            if folder:
                folder = index.norm(folder)
                index.dirs.setdefault(folder, []).append((rel, value["sha256"]))
                index.by_hash.setdefault(value["sha256"], []).append(folder)
        env = data.get("environment") or {}
        listed = env.get("packages_file") or packages_path(rel).as_posix()
        index.packages[index.norm(listed)] = rel
    return index


def is_dir_digest(value) -> bool:
    return isinstance(value, dict) and value.get("kind") == "dir" and bool(value.get("sha256"))


def infer_dir(root: Path, manifest: str, key: str) -> str | None:
    """The folder a directory digest describes, for manifests written before digests carried
    their path: the sibling folder named like the manifest (base.manifest.json -> base) or the
    key (final_sha256 -> final), else the only sibling folder that is not a run folder."""
    parent = posixpath.dirname(manifest)
    folder = root / parent
    if not folder.is_dir():
        return None
    siblings = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name not in RUN_FOLDERS)
    stem = Path(manifest).name.removesuffix("manifest.json").rstrip(".")
    for name in (stem, key.removesuffix("_sha256")):
        if name and name in siblings:
            return posixpath.join(parent, name)
    return posixpath.join(parent, siblings[0]) if len(siblings) == 1 else None
