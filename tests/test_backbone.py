"""The backbone module: the tiny Gemma3 is a real, loadable VLM; loading and freezing fail loudly."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"

from transformers import (  # noqa: E402
    AutoModelForImageTextToText,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Idefics3Config,
    LlavaConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    SmolVLMConfig,
)

from cmr_rd.classes import CLASSES, FULL_NAMES  # noqa: E402
from cmr_rd.model.backbone import (  # noqa: E402
    END_OF_TURN,
    FORMAT_TAGS,
    FREEZE_MAPS,
    PARTS,
    BackboneError,
    TinyConfig,
    build_tiny,
    check_image_size,
    family_of,
    load_backbone,
    set_trainable,
)
from cmr_rd.prompts import DIAGNOSTIC_QUERY  # noqa: E402

torch.set_num_threads(1)

TARGET = (
    "<think>Patchy mid-wall LGE at the RV insertion points with a thick septum.</think>"
    "<location>[40,52,118,130]</location><answer>HCM</answer>"
)


def _corpus() -> list[str]:
    lines = [DIAGNOSTIC_QUERY]
    for i in range(60):
        for label in CLASSES:
            lines.append(
                f"<think>Case {i}: patchy mid-wall LGE at the RV insertion points, in keeping with "
                f"{FULL_NAMES[label]}.</think><location>[{i},{2 * i},{i + 100},{2 * i + 90}]"
                f"</location><answer>{label}</answer>"
            )
    return lines


def _image(seed: int = 0, size: int = 64) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def _messages(with_answer: bool = True) -> list[dict]:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": _image()},
                {"type": "text", "text": DIAGNOSTIC_QUERY},
            ],
        }
    ]
    if with_answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": TARGET}]})
    return messages


def _digests(folder: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", _corpus())


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    model, processor = load_backbone(str(tiny_dir))
    model.eval()
    return model, processor


# ---------------------------------------------------------------------------------------------
# build_tiny + load_backbone


def test_tiny_loads_back_as_a_small_gemma3_vlm(tiny, tiny_dir):
    model, processor = tiny
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert type(processor).__name__ == "Gemma3Processor"
    assert model.config._name_or_path == str(tiny_dir)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny Gemma3 parameters: {n_params}")
    assert 150_000 <= n_params <= 450_000
    cfg = TinyConfig()
    assert model.config.vision_config.image_size == cfg.image_size
    assert model.config.vision_config.vision_use_head is False
    assert processor.image_seq_length == model.config.mm_tokens_per_image == cfg.mm_tokens_per_image
    assert processor.image_processor.size["height"] == cfg.image_size
    check_image_size(processor, model)
    # The zero-initialised projector was given small random values.
    proj = model.model.multi_modal_projector.mm_input_projection_weight
    assert torch.count_nonzero(proj) == proj.numel()
    assert proj.abs().max() < 0.2
    tok = processor.tokenizer
    assert len(tok) == model.config.text_config.vocab_size
    for name, token in [
        ("bos_token", "<bos>"),
        ("eos_token", "<eos>"),
        ("pad_token", "<pad>"),
        ("boi_token", "<start_of_image>"),
        ("eoi_token", "<end_of_image>"),
        ("image_token", "<image_soft_token>"),
    ]:
        assert getattr(tok, name) == token
    assert tok.image_token_id == model.config.image_token_index
    assert tok.convert_tokens_to_ids(END_OF_TURN) in model.generation_config.eos_token_id


def test_forward_with_one_image_gives_logits(tiny):
    model, processor = tiny
    inputs = processor.apply_chat_template(
        _messages(with_answer=False),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 64, 64)
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(processor.tokenizer.image_token_id) == 16
    assert (
        ids.count(processor.tokenizer.bos_token_id) == 1
        and ids[0] == processor.tokenizer.bos_token_id
    )
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, len(ids), model.config.text_config.vocab_size)
    assert torch.isfinite(out.logits).all()
    # The image reaches the logits: another image changes them.
    other = processor.apply_chat_template(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": _image(seed=1)},
                    {"type": "text", "text": DIAGNOSTIC_QUERY},
                ],
            }
        ],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        assert not torch.allclose(model(**other).logits[0, -1], out.logits[0, -1])


def test_one_training_step_reaches_the_vision_tower(tiny_dir):
    # Gemma3's projector starts at zero; build_tiny re-initialises it so the vision tower gets a
    # gradient from the first step, with loss on the assistant tokens only.
    model, processor = load_backbone(str(tiny_dir))
    model.train()
    batch = processor.apply_chat_template(
        _messages(),
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        return_assistant_tokens_mask=True,
    )
    labels = batch["input_ids"].clone()
    labels[torch.as_tensor(batch.pop("assistant_masks")) == 0] = -100
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    patch = model.model.vision_tower.embeddings.patch_embedding.weight
    assert patch.grad is not None and patch.grad.abs().sum() > 0


class _ForceAfter(LogitsProcessor):
    """Force one token once `steps` tokens have been generated, to see that generation stops."""

    def __init__(self, prompt_len: int, steps: int, token_id: int) -> None:
        self.prompt_len, self.steps, self.token_id = prompt_len, steps, token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] - self.prompt_len >= self.steps:
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.token_id] = 0.0
        return scores


def test_generate_runs_and_stops_at_end_of_turn(tiny):
    model, processor = tiny
    inputs = processor.apply_chat_template(
        _messages(with_answer=False),
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert 1 <= out.shape[1] - prompt_len <= 5
    eot = processor.tokenizer.convert_tokens_to_ids(END_OF_TURN)
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=5,
            do_sample=False,
            logits_processor=LogitsProcessorList([_ForceAfter(prompt_len, 2, eot)]),
        )
    new = out[0, prompt_len:].tolist()
    assert len(new) == 3 and new[-1] == eot


def test_format_tags_are_single_ordinary_tokens_that_survive_decoding(tiny):
    tok = tiny[1].tokenizer
    special = set(tok.all_special_ids)
    for tag in FORMAT_TAGS:
        ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, tag
        assert ids[0] not in special, tag
        assert tok.convert_ids_to_tokens(ids[0]) == tag
    ids = tok(TARGET + END_OF_TURN, add_special_tokens=False)["input_ids"]
    # TRL decodes completions this way before the rewards see them.
    assert tok.decode(ids, skip_special_tokens=True) == TARGET
    assert tok.decode(ids) == TARGET + END_OF_TURN
    # Text the BPE never saw still round-trips (byte-level: no <unk>).
    odd = "Ödem – 3 mm² ✓"
    assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd


@pytest.mark.parametrize("with_image", [True, False])
def test_assistant_mask_is_exactly_the_answer_and_end_of_turn(tiny, with_image):
    processor = tiny[1]
    messages = _messages()
    if not with_image:
        messages[0]["content"] = [{"type": "text", "text": DIAGNOSTIC_QUERY}]
    out = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    assert len(ids) == len(mask)
    picked = [i for i, m in zip(ids, mask, strict=True) if m]
    first = list(mask).index(1)
    assert sum(mask) == len(picked) and all(mask[first : first + len(picked)])  # one span
    assert processor.tokenizer.decode(picked) == TARGET + END_OF_TURN
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text.endswith("<start_of_turn>model\n" + TARGET + "<end_of_turn>\n")


def test_trl_accepts_the_template_for_assistant_only_loss(tiny):
    from trl.chat_template_utils import has_generation_markers, is_chat_template_stop_token_trained

    processor = tiny[1]
    assert has_generation_markers(processor.chat_template)
    assert is_chat_template_stop_token_trained(processor)


def test_build_is_byte_deterministic(tiny_dir, tmp_path):
    again = build_tiny(tmp_path / "again", list(reversed(_corpus())))
    first = _digests(tiny_dir)
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(first)
    assert _digests(again) == first


def test_a_loaded_and_saved_processor_does_not_record_the_shell(tiny_dir, tmp_path):
    """Loading under HF_HUB_OFFLINE (as `make` runs) or without it saves the same processor
    files: transformers would keep `local_files_only` among the tokenizer's saved kwargs."""
    _, processor = load_backbone(str(tiny_dir))
    processor.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved/tokenizer_config.json").read_text())
    assert "local_files_only" not in saved


def test_build_refuses_a_non_square_token_count(tmp_path):
    with pytest.raises(BackboneError, match="perfect square"):
        build_tiny(tmp_path / "bad", _corpus(), TinyConfig(mm_tokens_per_image=12))


# ---------------------------------------------------------------------------------------------
# load_backbone errors


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def test_load_missing_path_is_one_line(tmp_path):
    with pytest.raises(BackboneError) as exc:
        load_backbone(str(tmp_path / "no" / "such" / "model"))
    assert "does not exist" in _one_line(exc)


def test_load_unknown_hub_id_offline_is_one_line():
    with pytest.raises(BackboneError) as exc:
        load_backbone("cmr-rd-test/definitely-not-a-model")
    message = _one_line(exc)
    assert "cmr-rd-test/definitely-not-a-model" in message and "offline" in message


def test_load_text_only_model_is_refused(tmp_path):
    config = Gemma3TextConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=16,
    )
    Gemma3ForCausalLM(config).save_pretrained(tmp_path / "text_only")
    with pytest.raises(BackboneError) as exc:
        load_backbone(str(tmp_path / "text_only"))
    message = _one_line(exc)
    assert "gemma3_text" in message and "not an image-text-to-text" in message


def test_load_model_without_processor_files_is_refused(tiny_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        (bare / name).write_bytes((tiny_dir / name).read_bytes())
    with pytest.raises(BackboneError) as exc:
        load_backbone(str(bare))
    assert str(bare) in _one_line(exc)


# ---------------------------------------------------------------------------------------------
# Freezing


_TEXT = dict(
    model_type="llama",
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
)
_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)


def _tiny_family(family: str):
    if family == "llava":
        config = LlavaConfig(
            vision_config=dict(model_type="clip_vision_model", projection_dim=32, **_VISION),
            text_config=_TEXT,
            image_token_index=100,
        )
    elif family == "qwen2_5_vl":
        config = Qwen2_5_VLConfig(
            vision_config=dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=32,
                fullatt_block_indexes=[1],
                patch_size=8,
                window_size=32,
            ),
            text_config=dict(
                vocab_size=128,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                bos_token_id=1,
                eos_token_id=2,
                rope_parameters={
                    "rope_type": "default",
                    "mrope_section": [2, 3, 3],
                    "rope_theta": 1e4,
                },
            ),
            image_token_id=100,
            video_token_id=101,
            vision_start_token_id=102,
            vision_end_token_id=103,
        )
    elif family == "smolvlm":
        config = SmolVLMConfig(vision_config=_VISION, text_config=_TEXT, image_token_id=100)
    elif family == "idefics3":
        config = Idefics3Config(vision_config=_VISION, text_config=_TEXT, image_token_id=100)
    else:
        raise AssertionError(family)
    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_config(config)


def _check_parts(model, family: str) -> None:
    total = sum(p.numel() for p in model.parameters())
    per_part = {}
    for part in PARTS:
        counts = set_trainable(model, [part])
        assert counts[part] > 0 and sum(counts.values()) == counts[part], (family, part)
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == counts[part]
        per_part[part] = counts[part]
    # Every parameter lands in exactly one part.
    assert sum(per_part.values()) == total
    assert set_trainable(model, PARTS) == per_part
    assert all(p.requires_grad for p in model.parameters())
    counts = set_trainable(model, ["projector"])
    projector = FREEZE_MAPS[family]["projector"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(projector + ".") for n in trainable)
    assert counts == {"vision": 0, "projector": per_part["projector"], "language": 0}
    assert set_trainable(model, []) == dict.fromkeys(PARTS, 0)
    assert not any(p.requires_grad for p in model.parameters())


def test_set_trainable_gemma3(tiny_dir):
    model, _ = load_backbone(str(tiny_dir))
    assert family_of(model) == "gemma3"
    _check_parts(model, "gemma3")
    counts = set_trainable(model, ["vision", "projector"])
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    assert counts["vision"] == vision and counts["language"] == 0


@pytest.mark.parametrize("family", ["llava", "qwen2_5_vl", "smolvlm", "idefics3"])
def test_set_trainable_other_families(family):
    model = _tiny_family(family)
    assert family_of(model) == family
    _check_parts(model, family)
    # Untied output head: counted with the language part.
    set_trainable(model, ["language"])
    assert model.lm_head.weight.requires_grad


def test_an_unmapped_parameter_is_an_error_naming_it(tiny_dir):
    model, _ = load_backbone(str(tiny_dir))
    model.value_head = torch.nn.Linear(4, 1)
    before = [p.requires_grad for p in model.parameters()]
    with pytest.raises(BackboneError, match=r"value_head\.weight"):
        set_trainable(model, ["projector"])
    assert [p.requires_grad for p in model.parameters()] == before  # nothing changed


def test_set_trainable_sees_through_a_peft_wrapper(tiny_dir):
    from peft import LoraConfig, get_peft_model

    model, _ = load_backbone(str(tiny_dir))
    lora = LoraConfig(r=2, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    peft_model = get_peft_model(model, lora)
    assert family_of(peft_model) == "gemma3"
    counts = set_trainable(peft_model, ["projector"])
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert counts["projector"] > 0 and counts["language"] == 0
    assert all("multi_modal_projector" in n for n in trainable)


def test_family_of_unknown_lists_supported():
    tok_model = Gemma3ForCausalLM(
        Gemma3TextConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=1,
            num_key_value_heads=1,
            head_dim=16,
        )
    )
    with pytest.raises(BackboneError) as exc:
        family_of(tok_model)
    message = _one_line(exc)
    assert "gemma3_text" in message
    for family in ("gemma3", "llava", "qwen2_5_vl", "smolvlm"):
        assert family in message
    with pytest.raises(BackboneError, match="unknown parts"):
        set_trainable(tok_model, ["decoder"])


def test_check_image_size_catches_a_mismatch(tiny_dir):
    model, processor = load_backbone(str(tiny_dir))
    check_image_size(processor, model)
    processor.image_processor.size = {"height": 32, "width": 32}
    with pytest.raises(BackboneError, match="32x32 != vision config image_size 64x64"):
        check_image_size(processor, model)


def test_tokenizer_is_a_plain_fast_tokenizer(tiny):
    # Saved as the generic backend so loading keeps our byte-level BPE instead of Gemma's
    # SentencePiece-style normaliser.
    assert isinstance(tiny[1].tokenizer, PreTrainedTokenizerFast)
