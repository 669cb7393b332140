"""cmr_rd.model.token_check: Gemma3's image-token check, vectorised, counts and fails as
transformers' own does."""

from __future__ import annotations

import pytest
from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

from cmr_rd.model import token_check
from cmr_rd.model.backbone import TinyConfig, build_tiny, load_backbone
from cmr_rd.model.runtime import load_records, open_image
from test_train import _corpus, make_rings


@pytest.fixture(scope="module")
def processor_and_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("token_check")
    _, processor = load_backbone(str(build_tiny(root / "model", _corpus(), TinyConfig())))
    return processor, load_records(make_rings(root / "rings", per_class=2, seed=3))


def _inputs(processor, records):
    texts = [processor.apply_chat_template(r["messages"], tokenize=False) for r in records]
    images = [[open_image(p) for p in r["images"]] for r in records]
    return texts, images


def test_loading_a_backbone_installs_it(processor_and_records):
    assert Gemma3Processor._check_special_mm_tokens is token_check.check_image_tokens


@pytest.mark.parametrize("tensors", ["pt", "np", None])
def test_the_same_counts_as_transformers(processor_and_records, tensors):
    processor, records = processor_and_records
    texts, images = _inputs(processor, records[:4])
    kwargs = {"padding": True, "add_special_tokens": False, "return_tensors": tensors}
    out = processor(text=texts, images=images, **kwargs)
    expanded = processor.tokenizer.batch_decode(out["input_ids"])  # placeholders expanded
    image_token = processor.tokenizer.image_token
    assert all(sample.count(image_token) > 0 for sample in expanded)
    token_check.ORIGINAL(processor, expanded, out, ["image"])  # transformers' passes: so does ours
    token_check.check_image_tokens(processor, expanded, out, ["image"])
    # One sample lost an image token (as truncation would): both refuse, with the same message.
    if tensors == "pt":
        cut = {"input_ids": out["input_ids"].clone()}
        row = cut["input_ids"][1]
        row[(row == processor.tokenizer.image_token_id).nonzero()[0]] = 0
    else:
        ids = [list(map(int, r)) for r in out["input_ids"]]
        ids[1][ids[1].index(processor.tokenizer.image_token_id)] = 0
        cut = {"input_ids": ids}
    errors = []
    for check in (token_check.ORIGINAL, token_check.check_image_tokens):
        with pytest.raises(ValueError, match="Mismatch in `image` token count") as caught:
            check(processor, expanded, cut, ["image"])
        errors.append(str(caught.value).replace("\n", " "))
    assert "ids=[" in errors[1] and errors[0].split("ids=")[1] == errors[1].split("ids=")[1]


def test_a_truncated_batch_is_refused_through_the_processor(processor_and_records):
    processor, records = processor_and_records
    texts, images = _inputs(processor, records[:2])
    with pytest.raises(ValueError, match="Mismatch in `image` token count"):
        processor(text=texts, images=images, truncation=True, max_length=20,
                  add_special_tokens=False, return_tensors="pt")  # fmt: skip
    out = processor(text=texts, images=images, add_special_tokens=False, return_tensors="pt")
    assert int((out["input_ids"] == processor.tokenizer.image_token_id).sum()) > 0
