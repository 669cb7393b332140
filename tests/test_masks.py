"""cmr_rd.model.masks: the assistant-token mask on arrays gives transformers' own masks, list for
list, on crafted offsets and through TRL's collator on the tiny run's own training data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers.processing_utils import ProcessorMixin

from cmr_rd.model import masks


@pytest.fixture
def restore_masks():
    """Whatever this process used before the test, it uses again after it."""
    before = ProcessorMixin._adjust_assistant_masks_indices
    yield
    ProcessorMixin._adjust_assistant_masks_indices = before


def _crafted(rng: random.Random) -> tuple[dict, list[list[tuple[int, int]]]]:
    """A batch as apply_chat_template hands it over: per sample the tokens' character offsets
    (some zero-width, as padding and added specials are), placeholder expansions before and
    inside the text, and one to three generation spans in the unexpanded text."""
    input_ids, offsets, replacements, spans = [], [], [], []
    for _ in range(rng.randint(1, 4)):
        n, position, sample = rng.randint(0, 60), 0, []
        for _ in range(n):
            width = rng.choice([0, 0, 1, 2, 3, 5])
            sample.append((position, position + width))
            position += width + rng.choice([0, 0, 1])
        input_ids.append([7] * n)
        offsets.append(sample)
        expanded, gained = [], 0
        for at in sorted(rng.sample(range(0, 80), rng.randint(0, 3))):
            grow = rng.randint(0, 20)
            expanded.append(
                {"span": (at, at + 1), "new_span": (at + gained, at + gained + 1 + grow)}
            )
            gained += grow
        replacements.append(expanded)
        cuts = sorted(rng.sample(range(0, 90), 2 * rng.randint(1, 3)))
        spans.append([(cuts[k], cuts[k + 1]) for k in range(0, len(cuts), 2)])
    processed = {"input_ids": input_ids, "offset_mapping": offsets}
    if any(replacements) or rng.random() < 0.5:
        processed["text_replacement_offsets"] = replacements
    return processed, spans


def _copy(processed: dict) -> dict:
    return json.loads(json.dumps(processed))


def test_the_same_masks_as_transformers_on_crafted_batches():
    rng = random.Random(0)
    marked = 0
    for _ in range(500):
        processed, spans = _crafted(rng)
        expected = masks.ORIGINAL(None, _copy(processed), spans)
        got = masks.adjust_assistant_masks(None, _copy(processed), spans)
        assert got == expected
        marked += sum(map(sum, got["assistant_masks"]))
    assert marked > 1000  # the cases mark tokens, so equal masks are not all zeros


def _batches(path: Path, size: int = 8, count: int = 3) -> tuple[object, list[list[dict]]]:
    """The first records of a dataset as the trainer gets it, and in batches of `size`."""
    from cmr_rd.model.runtime import load_records
    from cmr_rd.model.train import build_dataset

    dataset = build_dataset(load_records(path)[: size * count])
    n = len(dataset)
    return dataset, [[dataset[i] for i in range(j, min(j + size, n))] for j in range(0, n, size)]


@pytest.mark.slow
def test_trls_collator_gives_the_same_batches_with_either(
    tiny_run, tmp_path, restore_masks, monkeypatch
):
    """The cold-start, alignment and foundation data of the tiny run, collated by the SFT
    trainer's own collator: the same input ids, attention and labels (the labels are -100
    outside the assistant mask, so equal labels are equal masks)."""
    from cmr_rd.model.backbone import load_backbone
    from cmr_rd.model.train import TrainConfig, make_trainer

    monkeypatch.chdir(tiny_run)  # the datasets' image paths are relative to the workflow
    model, processor = load_backbone(str(tiny_run / "results/model/base"))
    data = {
        "cold start": tiny_run / "results/datasets/coldstart.jsonl",
        "alignment": tiny_run / "results/datasets/alignment.jsonl",
        "foundation": tiny_run / "results/foundation/questions.jsonl",
    }
    trained = 0
    for name, path in data.items():
        dataset, batches = _batches(path)
        trainer = make_trainer(model, processor, dataset, tmp_path / name / "ck",
                               tmp_path / name / "tb", TrainConfig(stage="sft", max_steps=1))  # fmt: skip
        assert ProcessorMixin._adjust_assistant_masks_indices is masks.adjust_assistant_masks
        collator = trainer.data_collator.collator  # TRL's own: the caching wrapper would reuse rows
        ours = [collator(batch) for batch in batches]
        ProcessorMixin._adjust_assistant_masks_indices = masks.ORIGINAL
        theirs = [collator(batch) for batch in batches]
        masks.install()
        for a, b in zip(ours, theirs, strict=True):
            assert a.keys() == b.keys(), name
            for key in ("input_ids", "attention_mask", "labels"):
                assert torch.equal(a[key], b[key]), (name, key)
            trained += int((a["labels"] != -100).sum())
    assert trained > 0
