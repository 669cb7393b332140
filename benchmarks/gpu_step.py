"""One SFT step and one GPPO step of a randomly initialised Gemma-3-4B on one GPU, timed by phase.

The model has the real shape (`cmr_rd.model.configs.gemma3_4b_config`, 4.30B parameters) and
random bf16 weights built on the device from the config: nothing is downloaded. Inputs go through
a real Gemma3Processor: 256x256 random RGB images resized to the tower's 896 px, and prompts in
the Gemma chat layout, each `<start_of_image>` expanded by the processor to 256 image tokens. The
processor's tokenizer is a small word-level one built here, whose special tokens carry Gemma 3's
ids; prompt and answer text are random words of fixed length, so every run sees the same shapes.

- SFT: batch 2, forward with the loss on the assistant tokens, backward, AdamW (clip 1.0) on the
  language model and projector with the vision tower frozen, as the project's SFT stage trains.
- GPPO: 2 prompts x G = 4 completions; generation (sampling, exactly --max-new-tokens new tokens),
  old log-probs (policy) and reference log-probs (a frozen bf16 copy of the policy made when the
  GPPO phase starts, as TRL keeps one), the GRPO loss (clipped surrogate eps 0.2, k3 KL beta 0.04,
  advantages = random reward - group mean), backward, AdamW.

Each phase is timed between torch.cuda.synchronize() calls, after warm-up steps; the report gives
medians. Input preparation (image processing, tokenisation) is outside the timings.

FLOPs (dense matmuls only; attention scores and lookups are left out): a forward pass costs 2
FLOPs per parameter per token it passes through: the language model's decoder layers per sequence
token, its output head (tied to the embeddings) per token whose logits are computed, the vision
tower per image patch and the projector per image token. Backward costs twice the forward of the
trained parts (4 per parameter per token: activation and weight gradients); the frozen tower sits
below every trained part and gets no backward. So a trained token costs 6N, an inferred one 2N.
MFU = FLOPs / time / the card's dense bf16 peak.

Runs on a GPU; `--scale 0.02 --device cpu` runs the same code on a shrunk model in seconds. Needs
only torch, transformers (with its tokenizers), numpy, PIL and cmr_rd.model.configs (PYTHONPATH=
src). Writes gpu_step.json and gpu_step.md under --out (default results/benchmarks).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import (
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    GenerationConfig,
    PreTrainedTokenizerFast,
)

from cmr_rd.model.configs import GEMMA3_IMAGE_PROCESSING, gemma3_4b_config, gemma3_token_ids

REPO = Path(__file__).resolve().parents[1]
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s; the most specific
# name that the device name contains wins.
PEAK_BF16_TFLOPS = {
    "H200 NVL": 835.0,
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,  # SXM / HBM3
    "A100": 312.0,
}
IMAGE_SIDE = 256  # input images, before the processor resizes them to the tower's size
QUESTION_WORDS = 96  # about the project's diagnostic query with its six options
ANSWER_WORDS = 160  # an SFT target: <think>...</think><location>...</location><answer>...
SFT_BATCH = 2  # the paper's per-card batch
GPPO_PROMPTS = 2
GPPO_G = 4
EPSILON = 0.2
BETA = 0.04
FLOP_COUNTING = (
    "dense matmuls only: forward 2 x parameters per token they act on (language model layers per "
    "sequence token, the tied output head per logit token, the vision tower per image patch, the "
    "projector per image token); backward 4 x for the trained parts (language model, head, "
    "projector); the frozen tower gets no backward; attention scores and lookups left out."
)
NO_GPU = "gpu_step: no GPU found (torch.cuda.is_available() is False); nothing measured"


# ---------------------------------------------------------------------------------------------
# Inputs


def build_processor(config) -> Gemma3Processor:
    """A Gemma3Processor configured like google/gemma-3-4b-it's, with a word-level tokenizer.

    The tokenizer knows Gemma's special tokens at their real ids (from the config) and plain words
    `w0`, `w1`, ... at ordinary ids, so the processor's own image-token expansion and the chat
    layout give the real model's sequence structure without the real tokenizer.
    """
    ids = gemma3_token_ids(config.text_config.vocab_size)
    first_word = ids["\n\n\n"] + 1
    n_words = min(2000, ids["<start_of_image>"] - first_word - 2)
    words = {
        w: first_word + i
        for i, w in enumerate(["user", "model"] + [f"w{i}" for i in range(n_words)])
    }
    tok = Tokenizer(models.WordLevel(vocab={**ids, **words}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = [t for t in ids if t.startswith("<")]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    # Newline runs are single tokens in Gemma's vocabulary; the longest match wins.
    tok.add_tokens([AddedToken(t, normalized=False) for t in ("\n\n\n", "\n\n", "\n")])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        padding_side="left",
    )
    side = config.vision_config.image_size
    image_processor = Gemma3ImageProcessorPil(
        size={"height": side, "width": side}, **GEMMA3_IMAGE_PROCESSING
    )
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=config.mm_tokens_per_image,
    )


def chat(question: str, answer: str | None = None) -> str:
    """Gemma's chat layout: the image before the text in the user turn, as its template puts it."""
    text = f"<bos><start_of_turn>user\n<start_of_image>{question}<end_of_turn>\n"
    text += "<start_of_turn>model\n"
    return text if answer is None else f"{text}{answer}<end_of_turn>\n"


def random_words(rng: np.random.Generator, n: int, vocab_words: int) -> str:
    return " ".join(f"w{i}" for i in rng.integers(0, vocab_words, size=n))


def make_inputs(processor, rng, batch: int, with_answer: bool, device, dtype) -> dict:
    words = sum(t[0] == "w" and t[1:].isdigit() for t in processor.tokenizer.get_vocab())
    images = [
        [Image.fromarray(rng.integers(0, 256, (IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8))]
        for _ in range(batch)
    ]
    questions = [random_words(rng, QUESTION_WORDS, words) for _ in range(batch)]
    prompts = [chat(q) for q in questions]
    texts = prompts
    if with_answer:
        texts = [chat(q, random_words(rng, ANSWER_WORDS, words)) for q in questions]
    enc = processor(text=texts, images=images, return_tensors="pt")
    out = {k: v.to(device) for k, v in enc.items()}
    out["pixel_values"] = out["pixel_values"].to(dtype)
    if with_answer:
        # Loss on the assistant tokens only: everything after the prompt (answer, <end_of_turn>,
        # newline). Equal word counts give equal lengths, so there is no padding to mask.
        prompt_ids = processor(text=prompts, images=images, return_tensors="pt")["input_ids"]
        prompt_len = prompt_ids.shape[1]
        labels = out["input_ids"].clone()
        labels[:, :prompt_len] = -100
        out["labels"] = labels
    return out


# ---------------------------------------------------------------------------------------------
# FLOP counting


@dataclass(frozen=True)
class Counts:
    """Parameters that do multiply-adds, by where they act (lookup tables left out)."""

    vision: int  # per image patch
    projector: int  # per image token
    lm_body: int  # decoder layers and final norm, per sequence token
    head: int  # output head (tied to the token embeddings), per token whose logits are computed
    total: int  # every parameter once (tied ones once)
    patches: int  # per image
    image_tokens: int  # per image

    @classmethod
    def of(cls, model) -> Counts:
        inner, cfg = model.model, model.config
        # The position table is a lookup; found by name, as the tower's layout differs between
        # transformers releases.
        vision = sum(
            p.numel()
            for n, p in inner.vision_tower.named_parameters()
            if not n.endswith("position_embedding.weight")
        )
        embed = inner.language_model.embed_tokens.weight.numel()
        lm = sum(p.numel() for p in inner.language_model.parameters())
        side = cfg.vision_config.image_size // cfg.vision_config.patch_size
        return cls(
            vision=vision,
            projector=sum(p.numel() for p in inner.multi_modal_projector.parameters()),
            lm_body=lm - embed,
            head=model.lm_head.weight.numel(),
            total=sum(p.numel() for p in model.parameters()),
            patches=side * side,
            image_tokens=cfg.mm_tokens_per_image,
        )

    def forward(self, tokens: int, logit_tokens: int, images: int) -> float:
        per_image = self.vision * self.patches + self.projector * self.image_tokens
        return 2.0 * (self.lm_body * tokens + self.head * logit_tokens + per_image * images)

    def backward(self, tokens: int, logit_tokens: int, images: int) -> float:
        trained = self.lm_body * tokens + self.head * logit_tokens
        return 4.0 * (trained + self.projector * self.image_tokens * images)


# ---------------------------------------------------------------------------------------------
# Timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Phases:
    """Per-phase durations of the timed repeats (warm-up calls are not recorded)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.recording = False
        self.times: dict[str, list[float]] = {}

    def run(self, name: str, fn: Callable, *args, **kwargs):
        sync(self.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(self.device)
        if self.recording:
            self.times.setdefault(name, []).append(time.perf_counter() - start)
        return out


def peak_tflops(device: torch.device) -> tuple[float | None, str | None]:
    """The card's dense bf16 peak, or None with the reason there is none."""
    if device.type != "cuda":
        return None, f"no bf16 peak for device type {device.type!r}: MFU is defined for GPUs here"
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_BF16_TFLOPS[key], None
    known = ", ".join(PEAK_BF16_TFLOPS)
    return None, f"{name!r} is not in the peak table ({known}): MFU not computed"


def summarise(times: list[float], tokens: int, flops: float, peak: float | None) -> dict:
    median = statistics.median(times)
    return {
        "times_s": [round(t, 4) for t in times],
        "median_s": round(median, 4),
        "tokens": tokens,
        "tokens_per_s": round(tokens / median, 1),
        "tflop": round(flops / 1e12, 3),
        "tflop_per_s": round(flops / median / 1e12, 2),
        "mfu": None if peak is None else round(flops / median / (peak * 1e12), 4),
    }


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


# ---------------------------------------------------------------------------------------------
# The steps


def set_trainable(model) -> int:
    """Language model (with the tied head) and projector train; the vision tower is frozen."""
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith("model.vision_tower."))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_optimizer(model, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=device.type == "cuda")


def optimizer_step(model, optimizer) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_sft(model, processor, args, device, dtype, counts, peak) -> dict:
    rng = np.random.default_rng(args.seed)
    batch = make_inputs(processor, rng, SFT_BATCH, True, device, dtype)
    optimizer = make_optimizer(model, device)
    phases = Phases(device)
    model.train()
    reset_peak(device)
    for i in range(args.warmup + args.repeats):
        phases.recording = i >= args.warmup
        loss = phases.run("forward", model, **batch, use_cache=False).loss
        phases.run("backward", loss.backward)
        phases.run("optimizer", optimizer_step, model, optimizer)
    peak_mem = peak_gib(device)
    rows, length = batch["input_ids"].shape
    tokens = rows * length
    fwd = counts.forward(tokens, tokens, rows)
    bwd = counts.backward(tokens, tokens, rows)
    step_times = [sum(ts) for ts in zip(*phases.times.values(), strict=True)]
    return {
        "batch": rows,
        "seq_len": length,
        "assistant_tokens_per_sample": int((batch["labels"][0] != -100).sum()),
        "loss": round(float(loss.detach()), 4),
        "phases": {
            "forward": summarise(phases.times["forward"], tokens, fwd, peak),
            "backward": summarise(phases.times["backward"], tokens, bwd, peak),
            "optimizer": summarise(phases.times["optimizer"], tokens, 0.0, peak),
        },
        "step": summarise(step_times, tokens, fwd + bwd, peak),
        "peak_memory_gib": peak_mem,
    }


def completion_logprobs(model, inputs: dict, completion: torch.Tensor) -> torch.Tensor:
    """Per-token log-probs of the completion; logits only for the completion positions."""
    n = completion.shape[1]
    logits = model(**inputs, logits_to_keep=n + 1, use_cache=False).logits[:, :-1]
    logps = torch.log_softmax(logits.float(), dim=-1)
    return logps.gather(-1, completion.unsqueeze(-1)).squeeze(-1)


def grpo_loss(logps, old_logps, ref_logps, advantages, mask) -> torch.Tensor:
    """TRL's `loss_type="grpo"`: clipped surrogate and k3 KL, per-sequence token means."""
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - EPSILON, 1 + EPSILON)
    surrogate = torch.min(ratio * advantages[:, None], clipped * advantages[:, None])
    delta = ref_logps - logps
    kl = torch.exp(delta) - delta - 1
    per_token = -(surrogate - BETA * kl)
    return ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def loss_backward(model, inputs, completion, old, ref, advantages, mask) -> torch.Tensor:
    loss = grpo_loss(completion_logprobs(model, inputs, completion), old, ref, advantages, mask)
    loss.backward()
    return loss


def run_gppo(model, processor, args, device, dtype, counts, peak) -> dict:
    rng = np.random.default_rng(args.seed + 1)
    prompts = make_inputs(processor, rng, GPPO_PROMPTS, False, device, dtype)
    # Every prompt G times in a row, as TRL's sampler repeats them; each copy keeps its image.
    batch = {k: v.repeat_interleave(GPPO_G, dim=0) for k, v in prompts.items()}
    rows, prompt_len = batch["input_ids"].shape
    eos = model.config.eos_token_id
    gen_config = GenerationConfig(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        # A fixed completion length, so tokens/s compares across runs and cards.
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
        eos_token_id=eos,
        pad_token_id=model.config.pad_token_id,
        bos_token_id=model.config.bos_token_id,
    )
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = make_optimizer(model, device)
    phases = Phases(device)
    reset_peak(device)
    for i in range(args.warmup + args.repeats):
        phases.recording = i >= args.warmup
        model.eval()
        with torch.no_grad():
            seqs = phases.run("generate", model.generate, **batch, generation_config=gen_config)
        completion = seqs[:, prompt_len:]
        # Tokens after the first end-of-sequence are padding (none here: min_new_tokens).
        is_end = torch.isin(completion, torch.tensor(eos, device=device))
        mask = (is_end.cumsum(1) - is_end.long() == 0).to(torch.float32)
        full = {
            "input_ids": seqs,
            "attention_mask": torch.cat([batch["attention_mask"], mask.long()], dim=1),
            "token_type_ids": torch.cat(
                [batch["token_type_ids"], torch.zeros_like(completion)], dim=1
            ),
            "pixel_values": batch["pixel_values"],
        }
        with torch.no_grad():
            old = phases.run("old_logprobs", completion_logprobs, model, full, completion)
            ref_lp = phases.run("ref_logprobs", completion_logprobs, ref, full, completion)
        rewards = torch.as_tensor(rng.random(rows), dtype=torch.float32, device=device)
        groups = rewards.view(-1, GPPO_G)
        advantages = (groups - groups.mean(1, keepdim=True)).view(-1)
        model.train()

        loss = phases.run(
            "loss_backward", loss_backward, model, full, completion, old, ref_lp, advantages, mask
        )
        phases.run("optimizer", optimizer_step, model, optimizer)
    peak_mem = peak_gib(device)
    new = completion.shape[1]
    seq_tokens = rows * (prompt_len + new)
    logit_tokens = rows * (new + 1)
    # Generation: prefill of the prompts (logits for the last position only), then one decode
    # pass per new token but the last; one image per row.
    gen_flops = counts.forward(rows * (prompt_len + new - 1), rows * new, rows)
    score = counts.forward(seq_tokens, logit_tokens, rows)
    train = score + counts.backward(seq_tokens, logit_tokens, rows)
    step_times = [sum(ts) for ts in zip(*phases.times.values(), strict=True)]
    return {
        "prompts": GPPO_PROMPTS,
        "group_size": GPPO_G,
        "sequences": rows,
        "generated_shape": list(seqs.shape),
        "prompt_len": prompt_len,
        "new_tokens_per_sequence": new,
        "reference": "a frozen deep copy of the policy (same dtype) made as the GPPO phase starts",
        "loss": round(float(loss.detach()), 4),
        "phases": {
            "generate": summarise(phases.times["generate"], rows * new, gen_flops, peak),
            "old_logprobs": summarise(phases.times["old_logprobs"], seq_tokens, score, peak),
            "ref_logprobs": summarise(phases.times["ref_logprobs"], seq_tokens, score, peak),
            "loss_backward": summarise(phases.times["loss_backward"], seq_tokens, train, peak),
            "optimizer": summarise(phases.times["optimizer"], seq_tokens, 0.0, peak),
        },
        "step": summarise(step_times, rows * new, gen_flops + 2 * score + train, peak),
        "peak_memory_gib": peak_mem,
    }


# ---------------------------------------------------------------------------------------------
# Report


def markdown(result: dict) -> str:
    dev = result["device"]
    lines = [
        "# GPU step benchmark (`benchmarks/gpu_step.py`)",
        "",
        f"Device: {dev['name']}, dense bf16 peak {dev['peak_bf16_tflops']} TFLOP/s"
        + (f" (MFU null: {dev['mfu_note']})" if dev["mfu_note"] else "")
        + f". Model: Gemma-3-4B shape at scale {result['scale']}, "
        f"{result['params']['total']:,} parameters ({result['params']['trainable']:,} trained), "
        f"{result['dtype']}, attention {result['attn_implementation']}; built in "
        f"{result['build_s']} s. torch {result['versions']['torch']}, transformers "
        f"{result['versions']['transformers']}. Medians of {result['repeats']} repeats after "
        f"{result['warmup']} warm-up.",
        "",
        "| step | phase | median s | tokens | tokens/s | TFLOP/s | MFU |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ("sft", "gppo"):
        block = result[kind]
        for name, p in [*block["phases"].items(), ("whole step", block["step"])]:
            mfu = "-" if p["mfu"] is None else f"{p['mfu']:.1%}"
            lines.append(
                f"| {kind} | {name} | {p['median_s']:.3f} | {p['tokens']:,} | "
                f"{p['tokens_per_s']:,.0f} | {p['tflop_per_s']:.1f} | {mfu} |"
            )
    sft, gppo = result["sft"], result["gppo"]
    lines += [
        "",
        f"SFT: batch {sft['batch']} x {sft['seq_len']} tokens "
        f"({sft['assistant_tokens_per_sample']} assistant tokens a sample); "
        f"peak memory {sft['peak_memory_gib']} GiB.",
        f"GPPO: {gppo['prompts']} prompts x G = {gppo['group_size']}, generated "
        f"{gppo['generated_shape']} ({gppo['prompt_len']} prompt + "
        f"{gppo['new_tokens_per_sequence']} new tokens); reference: {gppo['reference']}; peak "
        f"memory {gppo['peak_memory_gib']} GiB.",
        "Tokens: SFT and log-prob/loss phases count every sequence token; generation counts new "
        "tokens (the whole GPPO step too). Generation is transformers' `generate` in eager "
        "PyTorch (no CUDA graphs, no vLLM), as TRL runs it without vLLM. FLOPs: "
        + result["flop_counting"],
        "",
    ]
    return "\n".join(lines)


def resolve_device(args) -> torch.device | None:
    if torch.cuda.is_available() and args.device != "cpu":
        return torch.device("cuda")
    if args.require_gpu:
        return None
    if args.device == "cpu" or (args.device == "auto" and args.scale < 1):
        return torch.device("cpu")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the model (tests)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 without a GPU")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None,
                        help="default bfloat16 on a GPU, float32 on the CPU")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.repeats < 1:
        parser.error("--warmup and --repeats must be >= 1")

    device = resolve_device(args)
    if device is None:
        print(NO_GPU)
        return 1 if args.require_gpu else 0
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    torch.manual_seed(args.seed)
    config = gemma3_4b_config(args.scale)
    processor = build_processor(config)

    def log(msg: str) -> None:
        print(f"gpu_step: {msg}", file=sys.stderr, flush=True)

    sync(device)
    start = time.perf_counter()
    # Built directly on the device in the target dtype: no CPU copy, no fp32 detour.
    with torch.device(device):
        model = Gemma3ForConditionalGeneration._from_config(config, dtype=dtype)
    sync(device)
    build_s = round(time.perf_counter() - start, 2)
    trainable = set_trainable(model)
    counts = Counts.of(model)
    peak, mfu_note = peak_tflops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    log(f"built {counts.total:,} parameters on {name} in {build_s} s")

    sft = run_sft(model, processor, args, device, dtype, counts, peak)
    log(f"SFT step {sft['step']['median_s']} s, {sft['step']['tokens_per_s']} tokens/s")
    gppo = run_gppo(model, processor, args, device, dtype, counts, peak)
    log(f"GPPO step {gppo['step']['median_s']} s, generated {gppo['generated_shape']}")

    result = {
        "benchmark": "gpu_step",
        "device": {
            "type": device.type,
            "name": name,
            "peak_bf16_tflops": peak,
            "mfu_note": mfu_note,
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "scale": args.scale,
        "dtype": str(dtype).removeprefix("torch."),
        "attn_implementation": model.config._attn_implementation,
        "image_size": config.vision_config.image_size,
        "input_image_side": IMAGE_SIDE,
        "mm_tokens_per_image": config.mm_tokens_per_image,
        "params": {**asdict(counts), "trainable": trainable},
        "build_s": build_s,
        "flop_counting": FLOP_COUNTING,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "sft": sft,
        "gppo": gppo,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_step.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "gpu_step.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
