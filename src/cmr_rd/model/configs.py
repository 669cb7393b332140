"""Configurations of real backbones as values, so a model of the real shape can be built offline.

Gemma-3-4B is the backbone the paper's stages run on (MedGemma-4B has the same shape). Its values
are those of google/gemma-3-4b-it's config.json (which names few keys) with the Gemma3TextConfig
defaults filling the rest, as in transformers' `convert_gemma3_weights.py` (variant `gemma3_4b`):
4.30B parameters, 3.88B of them the language model with its (tied) embeddings.

This module imports only transformers' configuration classes: the GPU benchmark imports it on
machines that have torch and transformers and nothing else of the project's stack.
"""

from __future__ import annotations

import math

from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

# google/gemma-3-4b-it, text tower (config.json + Gemma3TextConfig defaults).
GEMMA3_4B_TEXT = {
    "vocab_size": 262_208,  # 262,144 SentencePiece pieces + 64 added for the image tokens
    "hidden_size": 2560,
    "intermediate_size": 10_240,
    "num_hidden_layers": 34,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "query_pre_attn_scalar": 256,
    "sliding_window": 1024,
    "sliding_window_pattern": 6,  # every 6th layer attends globally, the other 5 locally
    "rope_theta": 1_000_000.0,  # global layers, linearly scaled by 8 (128k context)
    "rope_scaling_factor": 8.0,
    "rope_local_base_freq": 10_000.0,  # sliding layers, unscaled
    "max_position_embeddings": 131_072,
    "rms_norm_eps": 1e-6,
    "hidden_activation": "gelu_pytorch_tanh",
}
# SigLIP-So400m at 896 px without its pooling head: 64x64 patches, pooled 4x4 to 256 tokens.
GEMMA3_4B_VISION = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 896,
    "patch_size": 14,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu_pytorch_tanh",
}
GEMMA3_4B_MM_TOKENS_PER_IMAGE = 256
# Token ids of the Gemma 3 tokenizer that the config and the chat layout refer to.
GEMMA3_TOKEN_IDS = {
    "<pad>": 0,
    "<eos>": 1,
    "<bos>": 2,
    "<unk>": 3,
    "<start_of_turn>": 105,
    "<end_of_turn>": 106,
    "\n": 107,
    "\n\n": 108,
    "\n\n\n": 109,
    "<start_of_image>": 255_999,
    "<end_of_image>": 256_000,
    "<image_soft_token>": 262_144,
}
# The image preprocessing of google/gemma-3-4b-it (preprocessor_config.json): resize to the
# tower's size with bilinear resampling, scale to [0, 1], normalise to [-1, 1]; no pan-and-scan.
GEMMA3_IMAGE_PROCESSING = {
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "rescale_factor": 1 / 255,
    "resample": 2,  # PIL bilinear
    "do_pan_and_scan": False,
}


def _scaled(value: int, scale: float, multiple: int, minimum: int) -> int:
    return max(minimum, round(value * scale / multiple) * multiple)


def gemma3_token_ids(vocab_size: int) -> dict[str, int]:
    """The special token ids for a vocabulary of `vocab_size`: the real ids at full size.

    A shrunk vocabulary keeps the low ids and moves the three image tokens to its top, keeping
    the real layout's `<image_soft_token>` at vocab_size - 64.
    """
    ids = dict(GEMMA3_TOKEN_IDS)
    if vocab_size != GEMMA3_4B_TEXT["vocab_size"]:
        ids["<start_of_image>"] = vocab_size - 66
        ids["<end_of_image>"] = vocab_size - 65
        ids["<image_soft_token>"] = vocab_size - 64
    return ids


def gemma3_4b_config(scale: float = 1.0) -> Gemma3Config:
    """Gemma-3-4B's configuration; `scale` < 1 shrinks it for tests of the same code on a CPU.

    Widths, layer counts, the vocabulary and the sliding window scale linearly (head counts stay,
    head widths shrink); the image side and the patch scale with sqrt(scale), so the number of
    image tokens scales with `scale`, and the tower's patch grid stays 4x the token grid as in
    the real model (64 patches a side pooled to 16).
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    text, vision = GEMMA3_4B_TEXT, GEMMA3_4B_VISION
    # Every rounding below gives the real value back at scale 1.
    layers = max(2, round(text["num_hidden_layers"] * scale))
    pattern = text["sliding_window_pattern"]
    layer_types = [
        "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)
    ]
    if "full_attention" not in layer_types:
        layer_types[-1] = "full_attention"  # keep both attention paths in a shrunk model
    vocab = _scaled(text["vocab_size"], scale, 64, 512)
    heads = text["num_attention_heads"]
    head_dim = _scaled(text["head_dim"], scale, 4, 8)
    text_config = Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=_scaled(text["hidden_size"], scale, 2 * heads, 4 * heads),
        intermediate_size=_scaled(text["intermediate_size"], scale, 16, 32),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=text["num_key_value_heads"],
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim * text["query_pre_attn_scalar"] // text["head_dim"],
        sliding_window=_scaled(text["sliding_window"], scale, 8, 16),
        layer_types=layer_types,
        rope_parameters={
            "full_attention": {
                "rope_type": "linear",
                "factor": text["rope_scaling_factor"],
                "rope_theta": text["rope_theta"],
            },
            "sliding_attention": {
                "rope_type": "default",
                "rope_theta": text["rope_local_base_freq"],
            },
        },
        max_position_embeddings=text["max_position_embeddings"],
        rms_norm_eps=text["rms_norm_eps"],
        hidden_activation=text["hidden_activation"],
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        tie_word_embeddings=True,
        pad_token_id=GEMMA3_TOKEN_IDS["<pad>"],
        eos_token_id=GEMMA3_TOKEN_IDS["<eos>"],
        bos_token_id=GEMMA3_TOKEN_IDS["<bos>"],
    )
    root = math.sqrt(scale)
    side = math.isqrt(GEMMA3_4B_MM_TOKENS_PER_IMAGE)  # 16 image tokens a side
    pool = vision["image_size"] // vision["patch_size"] // side  # 4 patches a token, a side
    tokens_side = max(2, round(side * root))
    patch = max(2, round(vision["patch_size"] * root))
    v_heads = vision["num_attention_heads"]
    vision_config = SiglipVisionConfig(
        hidden_size=_scaled(vision["hidden_size"], scale, v_heads, 2 * v_heads),
        intermediate_size=_scaled(vision["intermediate_size"], scale, 16, 32),
        num_hidden_layers=max(1, round(vision["num_hidden_layers"] * scale)),
        num_attention_heads=v_heads,
        image_size=tokens_side * pool * patch,
        patch_size=patch,
        layer_norm_eps=vision["layer_norm_eps"],
        hidden_act=vision["hidden_act"],
        vision_use_head=False,
    )
    ids = gemma3_token_ids(vocab)
    return Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=tokens_side * tokens_side,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        initializer_range=0.02,
        pad_token_id=ids["<pad>"],
        bos_token_id=ids["<bos>"],
        # The instruction-tuned model stops at <eos> or <end_of_turn>.
        eos_token_id=[ids["<eos>"], ids["<end_of_turn>"]],
    )
