"""The assistant-token mask on arrays: transformers' own loop was 7% of a cold start's time.

TRL's `assistant_only_loss` asks the processor for `return_assistant_tokens_mask`: every token
whose characters overlap a `{% generation %}` span of the chat template is trained on. transformers
computes it in `ProcessorMixin._adjust_assistant_masks_indices`, a Python loop over every token's
character offsets, for every span of every sample: measured on the demo's cold-start data (tiny
backbone, one thread), 16 ms of the 37 ms that collating a batch of 8 takes, against a training
step of about 225 ms. `adjust_assistant_masks` computes the same masks with one vectorised
comparison per span; `tests/test_masks.py` checks them against transformers' own, list for list,
on the cold-start, alignment and foundation batches. `install()` puts it in transformers' place
for this process (the training stages call it); the class keeps `ORIGINAL` for the comparison.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
from transformers.processing_utils import ProcessorMixin

ORIGINAL = ProcessorMixin._adjust_assistant_masks_indices


def adjust_assistant_masks(
    self: ProcessorMixin, processed: dict[str, Any], generation_indices: list[list[Any]]
) -> dict[str, Any]:
    """`ProcessorMixin._adjust_assistant_masks_indices`, the same inputs and outputs: shift each
    generation span past the placeholders expanded before it (the image tokens), then mark the
    tokens that overlap it; zero-width tokens (padding, added specials) never match."""
    offset_mapping = processed.pop("offset_mapping")
    input_ids = processed["input_ids"]
    replacements = processed.pop("text_replacement_offsets", None)
    if replacements is None or len(replacements) == 0:
        replacements = [[]] * len(input_ids)
    masks = []
    for i in range(len(input_ids)):
        mask = np.zeros(len(input_ids[i]), dtype=bool)
        offsets = np.asarray(offset_mapping[i], dtype=np.int64).reshape(-1, 2)
        starts, ends = offsets[:, 0], offsets[:, 1]
        placeholder_ends = [r["span"][1] for r in replacements[i]]
        chars_gained = [0] + [r["new_span"][1] - r["span"][1] for r in replacements[i]]
        for span in generation_indices[i]:
            start, end = (
                char + chars_gained[bisect.bisect_right(placeholder_ends, char)] for char in span
            )
            mask[: len(offsets)] |= (starts < end) & (ends > start)
        masks.append(mask.astype(int).tolist())
    processed["assistant_masks"] = masks
    return processed


def install() -> None:
    """Use `adjust_assistant_masks` for every processor in this process."""
    ProcessorMixin._adjust_assistant_masks_indices = adjust_assistant_masks
