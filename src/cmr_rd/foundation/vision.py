"""Vision pretraining of the tiny backbone's SigLIP tower on the pool's findings.

Gemma-3's tower arrives pretrained (SigLIP, on image-text pairs), and the paper's stages keep it
frozen. The tiny tower is pretrained here, before the language phase of the foundation stage, on
the pool's findings as a structured caption: one head per finding (slice level, cavity size,
wall thickness, thickest wall, enhancement and its wall, trabeculation) and the boxes of the
ventricle and of the enhanced region. A caption of discrete findings carries exactly this
information; predicting it directly skips the text tower and the false negatives a contrastive
batch has when captions repeat, and on two CPU cores it reaches in a minute what the language
model alone did not reach in six (measured: docs/pipeline.md, "Foundation: the tiny backbone
arrives pretrained, as MedGemma does").

The heads read exactly what the language model will read, the projector's output tokens, and the
projector trains with the tower: the findings end up linearly readable in the language model's
own embedding space, where its language phase then finds them, and spatial findings (boxes,
walls) must survive the pooling Gemma3's projector applies.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cmr_rd.model.runtime import open_image

# Each categorical finding and its values; "" is "no enhancement" for the wall.
CATEGORICAL: dict[str, tuple[Any, ...]] = {
    "level": ("basal", "mid", "apical"),
    "cavity": ("small", "normal", "dilated"),
    "thickness": ("thin", "normal", "thick"),
    "thickest": ("septum", "uniform"),
    "enhancement": (False, True),
    "enhanced_wall": ("", "lateral", "anterior", "septal", "inferior", "circumferential"),
    "trabeculated": (False, True),
}
BOXES = ("lv_box", "enhanced_box")
BOX_SCALE = 256.0


@dataclass(frozen=True)
class VisionConfig:
    """Mirrored by `model.foundation.vision` in the config schema."""

    steps: int = 1500
    batch_size: int = 64
    lr: float = 0.003
    weight_decay: float = 0.01
    box_weight: float = 4.0
    shift_px: int = 3  # random translation, in model-input pixels (no flips: sides are anatomy)
    holdout: float = 0.1  # share of pool patients kept out, to report findings accuracy
    seed: int = 0
    threads: int = 2


class FindingsHeads(nn.Module):
    """The findings read from every image token on its own, the boxes from the whole grid.

    Each token must carry the slice's findings by itself, so whichever image tokens the language
    model's attention lands on, the finding is there to read; the boxes need the layout, so their
    head sees the flattened grid.
    """

    def __init__(self, tokens: int, hidden: int):
        super().__init__()
        self.token_norm = nn.LayerNorm(hidden)
        self.classes = nn.ModuleDict({k: nn.Linear(hidden, len(v)) for k, v in CATEGORICAL.items()})
        self.grid_norm = nn.LayerNorm(tokens * hidden)
        self.boxes = nn.Linear(tokens * hidden, 4 * len(BOXES))

    def forward(self, tokens: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        per_token = self.token_norm(tokens)  # (B, T, H) -> logits (B, T, classes)
        boxes = self.boxes(self.grid_norm(tokens.flatten(1)))
        return {k: head(per_token) for k, head in self.classes.items()}, boxes


def image_tokens(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The image tokens the language model reads: tower, pooling and projector, (B, tokens, H)."""
    return model.model.get_image_features(pixel_values=pixels).pooler_output


def encode_targets(findings: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class indices (N, heads), boxes scaled to [0, 1] (N, 8) and which boxes exist (N, 8)."""
    classes = torch.tensor(
        [[values.index(f[k]) for k, values in CATEGORICAL.items()] for f in findings]
    )
    boxes = torch.zeros(len(findings), 4 * len(BOXES))
    present = torch.zeros_like(boxes)
    for i, f in enumerate(findings):
        for j, key in enumerate(BOXES):
            if f[key]:
                boxes[i, 4 * j : 4 * j + 4] = torch.tensor(f[key]) / BOX_SCALE
                present[i, 4 * j : 4 * j + 4] = 1.0
    return classes, boxes, present


def load_pixels(image_processor: Any, paths: list[str]) -> torch.Tensor:
    """Every image through the backbone's own image processor, once."""
    images = [open_image(p) for p in paths]
    out = []
    for start in range(0, len(images), 256):
        batch = image_processor(images=images[start : start + 256], return_tensors="pt")
        out.append(batch["pixel_values"])
    return torch.cat(out)


def _shift(pixels: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to `shift` pixels, padding with the image's own border."""
    if shift <= 0:
        return pixels
    n, _, h, w = pixels.shape
    padded = F.pad(pixels, (shift, shift, shift, shift), mode="replicate")
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=gen)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def _split(findings: list[dict], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out whole patients, so the reported accuracy is on images of unseen hearts."""
    patients = sorted({f["patient"] for f in findings})
    rng = np.random.default_rng(seed)
    held = set(rng.choice(patients, size=int(round(holdout * len(patients))), replace=False))
    train = [i for i, f in enumerate(findings) if f["patient"] not in held]
    test = [i for i, f in enumerate(findings) if f["patient"] in held]
    return train, test


def _loss(heads_out, box_out, classes, boxes, present, box_weight: float) -> torch.Tensor:
    loss = sum(
        F.cross_entropy(
            heads_out[k].flatten(0, 1), classes[:, j].repeat_interleave(heads_out[k].shape[1])
        )
        for j, k in enumerate(CATEGORICAL)
    )
    box_err = F.smooth_l1_loss(box_out, boxes, reduction="none", beta=0.05) * present
    return loss + box_weight * box_err.sum() / present.sum().clamp(min=1.0)


@torch.no_grad()
def _accuracy(model, heads, pixels, classes) -> dict[str, float]:
    if len(pixels) == 0:
        return {}
    outs = [heads(image_tokens(model, pixels[s : s + 256]))[0]
            for s in range(0, len(pixels), 256)]  # fmt: skip
    # A single token's answer: the harder reading, which is the one the language model gets.
    return {
        k: round(
            float(
                (torch.cat([o[k] for o in outs]).argmax(-1) == classes[:, j, None]).float().mean()
            ),
            4,
        )
        for j, k in enumerate(CATEGORICAL)
    }


def pretrain_tower(
    model: Any, processor: Any, findings: list[dict], image_root: str, cfg: VisionConfig
) -> dict:
    """Train `model`'s vision tower and projector in place on the findings; return a summary.

    Deterministic for a seed on the CPU: a seeded generator draws batches and shifts, and the
    heads are initialised under the same seed.
    """
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    paths = [f"{image_root}/{f['image']}" for f in findings]
    pixels = load_pixels(processor.image_processor, paths).to(device)
    classes, boxes, present = (t.to(device) for t in encode_targets(findings))
    train_idx, test_idx = _split(findings, cfg.holdout, cfg.seed)
    train_idx_t, test_idx_t = torch.tensor(train_idx), torch.tensor(test_idx, dtype=torch.long)

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    heads = FindingsHeads(model.config.mm_tokens_per_image, model.config.text_config.hidden_size)
    heads.to(device)
    params = [*tower.parameters(), *projector.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
    )
    model.train()
    losses = []
    started = time.perf_counter()
    for _ in range(cfg.steps):
        pick = train_idx_t[torch.randint(0, len(train_idx_t), (cfg.batch_size,), generator=gen)]
        pick = pick.to(device)
        batch = _shift(pixels[pick], cfg.shift_px, gen)
        heads_out, box_out = heads(image_tokens(model, batch))
        loss = _loss(heads_out, box_out, classes[pick], boxes[pick], present[pick], cfg.box_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    seconds = time.perf_counter() - started
    model.eval()
    summary = {
        "config": asdict(cfg),
        "images": len(findings),
        "train_images": len(train_idx),
        "heldout_images": len(test_idx),
        # Means over the first and the last tenth of the steps.
        "loss_first": round(float(np.mean(losses[: max(1, cfg.steps // 10)])), 4),
        "loss_last": round(float(np.mean(losses[-max(1, cfg.steps // 10) :])), 4),
        "heldout_accuracy": _accuracy(model, heads, pixels[test_idx_t], classes[test_idx_t]),
        "majority_baseline": {
            k: round(
                float(np.bincount(classes[test_idx_t, j].cpu().numpy()).max() / len(test_idx)), 4
            )
            for j, k in enumerate(CATEGORICAL)
        }
        if test_idx
        else {},
    }
    model.to("cpu")  # saved from the CPU, whatever trained it
    # Wall time goes to the log, not the summary: the summary is an output, same bytes on rerun.
    logging.getLogger("cmr_rd").info("vision phase: %d steps in %.1f s", cfg.steps, seconds)
    return summary


def pretrain_checkpoint(
    model_path: str, findings: list[dict], image_root: str, out_dir: str, cfg: VisionConfig
) -> dict:
    """Load the backbone, pretrain its tower, save model and processor to out_dir with the
    summary (`vision_summary.json`), and return the summary."""
    import json
    from pathlib import Path

    from cmr_rd.model.backbone import load_backbone

    model, processor = load_backbone(str(model_path))
    summary = pretrain_tower(model, processor, findings, image_root, cfg)
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "vision_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
