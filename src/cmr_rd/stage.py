"""Small helpers the stage entry points use: logging, paths, and the rule-script harness.

A training rule's run folder (fingerprint, launch, resume) is the training runtime's:
`cmr_rd.model.runtime.train_in_run_folder`.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path


def setup_logging(log_path: str | Path | None) -> logging.Logger:
    """Log (and warnings) to the rule's log file and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    return logging.getLogger("cmr_rd")


def optional_paths(value) -> list[str]:
    """A Snakemake input that may be absent, one path, or several, as a list of paths."""
    if not value:
        return []
    return [value] if isinstance(value, str | Path) else [str(v) for v in value]


def looks_like_path(name: str) -> bool:
    """A hub id is `name` or `org/name`; anything else (absolute, ./, ~, a/b/c) or an existing
    folder is a local path."""
    name = str(name)
    return (
        os.path.isabs(name)
        or name.startswith((".", "~"))
        or name.count("/") > 1
        or Path(name).expanduser().exists()
    )


# ---------------------------------------------------------------------------------------------
# The rule-script harness: every script's bookkeeping, done once.

# Errors whose message is the whole story (bad input, a missing key, an edited checkpoint): the
# job logs one line and exits 2, no traceback. Matched by the name of a cmr_rd class, not
# imported: a light job must not import torch to learn the training errors' classes, and the
# check holds wherever the library keeps them. tests/test_harness.py checks each name exists.
KNOWN_ERRORS = frozenset({
    "StageError",  # cmr_rd.stage: what a script finds itself
    "CheckpointError",  # cmr_rd.checkpoints
    "RunNameError",  # cmr_rd.gppo.runs
    "InputError", "MissingKeyError", "OcrUnavailable",  # cmr_rd.ingest
    "MissingAPIKeyError", "ReviewError",  # cmr_rd.rewrite
    "BackboneError", "TrainInputError",  # cmr_rd.model
    "EvalInputError",  # cmr_rd.evaluate
    "PredictInputError",  # cmr_rd.predict
    "JudgeInputError", "RatingsSheetError",  # cmr_rd.judge
    "NumericsError",  # cmr_rd.numerics
})  # fmt: skip
# Manifest keys the harness fills from the snakemake object; the body adds others with record().
MANIFEST_KEYS = {"rule", "git", "config_sha256", "params", "inputs", "outputs", "output_dirs",
                 "slurm_job_id", "environment", "wildcards", "input_names"}  # fmt: skip


class StageError(Exception):
    """A problem with a job's inputs or settings that a script finds itself (exit 2, one line)."""


def known_error(exc: BaseException) -> bool:
    """Whether `exc` is (or derives from) one of the library's KNOWN_ERRORS."""
    return any(
        cls.__name__ in KNOWN_ERRORS and cls.__module__.startswith("cmr_rd.")
        for cls in type(exc).__mro__
    )


def declared_files(value) -> list[str]:
    """The paths in a Snakemake input or output (named or not, single or lists), in order, once."""
    if value is None:
        return []
    if isinstance(value, str | Path):
        return [str(value)]
    return list(dict.fromkeys(p for item in value for p in declared_files(item)))


def jsonable(value):
    """Params as JSON: Snakemake's lists and annotated strings as plain lists and strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def describe_declared(log: logging.Logger, paths: list[str]) -> dict[str, dict]:
    """Each input's digest, hashed once: folders through the checkpoint check (a folder that a
    manifest records must still match it, or CheckpointError names the changed file), files
    directly."""
    from cmr_rd.checkpoints import require_intact
    from cmr_rd.lineage import describe_inputs

    folders = [p for p in paths if Path(p).is_dir()]
    described = require_intact(log, *folders) if folders else {}
    described.update(describe_inputs([p for p in paths if p not in described]))
    return described


class RuleRun:
    """One rule job, opened and closed the same way by every script:

        with RuleRun(snakemake) as run:
            ...  # run.log, run.digest(path); run.record(figures=...) for the manifest

    - logging (and warnings) to the rule's first log file and to stderr;
    - every declared input hashed once, before the body; a folder input that a manifest records
      (a checkpoint, an image tree) must still match that record, else the job stops;
    - a known error (KNOWN_ERRORS) ends the job with exit 2 and one line in the log;
    - after the body, the lineage manifest, where the rule declares an output `lineage` (and
      `packages`, the package list beside it): the rule, config hash, every param, the
      wildcards, every declared input and output, and what the body added with record().

    No script chooses what its lineage records, so every file a script writes must be a
    declared output. The exceptions are state that must outlive a job, which Snakemake would
    delete as an output: a training run's resumable `runs/` folder, the rewrite API cache.
    """

    def __init__(self, sm):
        self.sm = sm
        self.log = logging.getLogger("cmr_rd")
        self.inputs: dict[str, dict] = {}
        self.extra: dict = {}

    def __enter__(self) -> RuleRun:
        self.log = setup_logging(self.sm.log[0] if len(self.sm.log) else None)
        lineage = self.sm.output.get("lineage")
        if lineage:  # a rule that misdeclares its package list fails before the work, not after
            from cmr_rd.lineage import packages_path

            listed = packages_path(lineage)
            if Path(self.sm.output.get("packages") or "") != listed:
                raise ValueError(f"the rule must declare output packages={str(listed)!r}")
        paths = declared_files(self.sm.input)
        if not lineage:  # nothing to record: only check the folders
            paths = [p for p in paths if Path(p).is_dir()]
        try:
            self.inputs = describe_declared(self.log, paths)
        except Exception as exc:
            self._stop(exc)
            raise
        return self

    def __exit__(self, kind, exc, traceback) -> bool:
        if exc is None:
            self.write_manifest()
        elif isinstance(exc, Exception):
            self._stop(exc)
        return False  # anything else goes on as raised: a traceback, or SystemExit's code

    def _stop(self, exc: Exception) -> None:
        if known_error(exc):
            self.log.error("%s", " ".join(str(exc).split()))
            raise SystemExit(2) from None

    def digest(self, path) -> str:
        """The sha256 of a declared input, as hashed on entry (files and folders alike)."""
        return self.inputs[str(path)]["sha256"]

    def record(self, **extra) -> None:
        """Figures the body measured (counts, summaries), added to the manifest."""
        clash = MANIFEST_KEYS & set(extra)
        if clash:
            raise ValueError(f"record() cannot set the manifest's own keys {sorted(clash)}")
        self.extra.update(extra)

    def write_manifest(self) -> Path | None:
        from cmr_rd.lineage import packages_path, write_manifest

        sm = self.sm
        lineage = sm.output.get("lineage")
        if not lineage:
            return None
        own = {str(lineage), packages_path(lineage).as_posix()}
        names = {name: declared_files(value) for name, value in sm.input.items()}
        return write_manifest(
            lineage,
            rule=sm.rule,
            config=sm.config,
            params=jsonable(dict(sm.params.items())),
            inputs=self.inputs,
            outputs=[p for p in declared_files(sm.output) if p not in own],
            extra={
                "wildcards": jsonable(dict(sm.wildcards.items())),
                "input_names": {k: v[0] if len(v) == 1 else v for k, v in names.items()},
                **self.extra,
            },
        )
