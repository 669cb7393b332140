"""cmr_rd.model.mask_expansion: Gemma3's attention masks by broadcasting are transformers' vmap
masks, element for element, and the model's outputs do not change by a bit."""

from __future__ import annotations

import pytest
import torch
from transformers import masking_utils

from cmr_rd.model import mask_expansion
from cmr_rd.model.backbone import TinyConfig, build_tiny, load_backbone
from cmr_rd.model.generate import prompt_messages
from cmr_rd.model.runtime import load_records, open_image
from test_train import _corpus, make_rings


@pytest.fixture(scope="module")
def model_and_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask_expansion")
    model, processor = load_backbone(str(build_tiny(root / "model", _corpus(), TinyConfig())))
    records = load_records(make_rings(root / "rings", per_class=2, seed=3))[:4]
    images = [[open_image(p) for p in r["images"]] for r in records]
    # Different lengths, so padding enters the masks: a full conversation and three prompts.
    texts = [processor.apply_chat_template(records[0]["messages"], tokenize=False)] + [
        processor.apply_chat_template(
            prompt_messages(r["messages"]), add_generation_prompt=True, tokenize=False
        )
        for r in records[1:]
    ]
    batches = {}
    for side in ("left", "right"):
        processor.tokenizer.padding_side = side
        batches[side] = processor(
            text=texts, images=images, padding=True, add_special_tokens=False,
            return_tensors="pt", max_length=None,
        )  # fmt: skip
    return model.eval(), processor, batches


def _recorded(expansion, run):
    """What `run()` returns, and every mask the SDPA mask builder expanded on the way."""
    masks = []

    def recording(mask_function):
        expand = expansion(mask_function)

        def expanded(*aranges):
            mask = expand(*aranges)
            masks.append(mask.clone())
            return mask

        return expanded

    saved = masking_utils._vmap_expansion_sdpa
    masking_utils._vmap_expansion_sdpa = recording
    try:
        with torch.inference_mode():
            return run(), masks
    finally:
        masking_utils._vmap_expansion_sdpa = saved


def test_loading_a_backbone_installs_it(model_and_inputs):
    assert masking_utils._vmap_expansion_sdpa is mask_expansion.broadcast_expansion


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("window", [None, 12])
def test_the_same_masks_and_logits_as_vmap(model_and_inputs, side, window, monkeypatch):
    model, _, batches = model_and_inputs
    if window is not None:  # a window shorter than the sequence, so the and-mask cuts
        monkeypatch.setattr(model.config.text_config, "sliding_window", window)
    inputs = batches[side]
    outputs = {}
    for name, expansion in (
        ("vmap", mask_expansion.ORIGINAL),
        ("ours", mask_expansion.broadcast_expansion),
    ):
        outputs[name] = _recorded(expansion, lambda: model(**inputs).logits)
    (vmap_logits, vmap_masks), (our_logits, our_masks) = outputs["vmap"], outputs["ours"]
    assert len(our_masks) == len(vmap_masks) >= 1
    for ours, theirs in zip(our_masks, vmap_masks, strict=True):
        assert ours.shape == theirs.shape and torch.equal(ours, theirs)
    assert torch.equal(our_logits, vmap_logits)
    # The masks are the composed ones: image tokens see later image tokens (bidirectional
    # block), padding is masked, and a short window hides the far past.
    mask = our_masks[-1][:, 0]
    upper = torch.triu(torch.ones_like(mask[0]), diagonal=1)
    assert bool((mask & upper).any())
    assert not bool(mask[:, :, (inputs["attention_mask"] == 0).nonzero()[:, 1]].all())
    if window is not None:
        lower_far = torch.tril(torch.ones_like(mask[0]), diagonal=-window)
        assert not bool((mask & lower_far).any())


def test_the_same_greedy_decoding_with_a_cache(model_and_inputs):
    model, processor, batches = model_and_inputs
    inputs = batches["left"]

    def decode():
        return model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=6,
            pad_token_id=processor.tokenizer.pad_token_id,
        )

    vmap_tokens, vmap_masks = _recorded(mask_expansion.ORIGINAL, decode)
    our_tokens, our_masks = _recorded(mask_expansion.broadcast_expansion, decode)
    assert torch.equal(our_tokens, vmap_tokens)
    # The prefill's masks: decoding steps carry no image block, so transformers broadcasts them.
    assert len(our_masks) == len(vmap_masks) >= 1
    assert all(torch.equal(a, b) for a, b in zip(our_masks, vmap_masks, strict=True))
