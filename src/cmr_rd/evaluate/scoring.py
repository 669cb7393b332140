"""Per-class answer log-likelihoods, the scores AUC needs and a greedy answer cannot give.

Each class NAME is scored as the continuation `<answer>NAME</answer>` of the prompt followed by
the model's own greedy reasoning (the completion before its first `<answer>`), so the six scores
are read off the same chain of thought the predicted answer came from, with no sampling.

The prefix is tokenized by the processor exactly as `generate_batch` does (chat template with the
generation prompt, image, no extra <bos>) and the continuation by the tokenizer on its own; the
ids are concatenated, so the boundary between reasoning and answer is the same for every class.
One forward pass scores all classes of a chunk of samples: rows are right-padded, which keeps
every real token at the position it has when scored alone, and only the continuation positions
are projected onto the vocabulary (`logits_to_keep`), so a 262k-token vocabulary stays cheap.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from cmr_rd.classes import CLASSES
from cmr_rd.model.generate import prompt_messages
from cmr_rd.model.runtime import open_image

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def reasoning_prefix(completion: str) -> str:
    """The completion before its first `<answer>`; all of it when it has none."""
    return completion.partition(ANSWER_OPEN)[0]


def continuation(name: str) -> str:
    return f"{ANSWER_OPEN}{name}{ANSWER_CLOSE}"


class ForwardCounter:
    """Counts forward calls of a module, to show that scoring costs one pass per chunk."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any) -> None:
        self.calls += 1


@contextmanager
def count_forward_passes(model: torch.nn.Module) -> Iterator[ForwardCounter]:
    counter = ForwardCounter()
    handle = model.register_forward_hook(counter)
    try:
        yield counter
    finally:
        handle.remove()


def _prefix_inputs(processor: Any, record: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """Processor output (batch of one) for prompt + generation prompt + reasoning prefix."""
    text = processor.apply_chat_template(
        prompt_messages(record["messages"]), add_generation_prompt=True, tokenize=False
    )
    images = [open_image(p) for p in record.get("images") or []]
    inputs = processor(
        text=[text + prefix],
        images=[images] if images else None,
        max_length=None,  # as in generate_batch: the saved text defaults may carry one
        add_special_tokens=False,  # the chat template already writes <bos>
        return_tensors="pt",
    )
    return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}


def _build_rows(
    processor: Any,
    records: Sequence[dict[str, Any]],
    completions: Sequence[str],
    cont_ids: list[list[int]],
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """The right-padded batch of len(records) x len(cont_ids) rows, plus for every row the
    positions whose logits predict the continuation, its target ids and their mask."""
    pad_id = processor.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    per_token: dict[str, list[torch.Tensor]] = {}
    repeated: dict[str, list[torch.Tensor]] = {}
    spans: list[tuple[int, list[int]]] = []
    for record, completion in zip(records, completions, strict=True):
        inputs = _prefix_inputs(processor, record, reasoning_prefix(completion))
        shape = inputs["input_ids"].shape
        prefix_len = shape[1]
        for ids in cont_ids:
            spans.append((prefix_len, ids))
            for key, value in inputs.items():
                if value.shape == shape:
                    # input_ids get the continuation; the attention mask 1s; every other
                    # per-token tensor (token_type_ids, mm_token_type_ids) 0s: text, not image.
                    fill = ids if key == "input_ids" else [int(key == "attention_mask")] * len(ids)
                    row = torch.cat([value[0], torch.tensor(fill, dtype=value.dtype)])
                    per_token.setdefault(key, []).append(row)
                else:
                    # pixel_values and other per-image tensors: one copy for every row
                    repeated.setdefault(key, []).append(value)

    length = max(p + len(ids) for p, ids in spans)
    batch: dict[str, torch.Tensor] = {}
    for key, rows in per_token.items():
        value = pad_id if key == "input_ids" else 0
        padded = torch.full((len(rows), length), value, dtype=rows[0].dtype)
        for i, row in enumerate(rows):
            padded[i, : len(row)] = row
        batch[key] = padded
    for key, values in repeated.items():
        batch[key] = torch.cat(values, dim=0)

    width = max(len(ids) for _, ids in spans)
    positions = torch.zeros((len(spans), width), dtype=torch.long)
    targets = torch.zeros((len(spans), width), dtype=torch.long)
    mask = torch.zeros((len(spans), width), dtype=torch.bool)
    for i, (prefix_len, ids) in enumerate(spans):
        n = len(ids)
        # the logits at position t predict token t + 1; padding slots repeat a valid position
        positions[i] = prefix_len - 1 + torch.arange(width).clamp(max=n - 1)
        targets[i, :n] = torch.tensor(ids)
        mask[i, :n] = True
    return batch, positions, targets, mask


def _accepts_logits_to_keep(model: Any) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def answer_loglikelihoods(
    model: Any,
    processor: Any,
    records: list[dict],
    completions: list[str],
    classes: Sequence[str] = CLASSES,
    batch_size: int = 16,
) -> np.ndarray:
    """(n, len(classes)) float64: log p(`<answer>C</answer>` | prompt, image, own reasoning).

    One forward pass per chunk of `batch_size` samples, never a generate call; equal (to float
    rounding) to scoring each (sample, class) alone.
    """
    if len(records) != len(completions):
        raise ValueError(f"{len(records)} records but {len(completions)} completions")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    classes = list(classes)
    out = np.zeros((len(records), len(classes)), dtype=np.float64)
    if not records or not classes:
        return out
    tokenizer = processor.tokenizer
    cont_ids = [tokenizer(continuation(c), add_special_tokens=False)["input_ids"] for c in classes]
    if any(not ids for ids in cont_ids):
        raise ValueError("a class continuation tokenizes to no tokens")
    keep = _accepts_logits_to_keep(model)
    device = model.device
    for start in range(0, len(records), batch_size):
        chunk = slice(start, start + batch_size)
        batch, positions, targets, mask = _build_rows(
            processor, records[chunk], completions[chunk], cont_ids
        )
        batch = {
            k: v.to(device, model.dtype) if v.is_floating_point() else v.to(device)
            for k, v in batch.items()
        }
        positions, targets, mask = positions.to(device), targets.to(device), mask.to(device)
        with torch.inference_mode():
            if keep:
                logits = model(**batch, logits_to_keep=positions, use_cache=False).logits
            else:
                logits = model(**batch, use_cache=False).logits
            if logits.ndim != 3:
                raise ValueError(f"model returned logits of shape {tuple(logits.shape)}")
            if logits.shape[:2] != positions.shape:  # full sequence: pick the positions here
                logits = torch.take_along_dim(logits, positions[..., None], dim=1)
            logp = torch.log_softmax(logits.float(), dim=-1)
            token_logp = logp.gather(-1, targets[..., None]).squeeze(-1)
            sums = (token_logp * mask).sum(-1).double().cpu().numpy()
        rows = sums.reshape(-1, len(classes))
        out[start : start + len(rows)] = rows
    return out


def normalise(loglik: np.ndarray) -> np.ndarray:
    """Softmax across classes per row: the per-class score (rows sum to 1) used for AUC."""
    loglik = np.asarray(loglik, dtype=np.float64)
    shifted = loglik - loglik.max(axis=1, keepdims=True)
    expo = np.exp(shifted)
    return expo / expo.sum(axis=1, keepdims=True)
