"""Small helpers every stage entry point uses: logging to the rule's log file."""

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


def fingerprint(settings: dict) -> str:
    """A short stable digest of a training run's inputs and settings: its run folder's name.

    A rerun with the same inputs finds its own checkpoints and resumes; a changed input or setting
    gets a fresh folder instead of resuming someone else's run.
    """
    import hashlib
    import json

    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def launch_training(args: list[str], gpus: int, log_path: str | Path) -> int:
    """Run a training CLI (`-m module ...`) in a child process; return its exit code.

    One process per GPU through `accelerate launch` with the shipped DDP config when the job has
    several GPUs, else the current interpreter. SIGTERM (SLURM preemption) is passed on to the
    child, which checkpoints and exits 143, so the job's rerun resumes.
    """
    import signal
    import subprocess

    if gpus > 1:
        cmd = ["accelerate", "launch", "--config_file", "config/accelerate/ddp.yaml",
               "--num_processes", str(gpus), *args]  # fmt: skip
    else:
        cmd = [sys.executable, *args]
    logging.getLogger("cmr_rd").info("launching %s", " ".join(cmd))
    with open(log_path, "a") as stream:
        child = subprocess.Popen(cmd, stdout=stream, stderr=subprocess.STDOUT)
        previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        try:
            return child.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)


def train_in_run_folder(
    cli: list[str],
    settings: dict,
    run_id: str,
    final: str | Path,
    gpus: int,
    log_path,
    log,
    runs: str | Path | None = None,
) -> Path:
    """Train in `<runs>/<run_id>/` (default: `runs/` beside the stage's final folder) and publish
    the run's `final/` at `final`.

    The run folder keeps the checkpoints, so a preempted job's rerun (same inputs and settings,
    same fingerprint) resumes; a failed or preempted child ends the job with its exit code.
    """
    import json
    import shutil

    run = Path(runs or Path(final).parent / "runs") / run_id
    run.mkdir(parents=True, exist_ok=True)
    (run / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
    log.info("run folder %s", run)
    code = launch_training([*cli, "--out", str(run), "--config", str(run / "settings.json")],
                           gpus, log_path)  # fmt: skip
    if code != 0:
        log.error("training exited with code %d (143: preempted, rerun to resume)", code)
        sys.exit(code)
    shutil.copytree(run / "final", final)
    return run


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


def require_intact(log: logging.Logger, *checkpoints) -> dict[str, dict]:
    """Before a stage loads a checkpoint: its files must hash to what the stage that wrote it
    recorded. A corrupted or edited checkpoint stops the job (exit 2) with the file named.

    Returns each checkpoint's input record, as `describe_inputs` gives it, for the job's
    manifest: a checkpoint is hashed once per job, here, not again when the manifest is written.
    """
    from cmr_rd.audit import CheckpointError, build_index, verify_checkpoint
    from cmr_rd.lineage import describe_inputs

    index = build_index(".")  # read the manifests once for every checkpoint of the job
    described = {}
    for path in checkpoints:
        try:
            manifest = verify_checkpoint(path, index=index)
        except CheckpointError as exc:
            log.error("%s", exc)
            sys.exit(2)
        if manifest:
            log.info("checkpoint %s matches %s", path, manifest)
            digest = index.digest(index.norm(str(path)))  # computed by the check just above
            described[str(path)] = {**digest, "path": Path(path).as_posix()}
        else:  # no manifest records it (a model from outside the pipeline)
            described.update(describe_inputs([path]))
    return described
