"""Gemma3's image-token check without a Python loop over every token.

After tokenizing, `Gemma3Processor` checks that each sample kept as many image tokens as its text
has placeholders (truncation could cut some). It counts them with `list(ids).count(token_id)` on
the returned tensors: one 0-d tensor and one tensor comparison per token. Measured by py-spy on the
demo's foundation stage, that loop was 3.1 s of the 14.9 s its language phase spent collating, and
the processor runs it for every training batch, every GPPO prompt batch and every decoding batch.
`check_image_tokens` counts with one comparison per batch and raises the same error on the same
inputs (`tests/test_token_check.py` compares the two); `install()` puts it in the class's place
for this process, and `ORIGINAL` keeps transformers' own for the comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

ORIGINAL = Gemma3Processor._check_special_mm_tokens


def _counts(input_ids: Any, token_id: int) -> list[int]:
    if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2:
        return (input_ids == token_id).sum(dim=1).tolist()
    if isinstance(input_ids, np.ndarray) and input_ids.ndim == 2:
        return (input_ids == token_id).sum(axis=1).tolist()
    return [list(ids).count(token_id) for ids in input_ids]


def check_image_tokens(
    self: Gemma3Processor, text: list[str], text_inputs: Any, modalities: list[str]
) -> None:
    """`Gemma3Processor._check_special_mm_tokens`: the same counts and the same error."""
    token_str = self.tokenizer.image_token
    token_id = self.tokenizer.image_token_id
    if token_str is None or token_id is None:
        return
    ids_count = _counts(text_inputs["input_ids"], token_id)
    text_count = [sample.count(token_str) for sample in text]
    if ids_count != text_count:
        raise ValueError(
            f"Mismatch in `image` token count between text and `input_ids`. Got ids={ids_count} "
            f"and text={text_count}. Likely due to `truncation='max_length'`. Please disable "
            "truncation or increase `max_length`."
        )


def install() -> None:
    Gemma3Processor._check_special_mm_tokens = check_image_tokens
