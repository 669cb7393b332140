"""Greedy decoding of a checkpoint on prompts, scored by the one strict format parser.

This is the check after each training stage (and the probe decoding GPPO's posteriors use), so
it decodes exactly as a rollout is read: the user turn and image with the generation prompt,
left-padded batches, `skip_special_tokens=True` (TRL's reward view), then `parse_completion`.
Greedy decoding with a fixed batch order makes the result a function of the checkpoint alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from cmr_rd.classes import CLASSES, canonical_label
from cmr_rd.format import parse_completion
from cmr_rd.model.backbone import BackboneError, check_image_size, load_backbone
from cmr_rd.model.runtime import TrainInputError, load_records, open_image


def prompt_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation up to (not including) the first assistant turn."""
    prompt = []
    for message in messages:
        if message.get("role") == "assistant":
            break
        prompt.append(message)
    return prompt


def generate_batch(
    model: Any, processor: Any, records: list[dict[str, Any]], max_new_tokens: int
) -> list[str]:
    """Greedy completions for records (user turn + image), left padding, special tokens dropped.

    The chat template already writes <bos>, so the processor must not add another one.
    """
    tokenizer = processor.tokenizer
    texts = [
        processor.apply_chat_template(
            prompt_messages(r["messages"]), add_generation_prompt=True, tokenize=False
        )
        for r in records
    ]
    images = [[open_image(p) for p in r.get("images") or []] for r in records]
    has_images = any(images)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        inputs = processor(
            text=texts,
            images=images if has_images else None,
            padding=True,
            max_length=None,  # the processor's saved text defaults carry one; padding=True wins
            add_special_tokens=False,
            return_tensors="pt",
        )
    finally:
        tokenizer.padding_side = side
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def greedy_completions(
    model: Any, processor: Any, records: list[dict[str, Any]], batch_size: int, max_new_tokens: int
) -> list[str]:
    """Greedy completions of every record, in order, `batch_size` records per generate call."""
    completions: list[str] = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        completions.extend(generate_batch(model, processor, batch, max_new_tokens))
    return completions


def check_checkpoint(
    model_path: Path,
    prompts_jsonl: Path,
    limit: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 256,
) -> dict:
    """Valid-format rate and accuracy of greedy completions; deterministic for a checkpoint.

    An answer counts as correct only inside a valid completion, as GPPO's answer reward does.
    """
    records = load_records(Path(prompts_jsonl), need_assistant=False)
    if limit is not None:
        records = records[:limit]
    try:
        model, processor = load_backbone(str(model_path))
        check_image_size(processor, model)
    except BackboneError as exc:
        raise TrainInputError(str(exc)) from exc
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    torch.manual_seed(0)

    started = time.perf_counter()
    completions = greedy_completions(model, processor, records, batch_size, max_new_tokens)
    seconds = time.perf_counter() - started

    n = len(records)
    valid = correct = 0
    by_class: dict[str, list[int]] = {}
    examples = []
    for record, text in zip(records, completions, strict=True):
        parsed = parse_completion(text)
        truth = canonical_label(record.get("label"))
        hit = parsed.valid and truth is not None and parsed.label == truth
        valid += parsed.valid
        correct += hit
        if truth is not None:
            by_class.setdefault(truth, []).append(int(hit))
        if len(examples) < 5:
            examples.append(
                {
                    "id": record.get("id"),
                    "label": truth,
                    "predicted": parsed.label,
                    "valid": parsed.valid,
                    "reason": parsed.reason,
                    "completion": text,
                }
            )
    order = [c for c in CLASSES if c in by_class] + sorted(set(by_class) - set(CLASSES))
    return {
        "model": str(model_path),
        "prompts": str(prompts_jsonl),
        "n": n,
        "valid_format_rate": valid / n,
        "accuracy": correct / n,
        "per_class_accuracy": {c: sum(by_class[c]) / len(by_class[c]) for c in order},
        "per_class_n": {c: len(by_class[c]) for c in order},
        "per_class_correct": {c: sum(by_class[c]) for c in order},
        "seconds": round(seconds, 3),
        "max_new_tokens": max_new_tokens,
        "examples": examples,
    }


def check_job(
    model: str,
    data: str,
    report_path: str,
    threads: int,
    limit: int | None,
    batch_size: int,
    max_new_tokens: int,
) -> dict:
    """The `sft_check` rule's work (run in a warm child by cmr_rd.warm.call): the report JSON
    at `report_path`, without its wall time; the report back."""
    torch.set_num_threads(threads)
    report = check_checkpoint(
        Path(model), Path(data), limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens
    )
    report.pop("seconds")  # wall time would make a deterministic rerun differ
    Path(report_path).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return {"report": report}
