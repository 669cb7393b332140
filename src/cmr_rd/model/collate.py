"""Each distinct sample collated once per training run, not once per epoch.

TRL's vision-language collator renders the chat template, tokenizes, computes the assistant mask
and resizes and normalises the image for every sample of every batch: 7% of a cold start's time
(py-spy, the demo's seed-1 SFT), spent again each time a sample comes round. The cold start sees
each of its 120 samples about 27 times (the foundation's language phase sees each of its 3,840
questions only about 1.7 times).

`CachingCollator` wraps TRL's collator. The samples of a batch it has not seen yet go to TRL's
collator together, as one batch (one sample at a time costs 1.4x more), and each one's rows are
cut out of the result and kept, keyed by `SAMPLE_KEY` (the record's messages and image paths,
which `build_dataset`'s transform adds). A batch is then the cached rows right-padded as TRL pads
them (token ids with the pad id, attention and token types with 0, labels with -100), with the
images stacked: the same tensors as TRL's own call on the batch (`tests/test_collate.py`).
Whatever it cannot rebuild exactly (left padding, `pad_to_multiple_of`, an unknown key, several
pixel rows per image) goes to TRL's collator whole, as before.
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
        found = {key: self.rows[key] for key in keys if key in self.rows}
        missing = {}
        for key, example in zip(keys, plain, strict=True):
            if key not in found:
                missing.setdefault(key, example)
        if missing:
            fresh = self._split(
                self.collator(list(missing.values())),
                [len(example.get("images") or []) for example in missing.values()],
            )
            if fresh is None:
                self.exact = False
                return self.collator(plain)
            for key, row in zip(missing, fresh, strict=True):
                found[key] = row
                if len(self.rows) >= self.max_samples:
                    self.rows.popitem(last=False)
                self.rows[key] = row
        return self._batch([found[key] for key in keys])

    def _split(self, batch: Any, images: list[int]) -> list[dict[str, torch.Tensor]] | None:
        """Each sample's own rows of a batch TRL collated, or None when it cannot be exact."""
        batch = dict(batch)
        ids, attention = batch.get("input_ids"), batch.get("attention_mask")
        if not isinstance(ids, torch.Tensor) or not isinstance(attention, torch.Tensor):
            return None
        if not set(batch) <= {"input_ids", *PAD_VALUES, *STACKED} or ids.dim() != 2:
            return None
        for key, value in batch.items():
            if not isinstance(value, torch.Tensor):
                return None
            if key in STACKED and value.shape[0] != sum(images):
                return None  # several pixel rows per image (pan and scan): not cut here
            if key not in STACKED and value.shape != ids.shape:
                return None
        lengths = attention.sum(dim=1).tolist()
        rows, first_image = [], 0
        for i, (length, count) in enumerate(zip(lengths, images, strict=True)):
            if not bool(attention[i, :length].all()):
                return None  # not right padding
            row = {}
            for key, value in batch.items():
                if key in STACKED:
                    row[key] = value[first_image : first_image + count].clone()
                else:
                    row[key] = value[i : i + 1, :length].clone()
            rows.append(row)
            first_image += count
        return rows

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
