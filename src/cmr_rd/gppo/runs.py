"""GPPO run names: START-SAMPLING-REWARD (`sft-ts-iou`), parsed in one place.

The name is a folder (results/gppo/RUN/seedS), a Snakemake wildcard and a config value; the
rules, the scripts and the report read its parts through `RunName`, never by splitting it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

STARTS = ("sft", "base")  # from the cold start (stage 1), or from the bare backbone
SAMPLINGS = ("ts", "static", "full")  # cmr_rd.gppo.quotas.STRATEGIES
REWARDS = ("iou", "noiou")  # with or without the IoU term for MI boxes


class RunNameError(ValueError):
    """A run name that is not START-SAMPLING-REWARD, said in one line."""


@dataclass(frozen=True)
class RunName:
    start: str
    sampling: str
    reward: str

    # The same language as config/schema.yaml's patterns, for Snakemake's wildcard constraints.
    PATTERN: ClassVar[str] = f"({'|'.join(STARTS)})-({'|'.join(SAMPLINGS)})-({'|'.join(REWARDS)})"

    @classmethod
    def parse(cls, name: str) -> RunName:
        match = re.fullmatch(cls.PATTERN, str(name))
        if not match:
            raise RunNameError(
                f"GPPO run name {name!r} is not START-SAMPLING-REWARD with START in {STARTS}, "
                f"SAMPLING in {SAMPLINGS}, REWARD in {REWARDS} (e.g. sft-ts-iou)"
            )
        return cls(*match.groups())

    def __post_init__(self) -> None:
        parts = (self.start in STARTS, self.sampling in SAMPLINGS, self.reward in REWARDS)
        if not all(parts):
            raise RunNameError(f"not a GPPO run name: {self.start}-{self.sampling}-{self.reward}")

    def __str__(self) -> str:
        return f"{self.start}-{self.sampling}-{self.reward}"

    @property
    def use_iou(self) -> bool:
        """Whether the reward has the IoU term."""
        return self.reward == "iou"

    @property
    def from_cold_start(self) -> bool:
        """Whether the run starts from stage 1's cold start (sft-*), not the bare backbone."""
        return self.start == "sft"
