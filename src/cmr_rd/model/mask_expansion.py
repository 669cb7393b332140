"""Gemma3's attention masks by broadcasting instead of `torch.vmap`.

transformers builds an SDPA mask by evaluating an index function over (batch, head, query, key).
Its own functions it evaluates on broadcast index tensors, but as soon as a model composes them
with `or_masks`/`and_masks` (Gemma3 does, for the image tokens' bidirectional block and the
sliding window) it switches to four nested `torch.vmap`s, in case a user's function is not
index-based. Measured by py-spy on the demo's cold start (tiny backbone, one thread), building
those masks was 12% of a training step. The functions Gemma3 composes (causal, padding,
blockwise, sliding window) are index-based, so `broadcast_expansion` evaluates them the way
transformers evaluates its own: the same boolean mask, element for element
(`tests/test_mask_expansion.py` compares the two on image batches, padding, sliding windows and
decoding with a cache). transformers' exporters (ONNX, OpenVINO, ExecuTorch) make the same
substitution for their own reasons (`transformers.exporters.utils`). `install()` puts it in
`_vmap_expansion_sdpa`'s place for this process; `ORIGINAL` keeps transformers' own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import masking_utils

ORIGINAL = masking_utils._vmap_expansion_sdpa


def broadcast_expansion(mask_function: Callable) -> Callable:
    """Like `_vmap_expansion_sdpa(mask_function)`: (batch, head, q, kv) aranges → a 4-D mask."""

    def expanded(
        batch: torch.Tensor, head: torch.Tensor, q: torch.Tensor, kv: torch.Tensor
    ) -> torch.Tensor:
        mask = mask_function(*masking_utils._non_vmap_expansion_sdpa(batch, head, q, kv))
        return mask.expand(len(batch), len(head), len(q), len(kv))

    return expanded


def install() -> None:
    masking_utils._vmap_expansion_sdpa = broadcast_expansion
