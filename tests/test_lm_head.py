"""cmr_rd.model.lm_head: the direct LM head gives what TRL's chunked fused head gives (loss, every
field, gradients), and calls too large for it go to TRL's."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3TextConfig,
    SiglipVisionConfig,
)
from trl.trainer.utils import add_fused_lm_head

from cmr_rd.model.lm_head import direct_lm_head


def tiny_model(softcap: float | None = None) -> Gemma3ForConditionalGeneration:
    torch.manual_seed(0)
    text = Gemma3TextConfig(vocab_size=300, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                            head_dim=16, query_pre_attn_scalar=16, max_position_embeddings=64,
                            sliding_window=64, final_logit_softcapping=softcap,
                            layer_types=["sliding_attention", "full_attention"], pad_token_id=0,
                            eos_token_id=1, bos_token_id=2)  # fmt: skip
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, image_size=16, patch_size=4,
                                vision_use_head=False)  # fmt: skip
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=3, eoi_token_index=4, image_token_index=5,
                          pad_token_id=0, eos_token_id=1, bos_token_id=2)  # fmt: skip
    model = Gemma3ForConditionalGeneration(config).float()
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.02)
    return model


def batch() -> dict:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(6, 300, (3, 20), generator=gen)
    ids[:, 1], ids[:, 2:6], ids[:, 6] = 3, 5, 4
    labels = ids.clone()
    labels[:, :9] = -100  # the prompt and the image
    labels[2, 15:] = -100  # padding
    return {
        "input_ids": ids,
        "pixel_values": torch.randn(3, 3, 16, 16, generator=gen),
        "token_type_ids": (ids == 5).long(),
        "labels": labels,
    }


@pytest.mark.parametrize("softcap,temperature", [(None, 1.0), (30.0, 0.7)])
def test_same_values_and_gradients_as_trl(softcap, temperature):
    outputs = ("log_probs", "entropy", "is_top1")
    theirs = tiny_model(softcap)
    ours = copy.deepcopy(theirs)
    add_fused_lm_head(theirs, temperature=temperature, outputs=outputs)
    add_fused_lm_head(ours, temperature=temperature, outputs=outputs)
    assert direct_lm_head(ours, temperature, outputs)

    results = {}
    for name, model in (("trl", theirs), ("ours", ours)):
        out = model(**batch(), fused_lm_head=True)
        (out.loss + 0.1 * out.entropy.sum()).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        results[name] = (out, grads)
    (a, grads_a), (b, grads_b) = results["trl"], results["ours"]
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.log_probs, a.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.entropy, a.entropy, rtol=1e-5, atol=1e-5)
    assert torch.equal(b.is_top1, a.is_top1)
    assert torch.equal(b.label_mask, a.label_mask)
    assert (b.log_probs[~b.label_mask] == 0).all()
    assert set(grads_a) == set(grads_b) and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6)


def test_plain_forward_and_generation_are_untouched():
    model = tiny_model()
    add_fused_lm_head(model, outputs=("log_probs",))
    inputs = {k: v for k, v in batch().items() if k != "labels"}
    before = model(**inputs).logits
    assert direct_lm_head(model)
    torch.testing.assert_close(model(**inputs).logits, before)


def test_large_calls_go_to_trl():
    model = tiny_model()
    add_fused_lm_head(model, outputs=("log_probs",))
    assert direct_lm_head(model, max_logits=10)  # every call is over the limit
    reference = tiny_model()
    add_fused_lm_head(reference, outputs=("log_probs",))
    out, expected = model(**batch(), fused_lm_head=True), reference(**batch(), fused_lm_head=True)
    # TRL's chunked fold gives bit-for-bit its own result: the call went there.
    assert torch.equal(out.loss, expected.loss)


def test_a_model_trl_did_not_patch_is_left_alone():
    assert not direct_lm_head(tiny_model())


def test_unsupported_outputs_are_left_to_trl():
    model = tiny_model()
    add_fused_lm_head(model, outputs=("log_probs", "mean_logits"))
    assert not direct_lm_head(model, outputs=("log_probs", "mean_logits"))
