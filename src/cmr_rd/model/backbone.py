"""The VLM backbone: build the tiny offline Gemma3, load any supported VLM, freeze by part.

A laptop or CI has no model weights, so the default backbone is a randomly initialised Gemma3 with
a BPE tokenizer trained on the project's own corpus. It is built with the real HF classes and
saved to disk, so the training code cannot tell it from MedGemma-4B except by size, and TRL can
rebuild its reference model from `config._name_or_path`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoProcessor,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    Gemma3TextConfig,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    SiglipVisionConfig,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from cmr_rd.format import TAGS
from cmr_rd.model import mask_expansion, token_check
from cmr_rd.model.runtime import missing_backbone

FORMAT_TAGS: tuple[str, ...] = TAGS

# Gemma's own token strings, so a real Gemma3/MedGemma processor and the tiny one read the same.
PAD, EOS, BOS, UNK, MASK = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
START_OF_TURN, END_OF_TURN = "<start_of_turn>", "<end_of_turn>"
BOI, EOI, IMAGE_TOKEN = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD,
    EOS,
    BOS,
    UNK,
    MASK,
    START_OF_TURN,
    END_OF_TURN,
    BOI,
    EOI,
    IMAGE_TOKEN,
)

# Gemma3's turn layout. The assistant's content and its <end_of_turn> sit inside
# {% generation %} so `return_assistant_tokens_mask` (TRL's assistant_only_loss) trains exactly the
# answer and the stop token; the newline after <end_of_turn> is outside, as it is never generated.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] | trim ~ '\\n\\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] | trim ~ '\\n\\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<start_of_turn>model\\n' -}}"
    "{%- generation -%}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] | trim -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}{{- item['text'] | trim -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<end_of_turn>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<start_of_turn>user\\n' -}}"
    "{%- if loop.first -%}{{- first_user_prefix -}}{%- endif -%}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] | trim -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<start_of_image>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] | trim -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<end_of_turn>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)


class BackboneError(RuntimeError):
    """A backbone that cannot be used, said in one line so a Snakemake log shows the cause."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of the offline backbone; the defaults learned the synthetic task fastest on 2 CPUs."""

    image_size: int = 64  # processor and SigLIP image size
    patch_size: int = 8
    mm_tokens_per_image: int = 16  # perfect square; == processor image_seq_length
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    text_kv_heads: int = 1
    text_head_dim: int = 32
    text_intermediate: int = 128
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 128
    vocab_size: int = 2048  # BPE vocabulary trained on the corpus (plus special/added tokens)
    max_position: int = 1024
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# Building the tiny backbone


def _check_tiny(cfg: TinyConfig) -> None:
    side = math.isqrt(cfg.mm_tokens_per_image)
    if side * side != cfg.mm_tokens_per_image:
        raise BackboneError(
            f"mm_tokens_per_image={cfg.mm_tokens_per_image} is not a perfect square"
        )
    if cfg.image_size % cfg.patch_size:
        raise BackboneError(f"image_size={cfg.image_size} is not a multiple of {cfg.patch_size}")
    patches = cfg.image_size // cfg.patch_size
    if patches % side:
        raise BackboneError(
            f"{patches}x{patches} patches cannot pool to {side}x{side} image tokens "
            f"(image_size/patch_size must be a multiple of sqrt(mm_tokens_per_image))"
        )


def _train_tokenizer(corpus: Iterable[str], cfg: TinyConfig) -> PreTrainedTokenizerFast:
    """Byte-level BPE: every string encodes (no <unk>) and decodes back to itself."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Sorted, so the merges depend on the lines and their counts, not on their order.
    lines = sorted(str(line) for line in corpus)
    if not lines:
        raise BackboneError("build_tiny needs a non-empty corpus to train the tokenizer")
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    # The format tags are ordinary added tokens: one id each, never split, and kept by
    # decode(skip_special_tokens=True), which TRL applies before the rewards see a completion.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in FORMAT_TAGS])
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        mask_token=MASK,
        # Named so Gemma3Processor finds tokenizer.boi_token / eoi_token / image_token.
        extra_special_tokens={"boi_token": BOI, "eoi_token": EOI, "image_token": IMAGE_TOKEN},
        padding_side="left",
        model_max_length=cfg.max_position,
    )


def _tiny_model_config(cfg: TinyConfig, tokenizer: PreTrainedTokenizerFast) -> Gemma3Config:
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_kv_heads,
        head_dim=cfg.text_head_dim,
        query_pre_attn_scalar=cfg.text_head_dim,
        max_position_embeddings=cfg.max_position,
        # Real Gemma3 interleaves sliding and full attention; keep both code paths, with a window
        # as long as the context so the tiny model sees the whole prompt in every layer.
        sliding_window=cfg.max_position,
        layer_types=["sliding_attention"] * (cfg.text_layers - 1) + ["full_attention"],
        pad_token_id=ids[PAD],
        eos_token_id=ids[EOS],
        bos_token_id=ids[BOS],
    )
    vision = SiglipVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=cfg.vision_intermediate,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        vision_use_head=False,
    )
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=cfg.mm_tokens_per_image,
        boi_token_index=ids[BOI],
        eoi_token_index=ids[EOI],
        image_token_index=ids[IMAGE_TOKEN],
        pad_token_id=ids[PAD],
        eos_token_id=ids[EOS],
        bos_token_id=ids[BOS],
    )


def build_tiny(out_dir: Path, corpus: Iterable[str], cfg: TinyConfig = TinyConfig()) -> Path:  # noqa: B008
    """Build, save and return the offline tiny Gemma3 backbone (byte-identical on rerun).

    The model is saved and then loaded from its path everywhere, because GRPOTrainer rebuilds the
    reference model from `config._name_or_path`; a model only in memory fails there.
    """
    _check_tiny(cfg)
    out_dir = Path(out_dir)
    tokenizer = _train_tokenizer(corpus, cfg)
    config = _tiny_model_config(cfg, tokenizer)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Gemma3ForConditionalGeneration(config)
        model.eval()
        proj = model.model.multi_modal_projector.mm_input_projection_weight
        # Gemma3 initialises the projector to zero (a pretrained checkpoint overwrites it). From
        # scratch that blocks the vision path: with W = 0 no gradient reaches the vision tower
        # until W has moved, so training first learns a text-only prior. Small seeded values give
        # the vision tower a gradient from step one.
        if torch.count_nonzero(proj) == 0:
            with torch.no_grad():
                proj.normal_(mean=0.0, std=config.text_config.initializer_range)

    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        # <end_of_turn> ends every assistant turn; without it generation runs to max_new_tokens.
        eos_token_id=[tokenizer.eos_token_id, eot],
        pad_token_id=tokenizer.pad_token_id,
    )

    image_processor = Gemma3ImageProcessorPil(
        size={"height": cfg.image_size, "width": cfg.image_size},
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        image_seq_length=cfg.mm_tokens_per_image,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


# ---------------------------------------------------------------------------------------------
# Loading


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_backbone(
    name_or_path: str, dtype: torch.dtype | None = None, processor_from: str | None = None
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Model and processor from a local folder or a cached hub id, or one clear BackboneError.

    The config is read first so a text-only model is refused by name instead of failing deep in
    AutoModelForImageTextToText with a page of traceback. `processor_from`: where the processor
    comes from when not from the weights' folder. A resumed run takes its weights from its
    checkpoint and its processor from the model it started from: a checkpoint's processor files
    carry the collator's padding settings (`max_length`, `pad_to_multiple_of`), and its `final/`
    would differ byte for byte from an uninterrupted run's.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    local = path.exists()
    if missing := missing_backbone(name):
        raise BackboneError(missing)
    source = str(path) if local else name
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    if local:
        where = "local folder"
    elif offline:
        where = "hub id, offline (HF_HUB_OFFLINE): local HF cache only"
    else:
        where = "hub id"
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise BackboneError(f"cannot load backbone {name} [{where}]: {_first_line(exc)}") from exc
    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise BackboneError(
            f"backbone {name} has model_type {model_type!r}, which is not an image-text-to-text "
            f"model (AutoModelForImageTextToText has no class for it)"
        )
    try:
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
        processor = AutoProcessor.from_pretrained(processor_from or source)
    except (OSError, ValueError, KeyError) as exc:
        raise BackboneError(f"cannot load backbone {name} [{where}]: {_first_line(exc)}") from exc
    if not isinstance(processor, ProcessorMixin):
        # AutoProcessor falls back to a bare tokenizer when the processor files are missing.
        raise BackboneError(
            f"backbone {name} has no multimodal processor (AutoProcessor gave "
            f"{type(processor).__name__}); save it with processor.save_pretrained"
        )
    # transformers keeps the load's `local_files_only` (true under HF_HUB_OFFLINE) among the
    # tokenizer's init kwargs and saves it: every model folder's bytes then depended on the shell.
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.init_kwargs.pop("local_files_only", None)
    # Gemma3's image-token check looped over every token in Python: the same check, vectorised.
    token_check.install()
    # Its attention masks went through four nested vmaps: the same masks, by broadcasting.
    mask_expansion.install()
    return model, processor


# ---------------------------------------------------------------------------------------------
# Freezing

# Module prefixes in transformers 5 (checked against 5.23's modeling files). The most specific
# matching prefix wins, so Qwen2.5-VL's merger (inside `model.visual`) counts as the projector.
FREEZE_MAPS: dict[str, dict[str, str]] = {
    "gemma3": {
        "vision": "model.vision_tower",
        "projector": "model.multi_modal_projector",
        "language": "model.language_model",
    },
    "llava": {
        "vision": "model.vision_tower",
        "projector": "model.multi_modal_projector",
        "language": "model.language_model",
    },
    "qwen2_5_vl": {
        "vision": "model.visual",
        "projector": "model.visual.merger",
        "language": "model.language_model",
    },
    "smolvlm": {
        "vision": "model.vision_model",
        "projector": "model.connector",
        "language": "model.text_model",
    },
    "idefics3": {
        "vision": "model.vision_model",
        "projector": "model.connector",
        "language": "model.text_model",
    },
}
PARTS: tuple[str, ...] = ("vision", "projector", "language")
# The output head belongs to the language part whether or not it is tied to the embeddings.
HEAD_PREFIX = "lm_head"
# A PEFT-wrapped model names the same parameters under this prefix.
_PEFT_PREFIX = "base_model.model."


def family_of(model: PreTrainedModel) -> str:
    """The freeze-map family of a model, from `config.model_type`."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FREEZE_MAPS:
        supported = ", ".join(sorted(FREEZE_MAPS))
        raise BackboneError(f"unsupported backbone family {model_type!r}; supported: {supported}")
    return model_type


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def part_of(name: str, family: str) -> str:
    """The part a parameter belongs to: its most specific matching prefix, lm_head -> language."""
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX) :]
    prefixes = [(prefix, part) for part, prefix in FREEZE_MAPS[family].items()]
    prefixes.append((HEAD_PREFIX, "language"))
    matches = [(len(prefix), part) for prefix, part in prefixes if _under(name, prefix)]
    if not matches:
        known = ", ".join(f"{part}={prefix}" for part, prefix in FREEZE_MAPS[family].items())
        raise BackboneError(
            f"parameter {name} belongs to none of the {family} parts ({known}, "
            f"language={HEAD_PREFIX}); the transformers layout may have changed"
        )
    return max(matches)[1]


def set_trainable(model: PreTrainedModel, parts: Iterable[str]) -> dict[str, int]:
    """Train exactly the named parts and freeze the rest; return trainable counts per part.

    Every parameter must map to a part, so a renamed module in a new transformers release is an
    error rather than a silently frozen (or silently trained) tower.
    """
    wanted = set(parts)
    unknown = wanted - set(PARTS)
    if unknown:
        raise BackboneError(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    family = family_of(model)
    # Resolve every name before changing anything, so an error leaves the model as it was.
    assignment = [(param, part_of(name, family)) for name, param in model.named_parameters()]
    counts = dict.fromkeys(PARTS, 0)
    for param, part in assignment:
        param.requires_grad_(part in wanted)
        if part in wanted:
            counts[part] += param.numel()
    return counts


def _hw(value: object) -> tuple[int, int] | None:
    """(height, width) from an int, a pair, or a size dict/object with height+width."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    get = value.get if isinstance(value, dict) else lambda key: getattr(value, key, None)
    height, width = get("height"), get("width")
    if height is not None and width is not None:
        return int(height), int(width)
    return None


def check_image_size(processor: ProcessorMixin, model: PreTrainedModel) -> None:
    """Refuse a processor that resizes to a size the vision tower was not built for.

    Gemma3/SigLIP learn one position embedding per patch of a fixed image size; a processor that
    feeds another size fails in the middle of training (or silently interpolates). Families with
    dynamic resolution (Qwen2.5-VL: no `image_size` in the vision config) have nothing to check;
    SmolVLM/Idefics3 tile the image, so their tile size (`max_image_size`) is what must match.
    """
    vision = getattr(model.config, "vision_config", None)
    expected = _hw(getattr(vision, "image_size", None))
    image_processor = getattr(processor, "image_processor", None)
    if expected is None or image_processor is None:
        return
    tile = getattr(image_processor, "max_image_size", None)
    if isinstance(tile, dict) and tile.get("longest_edge") is not None:
        got = _hw(int(tile["longest_edge"]))
    else:
        got = _hw(getattr(image_processor, "size", None))
    if got is None:
        return
    if got != expected:
        raise BackboneError(
            f"processor image size {got[0]}x{got[1]} != vision config image_size "
            f"{expected[0]}x{expected[1]}: rebuild the processor or the model with the same size"
        )
