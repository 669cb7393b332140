"""Per-class answer log-likelihoods, the scores AUC needs and a greedy answer cannot give.

Each class NAME is scored as the continuation `<answer>NAME</answer>` of the prompt followed by
the model's own greedy reasoning (the completion before its first `<answer>`), so the six scores
are read off the same chain of thought the predicted answer came from, with no sampling.

The prefix is tokenized by the processor exactly as `generate_batch` does (chat template with the
generation prompt, image, left padding, no extra <bos>) and the continuation by the tokenizer on
its own; the ids are concatenated, so the boundary between reasoning and answer is the same for
every class.

The six continuations share their prefix (prompt, image and reasoning: nearly all the tokens),
so a chunk of samples costs two forward passes: the prefixes once, with their key/value cache,
then every class's continuation of every sample at once on that cache repeated per class, with
the positions a sample has when scored alone (left padding is masked and skipped by the
position ids, as in `generate`). Scoring each (sample, class) row in full recomputed the prefix
six times: 70% of an evaluation job's time on the tiny backbone.
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


def _prefix_batch(
    processor: Any, records: Sequence[dict[str, Any]], completions: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Left-padded processor output for prompt + generation prompt + reasoning prefix, as
    `generate_batch` builds a batch."""
    texts = [
        processor.apply_chat_template(
            prompt_messages(r["messages"]), add_generation_prompt=True, tokenize=False
        )
        + reasoning_prefix(c)
        for r, c in zip(records, completions, strict=True)
    ]
    images = [[open_image(p) for p in r.get("images") or []] for r in records]
    tokenizer = processor.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        inputs = processor(
            text=texts,
            images=images if any(images) else None,
            padding=True,
            max_length=None,  # as in generate_batch: the saved text defaults may carry one
            add_special_tokens=False,  # the chat template already writes <bos>
            return_tensors="pt",
        )
    finally:
        tokenizer.padding_side = side
    return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}


def _on(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: v.to(model.device, model.dtype) if v.is_floating_point() else v.to(model.device)
        for k, v in batch.items()
    }


def _chunk_loglik(
    model: Any, processor: Any, records, completions, cont_ids: list[list[int]], keep: bool
) -> np.ndarray:
    """(len(records), len(cont_ids)): the prefixes in one pass, every continuation in a second."""
    k = len(cont_ids)
    prefix = _on(model, _prefix_batch(processor, records, completions))
    mask = prefix["attention_mask"]
    # Left padding: each real token's position is its index among the sample's real tokens.
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    extra = {"logits_to_keep": 1} if keep else {}
    out = model(**prefix, position_ids=positions, use_cache=True, **extra)
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # predicts continuation[0]
    scores = torch.stack([first[:, ids[0]] for ids in cont_ids], dim=1).double()
    width = max(len(ids) for ids in cont_ids) - 1
    if width == 0:
        return scores.cpu().numpy()
    pad_id = processor.tokenizer.pad_token_id or 0
    # Row b * k + c continues sample b with class c; a shorter continuation is right-padded,
    # which no earlier position attends to.
    feed = torch.full((k, width), pad_id, dtype=torch.long)
    for c, ids in enumerate(cont_ids):
        feed[c, : len(ids) - 1] = torch.tensor(ids[:-1])
    n = mask.shape[0]
    cache = out.past_key_values
    cache.batch_repeat_interleave(k)
    step = {
        "input_ids": feed.repeat(n, 1).to(model.device),
        "attention_mask": torch.cat(
            [mask.repeat_interleave(k, 0), mask.new_ones((n * k, width))], dim=1
        ),
        "position_ids": positions[:, -1:].repeat_interleave(k, 0)
        + 1
        + torch.arange(width, device=model.device),
    }
    for key in ("token_type_ids", "mm_token_type_ids"):  # text, not image
        if key in prefix:
            step[key] = prefix[key].new_zeros((n * k, width))
    logits = model(**step, past_key_values=cache, use_cache=False).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    for c, ids in enumerate(cont_ids):
        if len(ids) > 1:
            rows = logp[c::k, : len(ids) - 1]
            targets = torch.tensor(ids[1:], device=model.device)
            scores[:, c] += rows.gather(-1, targets.expand(n, -1)[..., None]).sum((1, 2)).double()
    return scores.cpu().numpy()


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

    Two forward passes per chunk of `batch_size` samples (shared prefixes, then continuations),
    never a generate call; equal (to float rounding) to scoring each (sample, class) alone.
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
    with torch.inference_mode():
        for start in range(0, len(records), batch_size):
            chunk = slice(start, start + batch_size)
            rows = _chunk_loglik(
                model, processor, records[chunk], completions[chunk], cont_ids, keep
            )
            out[start : start + len(rows)] = rows
    return out
