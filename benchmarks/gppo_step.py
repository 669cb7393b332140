"""GPPO phase steps against a plain GRPOTrainer, on the same model and prompts, in one process.

`ours` is the phase exactly as the gppo_train rule runs it (`cmr_rd.gppo.train.make_trainer`: the
quota-ordered phase dataset, the three rewards, the batch recorder). `plain` is TRL's GRPOTrainer
with the same GRPOConfig sizes but its own shuffled sampler over the natural prompt pool and a
single trivial reward. The two alternate for several rounds so drift on a shared machine hits
both; each round loads a fresh copy of the checkpoint.

Generation dominates a step and its cost grows with completion length, which differs between two
sampled runs, so the report gives rollouts/s and completion tokens/s; the overhead figure uses
tokens/s. Needs the demo's outputs (`make demo`). Writes results/benchmarks/gppo_step.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from cmr_rd.devtools import REPO
from cmr_rd.gppo.rewards import RewardConfig
from cmr_rd.gppo.train import (
    BatchRecorder,
    GPPOConfig,
    batch_arithmetic,
    build_prompt_dataset,
    load_policy,
    make_trainer,
)
from cmr_rd.model.runtime import load_records

RUN = "results/gppo/sft-ts-iou/seed1/phase1/dataset.jsonl"


def _tokens(trainer) -> float:
    lengths = [e["completions/mean_length"] for e in trainer.state.log_history if "loss" in e]
    return sum(lengths) * trainer.args.generation_batch_size


def run_ours(model_path: Path, data: Path, cfg: GPPOConfig, out: Path) -> dict:
    model, processor = load_policy(model_path, model_path)
    records = load_records(data, need_assistant=False)
    recorder = BatchRecorder(out, 1, cfg.num_generations, True)
    out.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(
        model, processor, build_prompt_dataset(records), out, cfg, RewardConfig(), 1, 1, recorder
    )
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    return {
        "wall": wall,
        "steps": trainer.state.global_step,
        "rollouts": trainer.rollouts,
        "tokens": _tokens(trainer),
        "split": trainer.time_split(),
    }


def run_plain(model_path: Path, prompts: Path, cfg: GPPOConfig, out: Path) -> dict:
    from trl import GRPOConfig, GRPOTrainer

    def has_answer(completions, **kwargs):
        return [float("<answer>" in c[0]["content"]) for c in completions]

    model, processor = load_policy(model_path, model_path)
    sizes = batch_arithmetic(cfg, 1)
    args = GRPOConfig(
        output_dir=str(out), max_steps=cfg.max_steps, num_generations=cfg.num_generations,
        per_device_train_batch_size=sizes["per_device_train_batch_size"],
        gradient_accumulation_steps=sizes["gradient_accumulation_steps"],
        learning_rate=cfg.lr, lr_scheduler_type=cfg.lr_scheduler, beta=cfg.beta,
        temperature=cfg.temperature,
        max_completion_length=cfg.max_completion_length, use_cpu=not torch.cuda.is_available(),
        save_strategy="no", report_to=[], disable_tqdm=True, logging_steps=1,
        remove_unused_columns=False, seed=cfg.seed,
    )  # fmt: skip
    records = load_records(prompts, need_assistant=False)
    trainer = GRPOTrainer(
        model=model, args=args, reward_funcs=[has_answer],
        train_dataset=build_prompt_dataset(records), processing_class=processor,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    steps = trainer.state.global_step
    return {
        "wall": wall,
        "steps": steps,
        "rollouts": steps * args.generation_batch_size,
        "tokens": _tokens(trainer),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="results/model/sft/seed1/final")
    parser.add_argument("--data", default=RUN)
    parser.add_argument("--prompts", default="results/datasets/rl_prompts.jsonl")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    os.chdir(REPO)
    torch.set_num_threads(2)
    cfg = GPPOConfig(max_steps=args.steps, batch_prompts=8, micro_batch=32, save_steps=10**6)
    tmp = Path(args.out) / "gppo_step_work"
    runs = {"ours": [], "plain": []}
    for r in range(args.rounds):
        runs["ours"].append(run_ours(Path(args.model), Path(args.data), cfg, tmp / f"ours{r}"))
        runs["plain"].append(run_plain(Path(args.model), Path(args.prompts), cfg, tmp / f"p{r}"))
        walls = [runs[k][-1]["wall"] for k in ("ours", "plain")]
        print(f"round {r}: ours {walls[0]:.1f} s, plain {walls[1]:.1f} s")

    def rates(kind: str) -> dict:
        rows = runs[kind]
        return {
            "rollouts_per_s": statistics.median(x["rollouts"] / x["wall"] for x in rows),
            "tokens_per_s": statistics.median(x["tokens"] / x["wall"] for x in rows),
            "steps_per_s": statistics.median(x["steps"] / x["wall"] for x in rows),
        }

    ours, plain = rates("ours"), rates("plain")
    split = {
        k: round(sum(x["split"][k] for x in runs["ours"]), 3) for k in runs["ours"][0]["split"]
    }
    total = sum(x["wall"] for x in runs["ours"])
    split["optimizer_and_other"] = round(total - sum(split.values()), 3)
    result = {
        "device": "cuda" if torch.cuda.is_available() else "cpu (2 threads)",
        "model": args.model,
        "steps_per_run": args.steps,
        "rounds": args.rounds,
        "prompts_per_step": cfg.batch_prompts,
        "num_generations": cfg.num_generations,
        "ours": ours,
        "plain": plain,
        "ratio_tokens_per_s": ours["tokens_per_s"] / plain["tokens_per_s"],
        "ratio_rollouts_per_s": ours["rollouts_per_s"] / plain["rollouts_per_s"],
        "overhead_percent": 100 * (1 - ours["tokens_per_s"] / plain["tokens_per_s"]),
        "time_split_seconds": split,
        "time_split_share": {k: round(v / total, 3) for k, v in split.items()},
        "runs": runs,
    }
    out = Path(args.out)
    (out / "gppo_step.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# GPPO step vs plain GRPOTrainer (same model, same sizes, one process)",
        "",
        f"{args.rounds} alternating rounds of {args.steps} steps each; medians. "
        f"{cfg.batch_prompts} prompts x G={cfg.num_generations} per step; {result['device']}.",
        "",
        "| trainer | rollouts/s | completion tokens/s | optimizer steps/s |",
        "|---|---|---|---|",
    ]
    for name, r in (("ours (GPPO phase)", ours), ("plain GRPOTrainer", plain)):
        lines.append(
            f"| {name} | {r['rollouts_per_s']:.2f} | {r['tokens_per_s']:.1f} | "
            f"{r['steps_per_s']:.3f} |"
        )
    lines += [
        "",
        f"Ratio ours/plain: tokens/s {result['ratio_tokens_per_s']:.3f}, rollouts/s "
        f"{result['ratio_rollouts_per_s']:.3f}; overhead {result['overhead_percent']:.1f}% "
        "(target <= 5%).",
        "",
        "Time split of our steps: "
        + ", ".join(f"{k} {v * 100:.1f}%" for k, v in result["time_split_share"].items()),
    ]
    (out / "gppo_step.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
