"""What every training stage shares: the one runtime under alignment, SFT, the foundation stage's
language phase and each GPPO phase.

A stage builds its model, data and trainer; `TrainingRun` does the rest the same way for all:

- the run folder, named by a fingerprint of the run's inputs and settings and launched by the
  job (`train_in_run_folder`), so a rerun with the same inputs resumes and a changed input starts
  afresh: `checkpoints/`, `tensorboard/`, `loss.csv`, `train_summary.json`, `final/`;
- resume from the newest complete checkpoint: weights through `from_pretrained` (see
  `TrainingRun.weights`), optimizer, schedule, RNG and the per-step log through the Trainer;
- preemption: SIGTERM sets a flag, the next step end saves a checkpoint on every rank and training
  stops; `Preempted` tells the CLI to exit 143 so the job's rerun resumes;
- the per-step log: `loss.csv` is written from `Trainer.state.log_history`, which every checkpoint
  saves, so a resumed run's log is the checkpoint's plus the steps trained since, with nothing to
  trim;
- the TrainingArguments both TRL trainers take (`common_training_args`).

Bad inputs are one-line `TrainInputError`s (CLI exit 2), never a traceback from a collator.

torch and transformers are imported where they are used: the job side (`fingerprint`,
`train_in_run_folder`) runs in every training rule's Snakemake job, which only waits for its child.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from cmr_rd import numerics, warm

if TYPE_CHECKING:
    import torch

LOSS_FIELDS = ("step", "epoch", "loss", "learning_rate")


class TrainInputError(ValueError):
    """An input the stage cannot use, in one line that names the cause (CLI exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class Preempted(RuntimeError):
    """Training stopped on SIGTERM after saving a checkpoint; a rerun resumes from it."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(f"preempted (SIGTERM) at step {step}; checkpoint {checkpoint}")


def config_from_mapping(cls: type, values: dict[str, Any], what: str) -> Any:
    """Build a config dataclass from a JSON/YAML mapping, refusing unknown keys (a typo must not
    be ignored) with a one-line TrainInputError."""
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise TrainInputError(f"unknown {what} config keys: {', '.join(unknown)}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise TrainInputError(f"bad {what} config: {exc}") from exc


def missing_backbone(name: str | Path) -> str | None:
    """Why a backbone reference cannot be loaded, if that is known without torch: a local path
    that does not exist (a hub id or an existing folder gives None). `load_backbone` refuses with
    this message, and the command lines ask it before they import torch."""
    from cmr_rd.stage import looks_like_path

    name = str(name)
    if not Path(name).expanduser().exists() and looks_like_path(name):
        return f"backbone path does not exist: {name}"
    return None


# ---------------------------------------------------------------------------------------------
# Data every stage reads


def load_records(dataset_jsonl: Path, need_assistant: bool = True) -> list[dict[str, Any]]:
    """Read and validate a conversational VLM JSONL; every image path must exist.

    All paths are checked before the model loads, so a missing file is one clear error at start-up
    rather than a crash in a collator hours into training.
    """
    path = Path(dataset_jsonl)
    if not path.is_file():
        raise TrainInputError(f"dataset not found: {path}")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TrainInputError(f"{path}:{number}: not JSON ({exc.msg})") from exc
            _check_record(record, f"{path}:{number}", need_assistant)
            records.append(record)
    if not records:
        raise TrainInputError(f"dataset is empty: {path}")
    return records


def _check_record(record: Any, where: str, need_assistant: bool) -> None:
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
        raise TrainInputError(f"{where}: record has no 'messages' list")
    images = record.get("images") or []
    placeholders = sum(
        1
        for message in record["messages"]
        if isinstance(message.get("content"), list)
        for part in message["content"]
        if isinstance(part, dict) and part.get("type") == "image"
    )
    if placeholders != len(images):
        raise TrainInputError(
            f"{where}: {len(images)} image path(s) but {placeholders} image placeholder(s)"
        )
    for image in images:
        if not Path(image).is_file():
            raise TrainInputError(f"{where}: image file not found: {image}")
    roles = [m.get("role") for m in record["messages"]]
    if need_assistant and "assistant" not in roles:
        raise TrainInputError(f"{where}: record has no assistant turn to train on")


def open_image(path: str | Path) -> Image.Image:
    """An RGB copy of the image; the SigLIP tower takes three channels, the PNGs have one."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise TrainInputError(f"cannot read image {path}: {exc}") from exc


# ---------------------------------------------------------------------------------------------
# Checkpoints and preemption


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint that finished saving (trainer_state.json is written last)."""
    if not checkpoints_dir.is_dir():
        return None
    found = []
    for child in checkpoints_dir.iterdir():
        name = child.name
        if child.is_dir() and name.startswith("checkpoint-") and name[11:].isdigit():
            if (child / "trainer_state.json").is_file():
                found.append((int(name[11:]), child))
    return max(found)[1] if found else None


def checkpoint_step(checkpoint: Path) -> int:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return int(state["global_step"])


def weights_to_load(model_path: Path, resume: Path | None, lora: bool) -> Path:
    """Where a run loads its starting weights: the checkpoint it resumes, else `model_path`.

    The Trainer's own resume restores step, optimizer, schedule and RNG, but loads the weights
    with `load_state_dict(strict=False)` under the names the checkpoint was saved with. For Gemma3
    in transformers 5 those are the legacy `language_model.model.*` names, which match none of
    the module's, so it silently kept the starting weights. `from_pretrained` maps the names.
    A LoRA checkpoint holds only the adapter, which the Trainer restores through PEFT.
    """
    return resume if resume is not None and not lora else model_path


class StopFlag:
    """Set by the SIGTERM handler; read at step ends (a signal handler must not save itself)."""

    def __init__(self) -> None:
        self.requested = False
        self.stopped_at: int | None = None

    def handler(self, signum: int, frame: Any) -> None:
        self.requested = True


@contextmanager
def preemptible() -> Iterator[StopFlag]:
    """SIGTERM sets the flag while training runs; the previous handler comes back afterwards.

    Entered before the model loads, so a signal during start-up also ends in a saved checkpoint
    (after the first step) rather than a job killed with nothing to resume from.
    """
    flag = StopFlag()
    try:
        previous = signal.signal(signal.SIGTERM, flag.handler)
    except ValueError:  # not the main thread: no handler, periodic checkpoints still protect us
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def preemption_callback(flag: StopFlag) -> Any:
    """A TrainerCallback that saves and stops at the first step end after SIGTERM, agreed by all
    ranks.

    Ranks may receive the signal at different steps; the flag is all-reduced every step so they
    all save the same checkpoint and leave together instead of deadlocking a collective.
    """
    import torch
    from transformers import TrainerCallback

    class PreemptionCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            requested = flag.requested
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                device = args.device if torch.distributed.get_backend() == "nccl" else "cpu"
                value = torch.tensor([1.0 if requested else 0.0], device=device)
                torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
                requested = bool(value.item() > 0)
            if requested:
                flag.requested = True
                flag.stopped_at = state.global_step
                control.should_save = True
                control.should_training_stop = True
            return control

    return PreemptionCallback()


# ---------------------------------------------------------------------------------------------
# The per-step log


def write_loss_csv(loss_csv: Path, log_history: list[dict[str, Any]]) -> None:
    """One row per training log in the Trainer's history (a header only if none was logged)."""
    with loss_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(LOSS_FIELDS)
        for entry in log_history:
            if "loss" not in entry:  # the end-of-training summary and our own records
                continue
            writer.writerow(
                [
                    entry["step"],
                    f"{entry.get('epoch') or 0.0:.6f}",
                    f"{float(entry['loss']):.6f}",
                    f"{float(entry.get('learning_rate', float('nan'))):.8g}",
                ]
            )


def last_loss(log_history: list[dict[str, Any]]) -> float | None:
    losses = [float(entry["loss"]) for entry in log_history if "loss" in entry]
    if not losses or math.isnan(losses[-1]):
        return None
    return round(losses[-1], 6)  # as loss.csv has it


# ---------------------------------------------------------------------------------------------
# Trainer settings


def precision() -> str:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def set_cpu_threads(threads: int) -> None:
    """Torch threads per process on CPU (on a GPU the data path is not the bottleneck)."""
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(threads)


def common_training_args(cfg: Any, precision: str) -> dict[str, Any]:
    """The TrainingArguments every stage shares (SFT and GRPO): periodic checkpoints to resume
    from, step logging to TensorBoard, precision, seeds, no worker processes, quiet output."""
    import torch

    return {
        "save_strategy": "steps",
        "save_steps": cfg.save_steps,
        "save_total_limit": cfg.save_total_limit,
        "logging_strategy": "steps",
        "logging_steps": cfg.logging_steps,
        "bf16": precision == "bf16",
        "use_cpu": not torch.cuda.is_available(),
        "activation_checkpointing": cfg.gradient_checkpointing,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "dataloader_num_workers": 0,
        "report_to": ["tensorboard"],
        "disable_tqdm": True,
        "log_level": "error",
        # Our columns are decoded by the dataset's transform, not matched to forward()'s signature.
        "remove_unused_columns": False,
    }


@contextmanager
def tensorboard_dir(path: Path) -> Iterator[None]:
    """TRL's TensorBoardCallback reads its folder from the environment when the trainer is
    created; set it for that moment only and restore the caller's value."""
    previous = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = previous


def reset_tokenizer_state(processor: Any) -> None:
    """Clear the truncation/padding the collator left on the fast tokenizer's backend.

    Those settings are saved into tokenizer.json; left there, final/ would silently truncate
    prompts at max_length and pad on the right, unlike the base processor.
    """
    backend = getattr(getattr(processor, "tokenizer", processor), "_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()


# ---------------------------------------------------------------------------------------------
# The run


class TrainingRun:
    """One stage's run folder and the training loop around its trainer.

    Create it with the stage's output folder, load the model from `weights(...)`, build the
    trainer on `checkpoints` and `tensorboard`, then `train(trainer)`, `save_final(...)` and
    `write_summary(...)`.
    """

    def __init__(self, out_dir: Path, flag: StopFlag) -> None:
        from transformers import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.out_dir = Path(out_dir)
        self.flag = flag
        self.checkpoints = self.out_dir / "checkpoints"
        self.tensorboard = self.out_dir / "tensorboard"
        self.loss_csv = self.out_dir / "loss.csv"
        self.final = self.out_dir / "final"
        self.resume = latest_checkpoint(self.checkpoints)
        self.resumed_from = checkpoint_step(self.resume) if self.resume else 0
        self.wall_seconds = 0.0

    def weights(self, model_path: Path, lora: bool = False) -> Path:
        return weights_to_load(Path(model_path), self.resume, lora)

    def train(self, trainer: Any) -> int:
        """Train (resuming if a checkpoint exists); write loss.csv; return the global step.

        Raises `Preempted` when SIGTERM stopped training before its last step.
        """
        trainer.add_callback(preemption_callback(self.flag))
        if trainer.is_world_process_zero():
            self.out_dir.mkdir(parents=True, exist_ok=True)
        trainer.accelerator.wait_for_everyone()
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(self.resume) if self.resume else None)
        self.wall_seconds = time.perf_counter() - started
        step = trainer.state.global_step
        if trainer.is_world_process_zero():
            write_loss_csv(self.loss_csv, trainer.state.log_history)
        if self.flag.stopped_at is not None and step < trainer.state.max_steps:
            raise Preempted(step, latest_checkpoint(self.checkpoints))
        return step

    def save_final(self, trainer: Any, processor: Any, merged: torch.nn.Module | None = None):
        """Publish `final/`: the trained weights (or a merged LoRA model) and the processor."""
        is_main = trainer.is_world_process_zero()
        if merged is not None:
            if is_main:
                merged.save_pretrained(self.final)
        else:
            trainer.save_model(str(self.final))
        if is_main:
            reset_tokenizer_state(processor)
            processor.save_pretrained(self.final)
        trainer.accelerator.wait_for_everyone()

    def summary(self, trainer: Any, **fields: Any) -> dict[str, Any]:
        """The fields every stage's train_summary.json shares, then the stage's own."""
        step = trainer.state.global_step
        return {
            "steps": step,
            "max_steps": trainer.state.max_steps,
            "resumed_from_step": self.resumed_from,
            "resumed_from": str(self.resume) if self.resume else None,
            "precision": precision(),
            "world_size": trainer.args.world_size,
            "train_seconds": round(self.wall_seconds, 3),
            # The training process's kernels; the job that launched it did no arithmetic.
            "numerics": numerics.record(),
            "final_loss": (
                last_loss(trainer.state.log_history) if trainer.is_world_process_zero() else None
            ),
            **fields,
        }

    def write_summary(self, trainer: Any, summary: dict[str, Any]) -> dict[str, Any]:
        if trainer.is_world_process_zero():
            (self.out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


# ---------------------------------------------------------------------------------------------
# The job side: the run folder a training rule launches its stage in


def fingerprint(settings: dict) -> str:
    """A short stable digest of a training run's inputs and settings: its run folder's name.

    A rerun with the same inputs finds its own checkpoints and resumes; a changed input or setting
    gets a fresh folder instead of resuming someone else's run.
    """
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def launch_training(args: list[str], gpus: int, log_path: str | Path) -> int:
    """Run a training CLI (`-m module ...`) in a child process; return its exit code.

    One process per GPU through `accelerate launch` with the shipped DDP config when the job has
    several GPUs, else the current interpreter: on a local run a fork of its warm interpreter
    (cmr_rd.warm: torch and TRL already imported), else a new process. SIGTERM (SLURM
    preemption) is passed on to the child, which checkpoints and exits 143, so the job's rerun
    resumes.
    """
    if gpus > 1:
        cmd = ["accelerate", "launch", "--config_file", "config/accelerate/ddp.yaml",
               "--num_processes", str(gpus), *args]  # fmt: skip
    else:
        cmd = [sys.executable, *args]
    logging.getLogger("cmr_rd").info("launching %s", " ".join(cmd))
    with open(log_path, "a") as stream:
        if gpus <= 1:  # a fork of the local run's warm interpreter, where there is one
            code = warm.run(args, stream.fileno(), stream.fileno())
            if code is not None:
                return code
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
    log.info("training child: %s", numerics.describe(worker_numerics(run)))
    return run


def worker_numerics(run: Path) -> dict:
    """The kernels the training child used (its train_summary.json), for the job's manifest
    (`worker_numerics`)."""
    summary = json.loads((Path(run) / "train_summary.json").read_text())
    return summary.get("numerics") or {}
