"""Stages 1a (alignment: projector only) and 1b (cold-start CoT SFT: projector + language), and
the foundation stage's language phase.

One function, `train`, drives TRL's SFTTrainer for all three, because they differ only in which
parts train and in the data. Run folders, resume, preemption and the per-step log are the shared
training runtime's (`cmr_rd.model.runtime`); what this module adds is the stage itself:

- the loss is computed only on the assistant turn (`<think>...</answer><end_of_turn>`), through
  TRL's `assistant_only_loss` and the backbone's `{% generation %}` chat template;
- freezing goes through `backbone.set_trainable`, so every parameter is assigned a part and a
  renamed module fails loudly instead of silently training the vision tower;
- LoRA on the language model, merged into `final/`;
- bad inputs (empty dataset, missing image, wrong image size, missing model) are one-line
  `TrainInputError`s, never a page of traceback from deep inside the collator.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cmr_rd.model import masks
from cmr_rd.model.backbone import (
    BackboneError,
    check_image_size,
    family_of,
    load_backbone,
    part_of,
    set_trainable,
)
from cmr_rd.model.collate import SAMPLE_KEY, CachingCollator
from cmr_rd.model.lm_head import direct_lm_heads
from cmr_rd.model.runtime import (
    TrainingRun,
    TrainInputError,
    common_training_args,
    load_records,
    open_image,
    precision,
    preemptible,
    set_cpu_threads,
    tensorboard_dir,
)
from cmr_rd.model.settings import STAGE_PARTS, TrainConfig

# LoRA adapts only the language model's attention and MLP projections; the vision tower's
# SigLIP layers use the same q/k/v names, so the pattern is anchored on `language_model`.
LORA_TARGETS = r".*language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


# ---------------------------------------------------------------------------------------------
# Data


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


def _decode(batch: dict[str, list]) -> dict[str, list]:
    return {
        "messages": [json.loads(m) for m in batch["messages_json"]],
        "images": [[open_image(p) for p in paths] for paths in batch["image_paths"]],
        # What makes a sample itself, for the collator's cache (cmr_rd.model.collate).
        SAMPLE_KEY: [
            "\0".join([m, *paths])
            for m, paths in zip(batch["messages_json"], batch["image_paths"], strict=True)
        ],
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
# The stage


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
    # transformers' assistant-mask loop took 7% of a cold start: the same masks, on arrays.
    masks.install()
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
        **common_training_args(cfg, precision()),
    )
    with tensorboard_dir(tensorboard):
        trainer = trainer_class(
            model=model, args=args, train_dataset=dataset, processing_class=processor
        )
    # Each distinct sample is collated once, not once per epoch: the same batches.
    trainer.data_collator = CachingCollator(trainer.data_collator, processor.tokenizer.pad_token_id)
    # TRL's tiled LM head folds every position in a dozen ops per tile off a GPU: for small
    # logits the direct one is the same maths (cmr_rd.model.lm_head says how much faster).
    direct_lm_heads(trainer, 1.0, ("log_probs", "entropy", "is_top1"))
    return trainer


def train(model_path: Path, dataset_jsonl: Path, out_dir: Path, cfg: TrainConfig) -> dict:
    """Train one stage in `out_dir`; return (and write) the summary.

    Resumes from the newest checkpoint in `out_dir`. Raises TrainInputError or Preempted.
    """
    model_path, dataset_jsonl = Path(model_path), Path(dataset_jsonl)
    with preemptible() as flag:
        run = TrainingRun(Path(out_dir), flag)
        records = load_records(dataset_jsonl)
        if cfg.balance_classes:
            records = balance_by_label(records, str(dataset_jsonl))
        try:
            model, processor = load_backbone(
                str(run.weights(model_path, lora=cfg.lora)), processor_from=str(model_path)
            )
            family = family_of(model)
            check_image_size(processor, model)
            parts = STAGE_PARTS[cfg.stage] + (("vision",) if cfg.train_vision else ())
            counts = set_trainable(model, parts)
        except BackboneError as exc:
            raise TrainInputError(str(exc)) from exc
        set_cpu_threads(cfg.threads)
        if cfg.lora:
            model = _apply_lora(model, cfg)
            counts = _trainable_by_part(model, family)

        trainer = make_trainer(
            model, processor, build_dataset(records), run.checkpoints, run.tensorboard, cfg
        )
        # Samples per rank, so the summary can show that DDP split the data.
        ranks_dir = run.out_dir / "ranks"
        if trainer.is_world_process_zero() and ranks_dir.exists():
            for stale in ranks_dir.glob("rank*.json"):
                stale.unlink()
        run.train(trainer)
        rank, world_size = trainer.args.process_index, trainer.args.world_size
        ranks_dir.mkdir(parents=True, exist_ok=True)
        (ranks_dir / f"rank{rank}.json").write_text(
            json.dumps({"rank": rank, "samples": trainer.samples_trained})
        )
        merged = None
        if cfg.lora:
            merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        run.save_final(trainer, processor, merged)  # waits for every rank
        per_rank = [
            json.loads((ranks_dir / f"rank{r}.json").read_text())["samples"]
            for r in range(world_size)
        ]
        wall = run.wall_seconds
        summary = run.summary(
            trainer,
            stage=cfg.stage,
            family=family,
            lora=cfg.lora,
            trainable_parameters=counts,
            per_rank_samples=per_rank,
            samples_this_run=sum(per_rank),
            samples_per_second=round(sum(per_rank) / wall, 3) if wall > 0 else None,
            records=len(records),
            config=asdict(cfg),
            model=str(model_path),
            dataset=str(dataset_jsonl),
        )
        return run.write_summary(trainer, summary)
