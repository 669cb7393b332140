"""What one training stage is asked to do (`TrainConfig`), without torch.

The command line builds and checks it before it imports torch and transformers (seconds on a
2-core machine), so a typo in a config is answered at once; `cmr_rd.model.train` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmr_rd.model.runtime import TrainInputError, config_from_mapping

STAGE_PARTS: dict[str, tuple[str, ...]] = {
    # The tiny backbone's language phase, on a tower pretrained just before (foundation.vision)
    # and then frozen, as Gemma-3 was trained on its SigLIP tower.
    "foundation": ("projector", "language"),
    "align": ("projector",),
    "sft": ("projector", "language"),
}


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
