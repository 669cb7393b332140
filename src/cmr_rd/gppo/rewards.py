"""GPPO's triple reward, R = R_fmt + R_ans + R_iou, scored with the one shared parser.

R_fmt is paid for a completion that is exactly
`<think>reasoning</think><location>[x1,y1,x2,y2]</location><answer>NAME</answer>`
(`cmr_rd.format.parse_completion`, the parser cold-start QC uses, so training and QC can never
disagree on what the format is). R_ans is paid only inside a valid completion whose answer is
exactly the labelled class (`cmr_rd.classes.canonical_label`; an answer naming two classes is
no class). R_iou is paid only inside a valid completion and only where the slice has a lesion box.

The IoU term is our reading of the paper's "linear transformation with threshold tau": a hit
(IoU >= tau) earns w_iou * IoU, a miss earns w_iou * kappa * (1 + GIoU) / 2. Plain IoU is 0 for
every box that misses the lesion, so a miss far away and a miss next door would look the same;
GIoU keeps falling with distance, so a miss still gets a gradient toward the lesion. Because
GIoU <= IoU < tau for a miss, a miss scores below w_iou * kappa, and kappa <= tau makes that
below every hit: a box covering the whole image (which always overlaps a little) can never beat
actually finding the lesion.

Look-alike characters: tags must be exact ASCII (the parser counts them literally, so
full-width brackets are not the format). Answers are NFKC-folded, so full-width letters such as
'ＨＣＭ' count as HCM, but cross-script homoglyphs such as Cyrillic 'Н' do not fold to Latin and
name no class.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from cmr_rd.classes import canonical_label
from cmr_rd.format import IMAGE_SIZE, box_iou, parse_completion

COMPONENTS = ("format", "answer", "iou")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class RewardConfig:
    format_weight: float = 1.5
    answer_weight: float = 2.0
    iou_weight: float = 1.0  # w_iou
    iou_threshold: float = 0.5  # tau_iou: IoU from which a box counts as a hit
    iou_dense_scale: float = 0.25  # kappa: the most a miss can earn (times w_iou)
    use_iou: bool = True  # False: the IoU ablation, R_iou = 0 always
    image_size: int = IMAGE_SIZE

    def __post_init__(self) -> None:
        for name in ("format_weight", "answer_weight", "iou_weight"):
            value = _real(self, name)
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        tau = _real(self, "iou_threshold")
        if not 0 < tau <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1], got {tau}")
        kappa = _real(self, "iou_dense_scale")
        # kappa <= tau: a miss (worth < w_iou * kappa) must never beat a hit (>= w_iou * tau).
        if not 0 <= kappa <= tau:
            raise ValueError(
                f"iou_dense_scale must be in [0, iou_threshold={tau}] so a miss never beats a hit, "
                f"got {kappa}"
            )
        if not isinstance(self.use_iou, bool):
            raise ValueError(f"use_iou must be a bool, got {self.use_iou!r}")
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"image_size must be a positive int, got {size!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> RewardConfig:
        """Build from a config section; unknown keys are refused, missing ones take defaults."""
        values = {} if values is None else values
        if not isinstance(values, Mapping):
            raise ValueError(f"reward config must be a mapping, got {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            known_list = ", ".join(sorted(known))
            raise ValueError(
                f"unknown reward config keys: {', '.join(unknown)} (known: {known_list})"
            )
        return cls(**values)


def _real(cfg: RewardConfig, name: str) -> float:
    value = getattr(cfg, name)
    # bool is an int in Python; a YAML `true` where a weight belongs is a mistake, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Scored:
    format: float
    answer: float
    iou: float
    valid: bool
    reason: str | None  # the parser's reason when not valid
    predicted: str | None  # canonical predicted class; None if invalid or not exactly one class
    box_iou: (
        float | None
    )  # plain IoU with the ground-truth box, when both exist and format is valid

    @property
    def total(self) -> float:
        return self.format + self.answer + self.iou


def completion_text(completion: Any) -> str:
    """The assistant text of a TRL completion: a str, or a list of chat messages. Never raises."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    if not isinstance(completion, list | tuple):
        return ""
    texts: list[str] = []
    for message in completion:
        if not isinstance(message, Mapping) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list | tuple):
            # Multimodal content: keep the text parts, in order; image parts carry no answer.
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "text":
                    text = part.get("text")
                    if isinstance(text, str):
                        texts.append(text)
    return "".join(texts)


def _span(lo: float, hi: float) -> float:
    return max(0.0, hi - lo)


def giou(a: Sequence[float], b: Sequence[float]) -> float:
    """Generalized IoU of two (x1, y1, x2, y2) boxes, in [-1, 1].

    GIoU = IoU - (C - U) / C with C the area of the smallest box enclosing both and U the union.
    Inverted or zero-area boxes count as empty: they overlap nothing, so GIoU is at most 0.
    """
    area_a = _span(a[0], a[2]) * _span(a[1], a[3])
    area_b = _span(b[0], b[2]) * _span(b[1], b[3])
    inter = _span(max(a[0], b[0]), min(a[2], b[2])) * _span(max(a[1], b[1]), min(a[3], b[3]))
    union = area_a + area_b - inter
    iou = inter / union if union > 0 else 0.0
    hull = _span(min(a[0], b[0]), max(a[2], b[2])) * _span(min(a[1], b[1]), max(a[3], b[3]))
    if hull <= 0:  # both boxes are points or lie on one line: nothing to enclose
        return iou
    return max(-1.0, min(1.0, iou - (hull - union) / hull))


def iou_term(pred_box: Sequence[float], gt_box: Sequence[float], cfg: RewardConfig) -> float:
    """The hybrid sparse-dense IoU reward for two existing boxes (0 when the term is ablated)."""
    if not cfg.use_iou:
        return 0.0
    iou = box_iou(pred_box, gt_box)
    if iou >= cfg.iou_threshold:
        return cfg.iou_weight * iou  # sparse: a hit is paid its IoU
    # dense: GIoU in [-1, 1] mapped linearly onto [0, kappa], still rising toward the lesion
    return cfg.iou_weight * cfg.iou_dense_scale * (1.0 + giou(pred_box, gt_box)) / 2.0


def _gt_box(box: Any, image_size: int) -> Box | None:
    """Validate a ground-truth box; a malformed one is a data bug, so it raises, never scores 0."""
    if box is None:
        return None
    problem = f"ground-truth box must be None or 4 numbers, got {box!r}"
    if isinstance(box, str | bytes | Mapping):
        raise ValueError(problem)
    try:
        values = list(box)  # list, tuple, or an array row from the dataset
    except TypeError:
        raise ValueError(problem) from None
    if len(values) != 4:
        raise ValueError(problem)
    coords: list[float] = []
    for v in values:
        if isinstance(v, bool | str | bytes):  # float("12") or True would pass silently
            raise ValueError(problem)
        try:
            coords.append(float(v))
        except (TypeError, ValueError):
            raise ValueError(problem) from None
    x1, y1, x2, y2 = coords
    if not all(math.isfinite(c) for c in coords):
        raise ValueError(f"ground-truth box has a non-finite coordinate: {box!r}")
    if not (x1 < x2 and y1 < y2):
        raise ValueError(f"ground-truth box needs x1 < x2 and y1 < y2, got {box!r}")
    if min(x1, y1) < 0 or max(x2, y2) > image_size:
        raise ValueError(f"ground-truth box outside [0, {image_size}]: {box!r}")
    return (x1, y1, x2, y2)


def score(completion: Any, label: str, box: Any, cfg: RewardConfig) -> Scored:
    """Score one completion against its label and ground-truth lesion box (None: no lesion)."""
    truth = canonical_label(label)
    if truth is None:  # a label that is no class is a data bug: it would silently zero R_ans
        raise ValueError(f"label {label!r} is not one of the classes")
    gt = _gt_box(box, cfg.image_size)
    parsed = parse_completion(completion_text(completion), cfg.image_size)
    if not parsed.valid:
        return Scored(0.0, 0.0, 0.0, False, parsed.reason, None, None)
    answer = cfg.answer_weight if parsed.label == truth else 0.0
    plain_iou = box_iou(parsed.box, gt) if gt is not None else None
    iou = iou_term(parsed.box, gt, cfg) if gt is not None else 0.0
    return Scored(cfg.format_weight, answer, iou, True, None, parsed.label, plain_iou)


def reward_functions(cfg: RewardConfig) -> list[Callable[..., list[float]]]:
    """TRL GRPOTrainer reward functions: format_reward, answer_reward[, iou_reward]."""

    def component(name: str) -> Callable[..., list[float]]:
        def reward(
            prompts: Any,
            completions: Sequence[Any],
            completion_ids: Any = None,
            label: Sequence[str] | None = None,
            box: Sequence[Any] | None = None,
            **kwargs: Any,
        ) -> list[float]:
            n = len(completions)
            if label is None or isinstance(label, str) or len(label) != n:
                raise ValueError(
                    f"{name}_reward needs a `label` column with one label per completion"
                )
            boxes = [None] * n if box is None else box  # a dataset without lesion boxes at all
            if isinstance(boxes, str) or len(boxes) != n:
                raise ValueError(f"{name}_reward needs a `box` column with one box per completion")
            return [
                getattr(score(c, lab, b, cfg), name)
                for c, lab, b in zip(completions, label, boxes, strict=True)
            ]

        reward.__name__ = reward.__qualname__ = f"{name}_reward"
        return reward

    return [component(name) for name in COMPONENTS if name != "iou" or cfg.use_iou]
