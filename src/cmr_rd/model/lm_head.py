"""The per-token log-probabilities TRL's trainers ask for, computed directly when the logits are
small.

TRL 1.16 patches every model it trains with a "fused LM head" (`trl.trainer.utils.
add_fused_lm_head`): `model(..., labels=..., fused_lm_head=True)` returns each label's
log-probability (and entropy, top-1) without materialising the `[tokens, vocab]` logits, folding
the projection in tiles of 4,096 tokens x 32,768 vocabulary entries. That saves gigabytes for
Gemma-3's 262k vocabulary on a GPU. Off a GPU it folds the tiles with a dozen torch ops per tile
over every position, prompt and padding included, and recomputes them all in the backward: on
the tiny CPU backbone (a 2k vocabulary) a py-spy profile of a cold start put 53% of its time in
that function, and 24% of a GPPO phase's.

`direct_lm_head` keeps TRL's contract (the same `FusedCausalLMOutput`, fields zero where the
label is -100, the same temperature, scale and soft-capping) and computes the logits of the
labelled positions only, with plain autograd, whenever they fit under `max_logits` elements;
larger calls (a real backbone's vocabulary) go to TRL's own fused forward. The values are the
same maths; tests/test_lm_head.py compares losses, fields and gradients with TRL's.
"""

from __future__ import annotations

import functools
import os
import types
from typing import Any

import torch

# `CMR_RD_LM_HEAD=trl` keeps TRL's tiled head everywhere (benchmarks/train_step.py compares both).
MODE_ENV = "CMR_RD_LM_HEAD"
# 2^26 fp32 logits: 256 MiB, plus their softmax for the backward. A 4B model's 262k vocabulary
# passes this at 256 tokens; the tiny backbone never reaches it.
MAX_LOGITS = 1 << 26
SUPPORTED = ("log_probs", "entropy", "is_top1")


def _text_scaling(model: Any) -> tuple[float | None, float]:
    """The model's final-logit soft-cap and scale, as TRL reads them (Gemma: soft-cap only)."""
    text = model.config.get_text_config()
    softcap = getattr(text, "final_logit_softcapping", None)
    scale = getattr(text, "logit_scale", None)
    return softcap, 1.0 if scale is None else float(scale)


def direct_lm_head(
    model: Any,
    temperature: float = 1.0,
    outputs: tuple[str, ...] = ("log_probs",),
    max_logits: int = MAX_LOGITS,
) -> bool:
    """Wrap the fused forward TRL put on `model` (call after the trainer is built). Returns False,
    leaving TRL's forward alone, where the model scales its logits in a way this path does not
    reproduce, or where TRL's forward was not patched in."""
    from trl.trainer.utils import FusedCausalLMOutput

    if os.environ.get(MODE_ENV, "direct").strip().lower() == "trl":
        return False
    fused_forward = model.forward
    function = getattr(fused_forward, "__func__", None)
    patched = (
        getattr(fused_forward, "__self__", None) is model
        and function is not type(model).forward
        and getattr(function, "__wrapped__", None) is type(model).forward
    )  # TRL's patch: a method of this instance that wraps the class's forward
    if not patched or any(name not in SUPPORTED for name in outputs):
        return False
    text = model.config.get_text_config()
    if any(
        getattr(text, key, None) is not None
        for key in ("output_multiplier", "lm_head_multiplier", "logits_scaling")
    ) or getattr(text, "output_router_logits", False):
        return False
    softcap, scale = _text_scaling(model)

    @functools.wraps(type(model).forward)
    def forward(
        self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
        **kwargs,
    ):  # fmt: skip
        if not fused_lm_head:
            return fused_forward(*args, labels=labels, shift_labels=shift_labels,
                                 num_items_in_batch=num_items_in_batch, **kwargs)  # fmt: skip
        targets = labels[:, 1:] if shift_labels is None else shift_labels
        mask = targets != -100
        lm_head = self.get_output_embeddings()
        if int(mask.sum()) * lm_head.weight.shape[0] > max_logits:
            return fused_forward(*args, fused_lm_head=True, labels=labels,
                                 shift_labels=shift_labels,
                                 num_items_in_batch=num_items_in_batch, **kwargs)  # fmt: skip
        kwargs["use_cache"] = False
        # Looked up on each call, as TRL does (PEFT and FSDP replace it after patching).
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:
            hidden = hidden[:, :-1]
        chosen = targets[mask]
        z = lm_head(hidden[mask]).float() * scale
        if softcap is not None:
            z = softcap * torch.tanh(z / softcap)
        z = z / temperature
        log_z = torch.logsumexp(z, dim=-1)
        picked = z.gather(-1, chosen.unsqueeze(-1)).squeeze(-1) - log_z

        def spread(values: torch.Tensor) -> torch.Tensor:
            return values.new_zeros(mask.shape).masked_scatter(mask, values)

        log_probs = spread(picked)
        entropy = is_top1 = None
        if "entropy" in outputs:
            entropy = spread(log_z - (torch.softmax(z, dim=-1) * z).sum(-1))
        if "is_top1" in outputs:
            # argmax returns the first maximum, as TRL's kernel counts a tie with an earlier token.
            is_top1 = spread(z.detach().argmax(-1) == chosen)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / count,
            log_probs=log_probs,
            entropy=entropy,
            is_top1=is_top1,
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)
    return True


def direct_lm_heads(trainer: Any, temperature: float, outputs: tuple[str, ...]) -> list[bool]:
    """Apply `direct_lm_head` to the models a TRL trainer patched: its policy (the base model of
    a PEFT wrapper) and, where there is one, its reference model (log-probabilities only)."""
    model = trainer.model
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    done = [direct_lm_head(model, temperature, outputs)]
    ref = getattr(trainer, "ref_model", None)
    if ref is not None:
        done.append(direct_lm_head(ref, temperature, ("log_probs",)))
    return done
