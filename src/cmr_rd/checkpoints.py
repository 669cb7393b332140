"""Checkpoint integrity: a folder a stage reads must hash to what the stage that wrote it recorded.

Every job checks its folder inputs here before it uses them (through `cmr_rd.harness`), so a
corrupted or edited checkpoint stops the job with the changed file named, and the audit names
the same files when it finds a folder that no longer matches its manifest.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from cmr_rd.lineage import (
    CORE_KEYS,
    Index,
    build_index,
    describe_inputs,
    file_digests,
    infer_dir,
    is_dir_digest,
)


class CheckpointError(Exception):
    """A checkpoint folder that no longer matches what the stage that wrote it recorded."""


def _key(index: Index, path: str | Path) -> str:
    """`path` as the index keys it: relative to the index root, normalised."""
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(index.root.resolve())
        except ValueError:
            return p.as_posix()
    return posixpath.normpath(p.as_posix())


def recorded_digest(index: Index, folder: str) -> dict:
    """The digest record of `folder` in the manifest that produced it ({} when none does)."""
    if folder not in index.dirs:
        return {}
    manifest = index.dirs[folder][-1][0]
    data = index.manifests[manifest]
    candidates = [(k, v) for k, v in data.items() if k not in CORE_KEYS]
    candidates += list((data.get("output_dirs") or {}).items())
    for key, value in candidates:
        if is_dir_digest(value):
            where = value.get("path") or infer_dir(index.root, manifest, key)
            if where and index.norm(where) == folder:
                return value
    return {}


def folder_changes(index: Index, folder: str) -> str:
    """What changed in a folder since its producer recorded it: the changed, missing and
    unexpected files where the record lists every file, else only that the digest changed."""
    files = recorded_digest(index, folder).get("file_sha256")
    if not files:
        return "its digest changed"
    now = file_digests(index.root / folder)
    changed = sorted(f for f in files if f in now and now[f] != files[f])
    missing = sorted(set(files) - set(now))
    extra = sorted(set(now) - set(files))
    parts = [f"{name}: {', '.join(f'{folder}/{f}' for f in group)}"
             for name, group in (("changed", changed), ("missing", missing),
                                 ("unexpected", extra)) if group]  # fmt: skip
    return "; ".join(parts) or "its digest changed"


def verify_checkpoint(
    path: str | Path, root: str | Path = ".", index: Index | None = None
) -> str | None:
    """Check a checkpoint folder against its producer's record before it is used.

    Returns the manifest it was checked against, or None when no manifest records the folder
    (a zero-shot model from the HF cache). Raises CheckpointError naming the changed, missing or
    extra files (or, for records without per-file hashes, the folder)."""
    index = index or build_index(root)
    folder = _key(index, path)
    if folder not in index.dirs:
        return None
    manifest, recorded = index.dirs[folder][-1]
    if index.digest(folder)["sha256"] == recorded:
        return manifest
    rule = index.manifests[manifest].get("rule")
    raise CheckpointError(
        f"checkpoint {folder} does not match what rule {rule} recorded in {manifest} "
        f"({folder_changes(index, folder)}); rerun that rule (snakemake --forcerun {rule}) "
        "or restore the folder"
    )


def require_intact(log, *checkpoints, index: Index | None = None) -> dict[str, dict]:
    """Before a stage loads checkpoints: each must hash to what the stage that wrote it recorded
    (CheckpointError otherwise, naming the file).

    Returns each checkpoint's input record, as `describe_inputs` gives it, for the job's
    manifest: a checkpoint is hashed once per job, here, not again when the manifest is written.
    """
    index = index or build_index(".")  # read the manifests once for every checkpoint of the job
    described = {}
    for path in checkpoints:
        manifest = verify_checkpoint(path, index=index)
        if manifest:
            log.info("checkpoint %s matches %s", path, manifest)
            digest = index.digest(_key(index, path))  # computed by the check just above
            described[str(path)] = {**digest, "path": Path(path).as_posix()}
        else:  # no manifest records it (a model from outside the pipeline)
            described.update(describe_inputs([path]))
    return described
