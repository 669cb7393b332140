"""Stages 1a (alignment: projector only) and 1b (cold-start CoT SFT: projector + language).

One function, `train`, drives TRL's SFTTrainer for both stages, because they differ only in which
parts train and in the data. What this module adds around the trainer is what a pipeline on a
preemptible cluster needs:

- the loss is computed only on the assistant turn (`<think>...</answer><end_of_turn>`), through
  TRL's `assistant_only_loss` and the backbone's `{% generation %}` chat template;
- freezing goes through `backbone.set_trainable`, so every parameter is assigned a part and a
  renamed module fails loudly instead of silently training the vision tower;
- a rerun resumes from the newest complete checkpoint; SIGTERM (SLURM preemption) saves a
  checkpoint at the next step end and raises `Preempted`, so Snakemake sees a failed job whose
  rerun continues the step counter;
- bad inputs (empty dataset, missing image, wrong image size, missing model) are one-line
  `TrainInputError`s, never a page of traceback from deep inside the collator.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from cmr_rd.model.backbone import (
    BackboneError,
    check_image_size,
    family_of,
    load_backbone,
    part_of,
    set_trainable,
)

STAGE_PARTS: dict[str, tuple[str, ...]] = {
    # The tiny backbone's language phase, on a tower pretrained just before (foundation.vision)
    # and then frozen, as Gemma-3 was trained on its SigLIP tower.
    "foundation": ("projector", "language"),
    "align": ("projector",),
    "sft": ("projector", "language"),
}
# LoRA adapts only the language model's attention and MLP projections; the vision tower's
# SigLIP layers use the same q/k/v names, so the pattern is anchored on `language_model`.
LORA_TARGETS = r".*language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
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


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training stage; `batch_size` is per device (per process)."""

    stage: str  # "foundation" | "align" (projector) | "sft" (projector + language)
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 2e-3
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    save_steps: int = 20
    save_total_limit: int = 2
    logging_steps: int = 5
    max_length: int = 1024
    lora: bool = False  # sft only: LoRA on the language model through peft
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 0
    threads: int = 2  # torch threads per process on CPU
    gradient_checkpointing: bool = False  # TRL defaults it on; a tiny model only gets slower
    # Ours, opt-in: also train the vision tower. The paper freezes a pretrained tower; the offline
    # tiny backbone's tower is random, and frozen random features barely vary between images.
    train_vision: bool = False
    # Ours, opt-in: repeat each class's records until every class has as many as the largest, so
    # a long-tailed SFT set (the cold start follows the cohort's tail) does not teach the prior.
    balance_classes: bool = False

    def __post_init__(self) -> None:
        if self.stage not in STAGE_PARTS:
            raise TrainInputError(
                f"unknown stage {self.stage!r}; choose from {sorted(STAGE_PARTS)}"
            )
        if self.lora and self.stage != "sft":
            raise TrainInputError("lora applies to the sft stage only (align trains the projector)")
        if self.batch_size < 1 or self.grad_accum < 1 or self.threads < 1:
            raise TrainInputError("batch_size, grad_accum and threads must be >= 1")
        if self.max_steps <= 0 and not self.epochs > 0:
            raise TrainInputError("set max_steps > 0 or epochs > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise TrainInputError("warmup_ratio must be in [0, 1)")
        if self.save_steps < 1 or self.logging_steps < 1:
            raise TrainInputError("save_steps and logging_steps must be >= 1")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TrainConfig:
        return config_from_mapping(cls, values, "training")


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


# ---------------------------------------------------------------------------------------------
# Data


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


def balance_by_label(records: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Every class's records repeated in turn up to the largest class's count, in file order
    within a class and classes in first-appearance order: deterministic, and each record is
    seen equally often within its class."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for number, record in enumerate(records, start=1):
        if not record.get("label"):
            raise TrainInputError(f"{where}:{number}: balance_classes needs a 'label' per record")
        by_label.setdefault(record["label"], []).append(record)
    most = max(len(group) for group in by_label.values())
    return [group[i % len(group)] for group in by_label.values() for i in range(most)]


def open_image(path: str | Path) -> Image.Image:
    """An RGB copy of the image; the SigLIP tower takes three channels, the PNGs have one."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise TrainInputError(f"cannot read image {path}: {exc}") from exc


def _decode(batch: dict[str, list]) -> dict[str, list]:
    return {
        "messages": [json.loads(m) for m in batch["messages_json"]],
        "images": [[open_image(p) for p in paths] for paths in batch["image_paths"]],
    }


def build_dataset(records: list[dict[str, Any]]) -> Any:
    """Records as a `datasets.Dataset` (TRL requires one), images decoded lazily on access.

    Messages travel as JSON strings so Arrow never unifies the image and text parts into one
    struct (which would add `text: None` to image parts), and the on-access transform opens the
    PNGs only for the batch being collated: a 227k-image alignment set never sits in memory.
    Row order is the file order; the trainer's seeded sampler does the shuffling.
    """
    import datasets

    dataset = datasets.Dataset.from_dict(
        {
            "id": [str(r.get("id", i)) for i, r in enumerate(records)],
            "messages_json": [json.dumps(r["messages"]) for r in records],
            "image_paths": [[str(p) for p in r.get("images") or []] for r in records],
        }
    )
    dataset.set_transform(_decode)
    return dataset


# ---------------------------------------------------------------------------------------------
# Checkpoints, preemption, logging


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


def weights_to_load(model_path: Path, resume: Path | None, lora: bool) -> Path:
    """Where a run loads its starting weights: the checkpoint it resumes, else `model_path`.

    The Trainer's own resume restores step, optimizer, schedule and RNG, but loads the weights
    with `load_state_dict(strict=False)` under the names the checkpoint was saved with. For Gemma3
    in transformers 5 those are the legacy `language_model.model.*` names, which match none of
    the module's, so it silently kept the starting weights. `from_pretrained` maps the names.
    A LoRA checkpoint holds only the adapter, which the Trainer restores through PEFT.
    """
    return resume if resume is not None and not lora else model_path


def checkpoint_step(checkpoint: Path) -> int:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return int(state["global_step"])


class _StopFlag:
    """Set by the SIGTERM handler; read at step ends (a signal handler must not save itself)."""

    def __init__(self) -> None:
        self.requested = False
        self.stopped_at: int | None = None

    def handler(self, signum: int, frame: Any) -> None:
        self.requested = True


@contextmanager
def _sigterm_sets(flag: _StopFlag) -> Iterator[None]:
    """Install the handler only for the duration of training, then restore the previous one."""
    try:
        previous = signal.signal(signal.SIGTERM, flag.handler)
    except ValueError:  # not the main thread: no handler, periodic checkpoints still protect us
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _make_callbacks(flag: _StopFlag, loss_csv: Path, is_main: bool) -> list[Any]:
    from transformers import TrainerCallback

    class PreemptionCallback(TrainerCallback):
        """Save and stop at the first step end after SIGTERM, agreed by all ranks.

        Ranks may receive the signal at different steps; the flag is all-reduced every step so
        they all save the same checkpoint and leave together instead of deadlocking a collective.
        """

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

    class LossCsvCallback(TrainerCallback):
        """Append one row per training log on the main process (resume trims redone steps)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not is_main or not logs or "loss" not in logs:
                return control
            new = not loss_csv.exists() or loss_csv.stat().st_size == 0
            with loss_csv.open("a", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(LOSS_FIELDS)
                writer.writerow(
                    [
                        state.global_step,
                        f"{state.epoch or 0.0:.6f}",
                        f"{float(logs['loss']):.6f}",
                        f"{float(logs.get('learning_rate', float('nan'))):.8g}",
                    ]
                )
            return control

    return [PreemptionCallback(), LossCsvCallback()]


def _trim_loss_csv(loss_csv: Path, keep_through: int) -> None:
    """Drop rows after the resume step: those steps are trained again and logged again."""
    if keep_through <= 0 or not loss_csv.exists():
        loss_csv.unlink(missing_ok=True)
        return
    with loss_csv.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= keep_through]
    with loss_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOSS_FIELDS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in LOSS_FIELDS} for row in rows)


def _precision() -> str:
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def _trainable_by_part(model: torch.nn.Module, family: str) -> dict[str, int]:
    counts = {"vision": 0, "projector": 0, "language": 0}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            counts[part_of(name, family)] += param.numel()
    return counts


def _apply_lora(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    """LoRA on the language projections; the projector (and vision, if asked) train fully.

    `modules_to_save` (not a bare requires_grad) puts the projector into the adapter checkpoint,
    so a resume restores it and merge_and_unload writes it back into the base model.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        modules_to_save=["multi_modal_projector"] + (["vision_tower"] if cfg.train_vision else []),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


# ---------------------------------------------------------------------------------------------
# The stage


def _counting_trainer_class() -> type:
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        """Counts the samples this rank trained on (micro-batches that reached the loss).

        Counting in the collator would over-count: accelerate's dataloader fetches one batch
        ahead to detect the last one, and that batch is collated but never trained on.
        """

        samples_trained = 0

        def training_step(self, model, inputs, *args, **kwargs):
            self.samples_trained += int(inputs["input_ids"].shape[0])
            return super().training_step(model, inputs, *args, **kwargs)

    return CountingSFTTrainer


def common_training_args(cfg: Any, precision: str) -> dict[str, Any]:
    """The TrainingArguments every stage shares (SFT and GRPO): periodic checkpoints to resume
    from, step logging to TensorBoard, precision, seeds, no worker processes, quiet output."""
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


def make_trainer(
    model: torch.nn.Module,
    processor: Any,
    dataset: torch.utils.data.Dataset,
    checkpoints: Path,
    tensorboard: Path,
    cfg: TrainConfig,
) -> Any:
    """The SFTTrainer both stages use; public so tests can inspect the collator the loss sees."""
    from trl import SFTConfig

    trainer_class = _counting_trainer_class()
    precision = _precision()
    args = SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        # transformers 5 folds the ratio into warmup_steps: a float in [0, 1) is a ratio.
        warmup_steps=float(cfg.warmup_ratio),
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        assistant_only_loss=True,
        fp16=False,
        save_only_model=False,
        **common_training_args(cfg, precision),
    )
    with tensorboard_dir(tensorboard):
        trainer = trainer_class(
            model=model, args=args, train_dataset=dataset, processing_class=processor
        )
    return trainer


def train(model_path: Path, dataset_jsonl: Path, out_dir: Path, cfg: TrainConfig) -> dict:
    """Train one stage; return (and write) the summary. Raises TrainInputError or Preempted.

    The SIGTERM handler is installed first, so a signal during start-up also ends in a saved
    checkpoint (after the first step) rather than a job killed with nothing to resume from.
    """
    flag = _StopFlag()
    with _sigterm_sets(flag):
        return _train(Path(model_path), Path(dataset_jsonl), Path(out_dir), cfg, flag)


def _train(
    model_path: Path, dataset_jsonl: Path, out_dir: Path, cfg: TrainConfig, flag: _StopFlag
) -> dict:
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_error()
    records = load_records(dataset_jsonl)
    if cfg.balance_classes:
        records = balance_by_label(records, str(dataset_jsonl))
    checkpoints = out_dir / "checkpoints"
    resume = latest_checkpoint(checkpoints)
    resumed_from = checkpoint_step(resume) if resume else 0
    try:
        model, processor = load_backbone(str(weights_to_load(model_path, resume, cfg.lora)))
        family = family_of(model)
        check_image_size(processor, model)
        parts = STAGE_PARTS[cfg.stage] + (("vision",) if cfg.train_vision else ())
        counts = set_trainable(model, parts)
    except BackboneError as exc:
        raise TrainInputError(str(exc)) from exc

    precision = _precision()
    if not torch.cuda.is_available():
        torch.set_num_threads(cfg.threads)
    if cfg.lora:
        model = _apply_lora(model, cfg)
        counts = _trainable_by_part(model, family)

    loss_csv = out_dir / "loss.csv"
    ranks_dir = out_dir / "ranks"

    dataset = build_dataset(records)
    trainer = make_trainer(model, processor, dataset, checkpoints, out_dir / "tensorboard", cfg)
    is_main = trainer.is_world_process_zero()
    rank, world_size = trainer.args.process_index, trainer.args.world_size
    for callback in _make_callbacks(flag, loss_csv, is_main):
        trainer.add_callback(callback)

    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _trim_loss_csv(loss_csv, resumed_from)
        if ranks_dir.exists():
            for stale in ranks_dir.glob("rank*.json"):
                stale.unlink()
    trainer.accelerator.wait_for_everyone()

    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.perf_counter() - started
    step = trainer.state.global_step

    ranks_dir.mkdir(parents=True, exist_ok=True)
    (ranks_dir / f"rank{rank}.json").write_text(
        json.dumps({"rank": rank, "samples": trainer.samples_trained})
    )
    trainer.accelerator.wait_for_everyone()

    if flag.stopped_at is not None and step < trainer.state.max_steps:
        raise Preempted(step, latest_checkpoint(checkpoints))

    final = out_dir / "final"
    if cfg.lora:
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if is_main:
            merged.save_pretrained(final)
    else:
        trainer.save_model(str(final))
    if is_main:
        _reset_tokenizer_state(processor)
        processor.save_pretrained(final)
    trainer.accelerator.wait_for_everyone()

    per_rank = [
        json.loads((ranks_dir / f"rank{r}.json").read_text())["samples"] for r in range(world_size)
    ]
    summary = {
        "stage": cfg.stage,
        "family": family,
        "steps": step,
        "max_steps": trainer.state.max_steps,
        "resumed_from_step": resumed_from,
        "resumed_from": str(resume) if resume else None,
        "precision": precision,
        "lora": cfg.lora,
        "trainable_parameters": counts,
        "world_size": world_size,
        "per_rank_samples": per_rank,
        "samples_this_run": sum(per_rank),
        "train_seconds": round(wall, 3),
        "samples_per_second": round(sum(per_rank) / wall, 3) if wall > 0 else None,
        "final_loss": _last_loss(loss_csv) if is_main else None,
        "records": len(records),
        "config": asdict(cfg),
        "model": str(model_path),
        "dataset": str(dataset_jsonl),
    }
    if is_main:
        (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _reset_tokenizer_state(processor: Any) -> None:
    """Clear the truncation/padding the collator left on the fast tokenizer's backend.

    Those settings are saved into tokenizer.json; left there, final/ would silently truncate
    prompts at max_length and pad on the right, unlike the base processor.
    """
    backend = getattr(getattr(processor, "tokenizer", processor), "_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()


def _last_loss(loss_csv: Path) -> float | None:
    if not loss_csv.exists():
        return None
    with loss_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    value = float(rows[-1]["loss"])
    return None if math.isnan(value) else value
