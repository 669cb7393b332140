"""cmr_rd.model.collate: batches built from each sample's cached rows are TRL's own batches."""

from __future__ import annotations

import random

import pytest
import torch

from cmr_rd.model.backbone import TinyConfig, build_tiny, load_backbone
from cmr_rd.model.collate import SAMPLE_KEY, CachingCollator
from cmr_rd.model.runtime import load_records
from cmr_rd.model.train import TrainConfig, build_dataset, make_trainer
from test_train import _corpus, make_rings


@pytest.fixture(scope="module")
def trainer_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("collate")
    model, processor = load_backbone(str(build_tiny(root / "model", _corpus(), TinyConfig())))
    records = load_records(make_rings(root / "rings", per_class=3, seed=2))
    for i, record in enumerate(records):  # targets of several lengths, so batches need padding
        record["messages"][1]["content"][0]["text"] += " The wall is read twice." * (i % 3)
    dataset = build_dataset(records)
    cfg = TrainConfig(stage="sft", max_steps=1)
    trainer = make_trainer(model, processor, dataset, root / "ck", root / "tb", cfg)
    return trainer, dataset


class Counting:
    """TRL's collator, counting the samples it collates."""

    def __init__(self, collator):
        self.collator, self.samples = collator, 0
        self.pad_to_multiple_of = collator.pad_to_multiple_of

    def __call__(self, examples):
        self.samples += len(examples)
        return self.collator(examples)


def _plain(batch: list[dict]) -> list[dict]:
    return [{k: v for k, v in example.items() if k != SAMPLE_KEY} for example in batch]


def _assert_same(ours: dict, theirs: dict) -> None:
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key].dtype == theirs[key].dtype, key
        assert torch.equal(ours[key], theirs[key]), key


def _batches(dataset, count: int, size: int, seed: int) -> list[list[dict]]:
    rng = random.Random(seed)
    return [[dataset[rng.randrange(len(dataset))] for _ in range(size)] for _ in range(count)]


def test_the_trainer_collates_through_the_cache(trainer_and_data):
    trainer, _ = trainer_and_data
    assert isinstance(trainer.data_collator, CachingCollator)
    assert not isinstance(trainer.data_collator.collator, CachingCollator)


def test_cached_batches_are_trls_batches_and_each_sample_is_collated_once(trainer_and_data):
    trainer, dataset = trainer_and_data
    trl = trainer.data_collator.collator
    counting = Counting(trl)
    cached = CachingCollator(counting, trainer.processing_class.tokenizer.pad_token_id)
    batches = _batches(dataset, count=12, size=4, seed=0)
    padded = 0
    for batch in batches:
        ours = cached(batch)
        _assert_same(ours, trl(_plain(batch)))
        padded += int((ours["attention_mask"] == 0).sum())
    assert padded > 0  # the samples differ in length, so the padding is compared too
    distinct = {example[SAMPLE_KEY] for batch in batches for example in batch}
    assert counting.samples == len(distinct) < sum(map(len, batches))
    assert cached.exact


def test_a_bounded_cache_still_gives_trls_batches(trainer_and_data):
    trainer, dataset = trainer_and_data
    trl = trainer.data_collator.collator
    cached = CachingCollator(trl, trainer.processing_class.tokenizer.pad_token_id, max_samples=2)
    for batch in _batches(dataset, count=6, size=3, seed=1):
        _assert_same(cached(batch), trl(_plain(batch)))
        assert len(cached.rows) <= 2


def test_what_it_cannot_rebuild_goes_to_trls_collator_whole(trainer_and_data):
    trainer, dataset = trainer_and_data
    trl = trainer.data_collator.collator
    batch = _batches(dataset, count=1, size=3, seed=2)[0]
    pad_id = trainer.processing_class.tokenizer.pad_token_id
    # Samples without a key (a dataset built elsewhere): TRL's collator, nothing cached.
    cached = CachingCollator(trl, pad_id)
    _assert_same(cached(_plain(batch)), trl(_plain(batch)))
    assert not cached.rows
    # Padding to a multiple: TRL's collator pads that itself.
    counting = Counting(trl)
    counting.pad_to_multiple_of = 8
    cached = CachingCollator(counting, pad_id)
    cached(batch)
    assert not cached.exact and not cached.rows and counting.samples == len(batch)
