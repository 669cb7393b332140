"""What one GPPO phase is asked to do (`GPPOConfig`, the batch arithmetic) and the checks of its
inputs, without torch: the command line runs them before it imports torch, TRL and transformers
(seconds on a 2-core machine), so a bad setting or dataset is answered at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmr_rd.model.runtime import TrainInputError, config_from_mapping, load_records


@dataclass(frozen=True)
class GPPOConfig:
    """One phase's settings. `lr` is phase 1's rate; phase t trains at lr * lr_decay**(t-1)."""

    epochs: float = 2.0
    max_steps: int = -1  # > 0 overrides epochs (tests, benchmarks)
    batch_prompts: int = 8  # B: prompts per generation batch = one quota batch
    num_generations: int = 4  # G
    micro_batch: int = 32  # completions per forward/backward on one device; divides B*G/world
    # Ours: mu, optimizer steps per generation batch (GRPO's inner iterations, ratio-clipped).
    num_iterations: int = 1
    lr: float = 3e-4
    lr_decay: float = 0.7
    lr_scheduler: str = "constant"
    # Each phase starts a fresh optimizer; Adam's first steps move every weight by about lr
    # whatever its gradient, so a warm-up keeps them from breaking a tiny model's format.
    warmup_ratio: float = 0.0
    beta: float = 0.04  # KL coefficient (k3 estimator)
    epsilon: float = 0.2  # clip range
    entropy_coef: float = 0.0  # η
    temperature: float = 1.0
    # Ours: nucleus sampling for the rollouts (1.0 = off). A tiny model's long reasoning breaks
    # the format whenever one tail token is drawn; the nucleus keeps the varied answers and
    # drops the tail.
    top_p: float = 1.0
    # Ours: min-p sampling (None = off): a token is drawn only if its probability is at least
    # min_p times the likeliest token's. It drops the tail tokens that derail a tiny model's
    # chain into a second <think> or a broken box, and keeps the answers varied.
    min_p: float | None = None
    max_completion_length: int = 256
    save_steps: int = 20
    save_total_limit: int = 2
    logging_steps: int = 1
    seed: int = 0
    threads: int = 2
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise TrainInputError("num_generations must be >= 2 (advantages need a group)")
        if min(self.batch_prompts, self.micro_batch, self.threads, self.num_iterations) < 1:
            raise TrainInputError(
                "batch_prompts, micro_batch, threads and num_iterations must be >= 1"
            )
        if not 0 < self.lr_decay <= 1:
            raise TrainInputError("lr_decay must be in (0, 1]")
        if self.max_steps <= 0 and not self.epochs > 0:
            raise TrainInputError("set max_steps > 0 or epochs > 0")
        if self.temperature <= 0:
            raise TrainInputError("temperature must be > 0: GRPO needs sampled, varied completions")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainInputError("warmup_ratio must be in [0, 1)")
        if not 0 < self.top_p <= 1:
            raise TrainInputError("top_p must be in (0, 1]")
        if self.min_p is not None and not 0 <= self.min_p < 1:
            raise TrainInputError("min_p must be in [0, 1) or null")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> GPPOConfig:
        return config_from_mapping(cls, values, "GPPO")

    def phase_lr(self, phase: int) -> float:
        return self.lr * self.lr_decay ** (phase - 1)


def batch_arithmetic(cfg: GPPOConfig, world_size: int) -> dict[str, int]:
    """Trainer sizes that make one generation batch = one quota batch = one optimizer step."""
    completions = cfg.batch_prompts * cfg.num_generations
    per_device = min(cfg.micro_batch, completions // world_size or 1)
    if completions % (per_device * world_size):
        raise TrainInputError(
            f"batch_prompts * num_generations = {completions} completions must split evenly into "
            f"micro_batch {per_device} x {world_size} process(es); change micro_batch"
        )
    steps = completions // (per_device * world_size)
    return {
        "generation_batch_size": completions,
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": steps,  # = steps_per_generation: one step per batch
    }


def check_phase_inputs(
    ref_path: Path, dataset_jsonl: Path, cfg: GPPOConfig, phase: int
) -> list[dict[str, Any]]:
    """The phase dataset's records, once the phase number, the KL reference and the dataset
    (labels, images, whole batches of B) are known to be usable; else one TrainInputError."""
    if phase < 1:
        raise TrainInputError(f"phase must be >= 1, got {phase}")
    if not Path(ref_path).is_dir():
        raise TrainInputError(f"KL reference checkpoint not found: {ref_path}")
    records = load_records(dataset_jsonl, need_assistant=False)
    missing = [r.get("id") for r in records if not r.get("label")]
    if missing:
        raise TrainInputError(f"{dataset_jsonl}: records without a label: {missing[:3]}")
    if len(records) % cfg.batch_prompts:
        raise TrainInputError(
            f"{dataset_jsonl}: {len(records)} prompts is not a whole number of batches of "
            f"{cfg.batch_prompts}; TRL would drop the short last batch"
        )
    return records
