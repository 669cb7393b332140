"""Each distinct sample collated once per training run, not once per epoch.

TRL's vision-language collator renders the chat template, tokenizes, computes the assistant mask
and resizes and normalises the image for every sample of every batch: 7% of a cold start's time
(py-spy, the demo's seed-1 SFT), spent again each time a sample comes round. The cold start sees
each of its 120 samples about 27 times, the foundation's language phase each question about 7
times.

`CachingCollator` wraps TRL's collator: it collates each sample alone the first time it sees it
(keyed by `SAMPLE_KEY`, the record's messages and image paths, which `build_dataset`'s transform
adds), keeps the result, and builds a batch by right-padding the cached rows as TRL's batch call
pads them (token ids with the pad id, attention and token types with 0, labels with -100) and
stacking the images. A batch is the same tensors either way (`tests/test_collate.py`); whatever
it cannot rebuild exactly (another padding side, `pad_to_multiple_of`, an unknown key) goes to
TRL's collator whole, as before.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

SAMPLE_KEY = "sample_key"
# How each per-token tensor is padded on the right; `labels` are -100 wherever attention is 0.
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "mm_token_type_ids": 0, "labels": -100}
STACKED = ("pixel_values",)  # one row per image, concatenated in sample order


class CachingCollator:
    """TRL's collator with each sample's own rows cached; `collator` is TRL's, unchanged."""

    def __init__(self, collator: Any, pad_token_id: int, max_samples: int = 4096) -> None:
        self.collator = collator
        self.pad_token_id = int(pad_token_id)
        self.max_samples = max_samples  # a bound on memory for datasets of any size
        self.rows: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        # TRL pads on the right with no multiple; anything else is collated the old way.
        self.exact = getattr(collator, "pad_to_multiple_of", None) is None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        keys = [example.get(SAMPLE_KEY) for example in examples]
        plain = [{k: v for k, v in example.items() if k != SAMPLE_KEY} for example in examples]
        if not self.exact or any(key is None for key in keys):
            return self.collator(plain)
        rows = []
        for key, example in zip(keys, plain, strict=True):
            row = self.rows.get(key)
            if row is None:
                row = dict(self.collator([example]))
                if not self._rebuildable(row):
                    self.exact = False
                    return self.collator(plain)
                if len(self.rows) >= self.max_samples:
                    self.rows.popitem(last=False)
                self.rows[key] = row
            rows.append(row)
        return self._batch(rows)

    def _rebuildable(self, row: dict[str, Any]) -> bool:
        known = {"input_ids", *PAD_VALUES, *STACKED}
        if not set(row) <= known or "input_ids" not in row or "attention_mask" not in row:
            return False
        length = row["input_ids"].shape
        return (
            all(
                isinstance(value, torch.Tensor) and (key in STACKED or value.shape == length)
                for key, value in row.items()
            )
            and len(length) == 2
            and length[0] == 1
            and bool(row["attention_mask"].all())
        )

    def _batch(self, rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        width = max(row["input_ids"].shape[1] for row in rows)
        batch = {}
        for key in rows[0]:
            if key in STACKED:
                batch[key] = torch.cat([row[key] for row in rows])
                continue
            fill = self.pad_token_id if key == "input_ids" else PAD_VALUES[key]
            out = torch.full((len(rows), width), fill, dtype=rows[0][key].dtype)
            for i, row in enumerate(rows):
                out[i, : row[key].shape[1]] = row[key][0]
            batch[key] = out
        return batch
