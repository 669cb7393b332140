"""Evaluation throughput: batched greedy decoding against one-at-a-time, and the cost of scoring.

On the same N test samples, in one process, the rounds alternate (a) `generate_batch` in batches
of 16 and of 64 with (b) one `generate_batch` call per sample, so drift on a shared machine hits
every mode; the report gives median samples/s and generated tokens/s per mode and the batched /
one-at-a-time ratio. It also times the per-class answer likelihoods (`answer_loglikelihoods`)
against decoding and counts their forward passes, which must be 2 ceil(N / score_batch_size):
the shared prefixes of a chunk, then all its continuations on their cache, never a generate
call. Batched and one-at-a-time greedy decoding need not produce identical text (left padding
changes float rounding); the share of identical completions is reported too.

Uses results/model/sft/seed1/final and results/datasets/test.jsonl when both exist (`make demo`),
else a tiny random backbone and synthetic records in a temporary folder.
Writes results/benchmarks/eval_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from cmr_rd.classes import CLASSES
from cmr_rd.devtools import REPO
from cmr_rd.evaluate.harness import load_model, load_test_records
from cmr_rd.evaluate.scoring import answer_loglikelihoods, count_forward_passes
from cmr_rd.format import render_target
from cmr_rd.model.backbone import TinyConfig, build_tiny
from cmr_rd.model.generate import generate_batch
from cmr_rd.prompts import DIAGNOSTIC_QUERY

MODEL = "results/model/sft/seed1/final"
TEST = "results/datasets/test.jsonl"
MODES = {"batch16": 16, "batch64": 64, "one_at_a_time": 1}


def synthetic(root: Path, n: int) -> tuple[Path, Path]:
    """A tiny random backbone and n noise-image prompt records cycling through the classes."""
    corpus = [DIAGNOSTIC_QUERY] + [
        render_target(f"The pattern suggests {c}.", (10, 20, 200, 220), c) for c in CLASSES
    ]
    model = build_tiny(root / "model", corpus, TinyConfig())
    rng = random.Random(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        path = root / "images" / f"{i}.png"
        pixels = bytes(rng.randrange(256) for _ in range(256 * 256))
        Image.frombytes("L", (256, 256), pixels).save(path)
        content = [{"type": "image"}, {"type": "text", "text": DIAGNOSTIC_QUERY}]
        record = {
            "id": f"s{i}",
            "patient": f"P{i}",
            "images": [str(path)],
            "messages": [{"role": "user", "content": content}],
            "label": label,
            "box": [40, 40, 120, 120] if label == "MI" else None,
        }
        lines.append(json.dumps(record) + "\n")
    test = root / "test.jsonl"
    test.write_text("".join(lines))
    return model, test


def decode(model, processor, records, batch: int, max_new_tokens: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    out: list[str] = []
    for start in range(0, len(records), batch):
        out.extend(generate_batch(model, processor, records[start : start + batch], max_new_tokens))
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--test", default=TEST)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--score-batch-size", type=int, default=16)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    os.chdir(REPO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not torch.cuda.is_available():
        torch.set_num_threads(2)

    with tempfile.TemporaryDirectory() as tmp:
        if Path(args.model).exists() and Path(args.test).is_file():
            model_ref, test, source = args.model, Path(args.test), "pipeline checkpoint"
        else:
            model_path, test = synthetic(Path(tmp), args.samples)
            model_ref, source = str(model_path), "tiny random backbone (no checkpoint found)"
        records = load_test_records(test, limit=args.samples)
        model, processor = load_model(model_ref)
        torch.manual_seed(0)
        decode(model, processor, records[:2], 2, 8)  # warm-up: first-call allocations

        seconds: dict[str, list[float]] = {m: [] for m in MODES}
        texts: dict[str, list[str]] = {}
        scoring: list[float] = []
        passes = []
        for r in range(args.rounds):
            order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
            for mode in order:
                wall, out = decode(model, processor, records, MODES[mode], args.max_new_tokens)
                seconds[mode].append(wall)
                texts[mode] = out
            started = time.perf_counter()
            with count_forward_passes(model) as counter:
                answer_loglikelihoods(
                    model, processor, records, texts["batch16"], batch_size=args.score_batch_size
                )
            scoring.append(time.perf_counter() - started)
            passes.append(counter.calls)
            print(
                f"round {r}: "
                + ", ".join(f"{m} {seconds[m][-1]:.2f} s" for m in MODES)
                + f", scoring {scoring[-1]:.2f} s ({counter.calls} forward passes)"
            )

    n = len(records)
    tokenizer = processor.tokenizer
    rates = {}
    for mode in MODES:
        tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts[mode])
        wall = statistics.median(seconds[mode])
        rates[mode] = {
            "batch_size": MODES[mode],
            "median_seconds": round(wall, 3),
            "samples_per_s": round(n / wall, 3),
            "generated_tokens": tokens,
            "tokens_per_s": round(tokens / wall, 1),
            "seconds_per_round": [round(s, 3) for s in seconds[mode]],
        }
    single = rates["one_at_a_time"]["samples_per_s"]
    decode16 = statistics.median(seconds["batch16"])
    score = statistics.median(scoring)
    same = {
        m: sum(a == b for a, b in zip(texts[m], texts["one_at_a_time"], strict=True)) / n
        for m in ("batch16", "batch64")
    }
    result = {
        "device": "cuda" if torch.cuda.is_available() else "cpu (2 threads)",
        "model": model_ref,
        "source": source,
        "samples": n,
        "rounds": args.rounds,
        "max_new_tokens": args.max_new_tokens,
        "decoding": rates,
        "speedup_vs_one_at_a_time": {
            m: round(rates[m]["samples_per_s"] / single, 3) for m in ("batch16", "batch64")
        },
        "identical_to_one_at_a_time": {m: round(v, 3) for m, v in same.items()},
        "scoring": {
            "score_batch_size": args.score_batch_size,
            "median_seconds": round(score, 3),
            "seconds_per_round": [round(s, 3) for s in scoring],
            "forward_passes": passes[-1],
            "expected_forward_passes": 2 * math.ceil(n / args.score_batch_size),
            "rows_per_forward": args.score_batch_size * len(CLASSES),
            "ratio_to_batch16_decoding": round(score / decode16, 3),
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    s = result["scoring"]
    lines = [
        "# Evaluation throughput: batched vs one-at-a-time greedy decoding, and scoring cost",
        "",
        f"{n} samples, {source} ({model_ref}), max_new_tokens {args.max_new_tokens}, "
        f"{result['device']}; {args.rounds} alternating rounds, medians.",
        "",
        "| decoding | samples/s | generated tokens/s | x one-at-a-time | identical text |",
        "|---|---|---|---|---|",
    ]
    for mode, r in rates.items():
        ratio = r["samples_per_s"] / single
        ident = f"{same[mode]:.3f}" if mode in same else "(reference)"
        lines.append(
            f"| {mode} | {r['samples_per_s']:.2f} | {r['tokens_per_s']:.1f} | {ratio:.2f} | "
            f"{ident} |"
        )
    lines += [
        "",
        f"Answer likelihoods for {len(CLASSES)} classes: {s['median_seconds']:.2f} s "
        f"({s['ratio_to_batch16_decoding']:.2f} x the batch-16 decoding time), "
        f"{s['forward_passes']} forward passes for {n} samples (expected 2 ceil({n}/"
        f"{args.score_batch_size}) = {s['expected_forward_passes']}: each chunk's shared prefixes, "
        f"then its {s['rows_per_forward']} continuations; no generate calls).",
    ]
    (out / "eval_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
