"""One GPPO phase: GRPO with TRL's GRPOTrainer on a quota-ordered phase dataset.

What the paper fixes, and how it maps onto TRL 1.16:

- G completions per prompt, advantage A = R - group mean with no std scaling
  (`scale_rewards="none"`), the clipped surrogate with ε (`loss_type="grpo"`, `epsilon`), the k3 KL
  estimator with β against the SFT checkpoint (`use_bias_correction_kl=False`), and an entropy
  bonus η (`entropy_coef`);
- every generation batch is one quota batch of B prompts. TRL draws generation batches from a
  RepeatSampler over the dataset in order (`shuffle_dataset=False`) in chunks of
  `generation_batch_size / G` prompts, and silently drops a short last chunk; the phase dataset is
  therefore built as whole batches of B, and the batch arithmetic below makes
  `generation_batch_size = B * G` with one optimizer step per generation batch;
- the KL reference is the SFT checkpoint for every phase, not the phase's starting checkpoint:
  TRL builds the reference from `model.config._name_or_path`, so that is pointed at the SFT folder.

`BatchRecorder` records, through TRL's reward-function arguments (the dataset's `id` and `label`
columns, `trainer_state`), what each generation batch held and what each completion scored per
reward component. That record is how the tests verify the quota composition from the trainer's
side, and it is the per-class reward log. Its entries go into `Trainer.state.log_history`, which
every checkpoint saves, so a resumed phase rebuilds its logs from the checkpoint it resumes.
Run folder, resume and preemption are the shared training runtime's (`cmr_rd.model.runtime`).
"""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cmr_rd.classes import CLASSES, canonical_label
from cmr_rd.format import parse_completion
from cmr_rd.gppo.rewards import COMPONENTS, RewardConfig, completion_text, reward_functions
from cmr_rd.gppo.settings import GPPOConfig, batch_arithmetic, check_phase_inputs
from cmr_rd.model.backbone import (
    BackboneError,
    check_image_size,
    family_of,
    load_backbone,
    set_trainable,
)
from cmr_rd.model.lm_head import direct_lm_heads
from cmr_rd.model.runtime import (
    TrainingRun,
    TrainInputError,
    common_training_args,
    open_image,
    precision,
    preemptible,
    set_cpu_threads,
    tensorboard_dir,
)
from cmr_rd.model.sampling import fast_cpu_sampling

REWARD_FIELDS = (
    "phase",
    "step",
    "class",
    "prompts",
    *(f"{name}_mean" for name in COMPONENTS),
    "total_mean",
    "zero_spread_groups",
    "zero_spread_fraction",
    "format_valid",  # share of the class's rollouts that are in the answer format
    "answer_correct",  # share that are in the format and name the labelled class
)

# RL health per optimizer step: TRL's own logged metrics, read from the Trainer's log history
# (every checkpoint saves it, so a resumed phase's file is whole), beside the shares of rollouts
# that are format-valid and answer-correct from the batch record.
TRL_HEALTH_KEYS = {
    "reward": "reward",
    "reward_std": "reward_std",
    "zero_spread_fraction": "frac_reward_zero_std",
    "completion_length": "completions/mean_length",
    "clipped_fraction": "completions/clipped_ratio",
    "entropy": "entropy",
    "kl": "kl",
    "clip_ratio": "clip_ratio/region_mean",
    "clip_ratio_low": "clip_ratio/low_mean",
    "clip_ratio_high": "clip_ratio/high_mean",
}
HEALTH_FIELDS = ("phase", "step", "format_valid", "answer_correct", *TRL_HEALTH_KEYS)


# ---------------------------------------------------------------------------------------------
# Data


def _decode(batch: dict[str, list]) -> dict[str, list]:
    return {
        "id": batch["id"],
        "prompt": [json.loads(m) for m in batch["prompt_json"]],
        "images": [[open_image(p) for p in paths] for paths in batch["image_paths"]],
        "label": batch["label"],
        "box": [json.loads(b) for b in batch["box_json"]],
    }


def build_prompt_dataset(records: list[dict[str, Any]]) -> Any:
    """Prompt rows in file order (the quota order), images opened on access.

    `prompt` is the user turn only; the label and the lesion box travel as columns that TRL hands
    to the reward functions. JSON strings keep Arrow from unifying message parts.
    """
    import datasets

    prompts = []
    for record in records:
        turns = []
        for message in record["messages"]:
            if message.get("role") == "assistant":
                break
            turns.append(message)
        prompts.append(turns)
    dataset = datasets.Dataset.from_dict(
        {
            "id": [str(r["id"]) for r in records],
            "prompt_json": [json.dumps(p) for p in prompts],
            "image_paths": [[str(p) for p in r.get("images") or []] for r in records],
            "label": [str(r["label"]) for r in records],
            "box_json": [json.dumps(r.get("box")) for r in records],
        }
    )
    dataset.set_transform(_decode)
    return dataset


# ---------------------------------------------------------------------------------------------
# The recorder: what each generation batch held and scored, seen from inside the trainer


class BatchRecorder:
    """Collects per-completion reward components while TRL scores a generation batch.

    The reward functions are wrapped: each call stores its values, and the last one of a batch
    gathers the values, ids and labels of all processes (TRL's own order: process 0's rows
    first) from its arguments. The main process then appends one row per class to rewards.csv
    and one line per batch to batches.jsonl, and keeps the batch as an entry that
    `RecorderCallback` moves into the Trainer's log history at the step's end.
    """

    def __init__(self, out_dir: Path, phase: int, num_generations: int, is_main: bool) -> None:
        self.rewards_csv = out_dir / "rewards.csv"
        self.batches_jsonl = out_dir / "batches.jsonl"
        self.phase = phase
        self.num_generations = num_generations
        self.is_main = is_main
        self.current: dict[str, list[float]] = {}
        self.outcome: list[tuple[int, int]] = []  # (format-valid, answer-correct) per rollout
        self.wrapped = 0
        self.history: list[dict[str, Any]] = []  # {"step", "gppo_rewards", "gppo_batch"}
        self.pending: list[dict[str, Any]] = []  # recorded, not yet in the log history

    def wrap(self, function: Callable[..., list[float]]) -> Callable[..., list[float]]:
        name = function.__name__.removesuffix("_reward")
        self.wrapped += 1

        def recorded(*args, **kwargs):
            values = function(*args, **kwargs)
            self.current[name] = list(values)
            if len(self.current) == 1 and "completions" in kwargs:  # the batch's first reward
                # Read from the completions, not the rewards: a zero weight hides nothing here.
                self.outcome = [
                    _outcome(c, lab)
                    for c, lab in zip(kwargs["completions"], kwargs["label"], strict=True)
                ]
            if len(self.current) == self.wrapped and "trainer_state" in kwargs:
                from accelerate.utils import gather_object

                ids = gather_object([str(x) for x in kwargs["id"]])
                labels = gather_object([str(x) for x in kwargs["label"]])
                self.finish_batch(kwargs["trainer_state"].global_step + 1, ids, labels)
            return values

        recorded.__name__ = function.__name__
        return recorded

    def restore(self, log_history: list[dict[str, Any]]) -> None:
        """Rebuild the logs from the Trainer's history: empty for a fresh run, the checkpoint's
        batches for a resumed one (the steps after it are trained and recorded again)."""
        self.history = [entry for entry in log_history if "gppo_rewards" in entry]
        self.pending = []
        self._rewrite()

    def trim(self, keep_through: int) -> None:
        """Drop what steps after `keep_through` recorded."""
        self.history = [entry for entry in self.history if entry["step"] <= keep_through]
        self.pending = [entry for entry in self.pending if entry["step"] <= keep_through]
        self._rewrite()

    def _rewrite(self) -> None:
        if not self.is_main:
            return
        self.rewards_csv.parent.mkdir(parents=True, exist_ok=True)
        self._write_rows([row for e in self.history for row in e["gppo_rewards"]], mode="w")
        lines = [json.dumps(e["gppo_batch"]) + "\n" for e in self.history]
        self.batches_jsonl.write_text("".join(lines), encoding="utf-8")

    def _write_rows(self, rows: list[dict], mode: str = "a") -> None:
        new = mode == "w" or not self.rewards_csv.exists() or self.rewards_csv.stat().st_size == 0
        with self.rewards_csv.open(mode, newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=REWARD_FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def finish_batch(self, step: int, ids: list[str], labels: list[str]) -> None:
        """Called with the gathered ids/labels of one generation batch (all processes)."""
        from accelerate.utils import gather_object

        components = {name: gather_object(self.current.get(name, [])) for name in COMPONENTS}
        outcomes = gather_object(self.outcome)
        self.current, self.outcome = {}, []
        if not self.is_main:
            return
        g = self.num_generations
        n = len(ids)
        values = {k: (v if len(v) == n else [0.0] * n) for k, v in components.items()}
        totals = [sum(values[k][i] for k in COMPONENTS) for i in range(n)]
        groups = [(ids[i], labels[i], totals[i : i + g]) for i in range(0, n, g)]
        rows = []
        for cls in [c for c in CLASSES if c in labels] + sorted(set(labels) - set(CLASSES)):
            rows_c = [i for i in range(n) if labels[i] == cls]
            groups_c = [grp for grp in groups if grp[1] == cls]
            flat = [abs(max(t) - min(t)) < 1e-9 for _, _, t in groups_c]
            row = {"phase": self.phase, "step": step, "class": cls, "prompts": len(groups_c)}
            for name in COMPONENTS:
                row[f"{name}_mean"] = f"{sum(values[name][i] for i in rows_c) / len(rows_c):.6f}"
            row["total_mean"] = f"{sum(totals[i] for i in rows_c) / len(rows_c):.6f}"
            row["zero_spread_groups"] = sum(flat)
            row["zero_spread_fraction"] = f"{sum(flat) / len(flat):.6f}"
            known = outcomes if len(outcomes) == n else [(0, 0)] * n
            row["format_valid"] = f"{sum(known[i][0] for i in rows_c) / len(rows_c):.6f}"
            row["answer_correct"] = f"{sum(known[i][1] for i in rows_c) / len(rows_c):.6f}"
            rows.append(row)
        batch = {"step": step, "prompt_ids": [grp[0] for grp in groups],
                 "labels": [grp[1] for grp in groups],
                 "group_sizes": sorted({len(grp[2]) for grp in groups})}  # fmt: skip
        entry = {"step": step, "gppo_rewards": rows, "gppo_batch": batch}
        self.history.append(entry)
        self.pending.append(entry)
        self._write_rows(rows)
        with self.batches_jsonl.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(batch) + "\n")


def _outcome(completion: Any, label: str) -> tuple[int, int]:
    """(format-valid, answer-correct) of one rollout, by the reward's own parser."""
    parsed = parse_completion(completion_text(completion))
    return int(parsed.valid), int(parsed.valid and parsed.label == canonical_label(label))


def write_health_csv(path: Path, phase: int, log_history: list[dict[str, Any]]) -> None:
    """One row per optimizer step: rollout shares from the batch record, TRL's logged metrics."""
    shares: dict[int, tuple[float, float]] = {}
    for entry in log_history:
        rows = entry.get("gppo_rewards")
        if rows:
            n = sum(int(r["prompts"]) for r in rows)
            shares[entry["step"]] = tuple(
                sum(float(r[key]) * int(r["prompts"]) for r in rows) / n
                for key in ("format_valid", "answer_correct")
            )
    logged = {
        e["step"]: e
        for e in log_history
        if "step" in e and any(key in e for key in TRL_HEALTH_KEYS.values())
    }
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEALTH_FIELDS)
        writer.writeheader()
        for step in sorted(set(shares) | set(logged)):
            row: dict[str, Any] = {"phase": phase, "step": step}
            valid, correct = shares.get(step, (None, None))
            row["format_valid"] = "" if valid is None else f"{valid:.6f}"
            row["answer_correct"] = "" if correct is None else f"{correct:.6f}"
            for column, key in TRL_HEALTH_KEYS.items():
                value = logged.get(step, {}).get(key)
                row[column] = "" if value is None else f"{float(value):.6f}"
            writer.writerow(row)


def _recorder_callback(recorder: BatchRecorder) -> Any:
    from transformers import TrainerCallback

    class RecorderCallback(TrainerCallback):
        """Puts the recorder's batches into the log history before a step's checkpoint is
        saved, and rebuilds its files from the history the run starts (or resumes) with."""

        def on_train_begin(self, args, state, control, **kwargs):
            recorder.restore(state.log_history)

        def on_step_end(self, args, state, control, **kwargs):
            state.log_history.extend(recorder.pending)
            recorder.pending = []

    return RecorderCallback()


def _timed(function: Callable[..., list[float]], timings: dict[str, float]):
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            timings["reward"] += time.perf_counter() - started

    timed.__name__ = function.__name__
    return timed


def _trainer_class() -> type:
    from trl import GRPOTrainer

    class GPPOTrainer(GRPOTrainer):
        """GRPOTrainer plus a time split (generation / reward / log-probs / loss + backward).

        TRL times these blocks only for wandb/mlflow/trackio (`profiling_context`), so the two
        overrides below measure generation and the whole scoring pass; the rewards are timed
        by their wrappers and the step by the public `training_step`. Rollouts sample by
        inverse CDF on the CPU (`cmr_rd.model.sampling`): `torch.multinomial` was a quarter of
        their time.
        """

        timings: dict[str, float]
        rollouts = 0

        def _generate(self, prompts):
            started = time.perf_counter()
            try:
                with fast_cpu_sampling():
                    return super()._generate(prompts)
            finally:
                self.timings["generation"] += time.perf_counter() - started

        def _generate_and_score_completions(self, inputs):
            started = time.perf_counter()
            output = super()._generate_and_score_completions(inputs)
            self.rollouts += len(inputs) * self.accelerator.num_processes
            self.timings["generate_and_score"] += time.perf_counter() - started
            return output

        def training_step(self, model, inputs, num_items_in_batch):
            started = time.perf_counter()
            try:
                return super().training_step(model, inputs, num_items_in_batch)
            finally:
                self.timings["training_step"] += time.perf_counter() - started

        def time_split(self) -> dict[str, float]:
            """Seconds in generation, reward, reference/old log-probs, and loss + backward."""
            t = self.timings
            score_other = t["generate_and_score"] - t["generation"] - t["reward"]
            return {
                "generation": round(t["generation"], 3),
                "reward": round(t["reward"], 3),
                "logprobs": round(max(score_other, 0.0), 3),
                "loss_backward": round(max(t["training_step"] - t["generate_and_score"], 0.0), 3),
            }

    return GPPOTrainer


def make_trainer(
    model: torch.nn.Module,
    processor: Any,
    dataset: Any,
    out_dir: Path,
    cfg: GPPOConfig,
    rewards: RewardConfig,
    phase: int,
    world_size: int,
    recorder: BatchRecorder | None = None,
) -> Any:
    """The phase's trainer; public so tests and the benchmark drive exactly what the rule runs."""
    from trl import GRPOConfig

    sizes = batch_arithmetic(cfg, world_size)
    args = GRPOConfig(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=sizes["per_device_train_batch_size"],
        gradient_accumulation_steps=sizes["gradient_accumulation_steps"],
        num_generations=cfg.num_generations,
        num_iterations=cfg.num_iterations,
        learning_rate=cfg.phase_lr(phase),
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a share of the steps
        beta=cfg.beta,
        epsilon=cfg.epsilon,
        loss_type="grpo",
        scale_rewards="none",
        use_bias_correction_kl=False,
        entropy_coef=cfg.entropy_coef,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        min_p=cfg.min_p,
        max_completion_length=cfg.max_completion_length,
        shuffle_dataset=False,  # the quota order is the order
        **common_training_args(cfg, precision()),
    )
    timings: dict[str, float] = defaultdict(float)
    functions = reward_functions(rewards)
    if recorder is not None:
        functions = [recorder.wrap(f) for f in functions]
    functions = [_timed(f, timings) for f in functions]
    with tensorboard_dir(out_dir / "tensorboard"):
        trainer = _trainer_class()(
            model=model,
            args=args,
            reward_funcs=functions,
            train_dataset=dataset,
            processing_class=processor,
            callbacks=[_recorder_callback(recorder)] if recorder is not None else None,
        )
    # TRL's tiled LM head folds every position in a dozen ops per tile off a GPU: for small
    # logits the direct one is the same maths (cmr_rd.model.lm_head says how much faster).
    direct_lm_heads(trainer, cfg.temperature, ("log_probs", "entropy"))
    trainer.timings = timings
    return trainer


def load_policy(
    weights: Path, ref_path: Path, model_path: Path | None = None
) -> tuple[torch.nn.Module, Any]:
    """The phase's starting policy (`weights`: the model, or the checkpoint a resumed phase
    continues; its processor from `model_path`), its KL reference at `ref_path` (the SFT model,
    a folder that `check_phase_inputs` has found)."""
    try:
        model, processor = load_backbone(str(weights), processor_from=str(model_path or weights))
        check_image_size(processor, model)
        # The vision tower stays frozen, as in stage 1b; projector and language model train.
        set_trainable(model, ("projector", "language"))
    except BackboneError as exc:
        raise TrainInputError(str(exc)) from exc
    model.config._name_or_path = str(ref_path)  # TRL builds the reference from this path
    return model, processor


def train_phase(
    model_path: Path,
    ref_path: Path,
    dataset_jsonl: Path,
    out_dir: Path,
    cfg: GPPOConfig,
    rewards: RewardConfig,
    phase: int,
) -> dict:
    """Train one phase; write final/, rewards.csv, health.csv, batches.jsonl, loss.csv and
    train_summary.json.

    Resumes from the newest checkpoint in out_dir; SIGTERM saves and raises `Preempted`.
    """
    records = check_phase_inputs(ref_path, dataset_jsonl, cfg, phase)
    with preemptible() as flag:
        run = TrainingRun(Path(out_dir), flag)
        set_cpu_threads(cfg.threads)
        model, processor = load_policy(run.weights(model_path), ref_path, model_path)
        family = family_of(model)

        from accelerate import PartialState

        world_size = PartialState().num_processes
        recorder = BatchRecorder(
            run.out_dir, phase, cfg.num_generations, PartialState().is_main_process
        )
        trainer = make_trainer(
            model, processor, build_prompt_dataset(records), run.out_dir, cfg, rewards, phase,
            world_size, recorder,
        )  # fmt: skip
        step = run.train(trainer)
        run.save_final(trainer, processor)
        if trainer.is_world_process_zero():
            write_health_csv(run.out_dir / "health.csv", phase, trainer.state.log_history)
            # Save the policy's own identity, not the reference path we borrowed for TRL.
            config_path = run.final / "config.json"
            config = json.loads(config_path.read_text())
            config.pop("_name_or_path", None)
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        wall = run.wall_seconds
        summary = run.summary(
            trainer,
            phase=phase,
            family=family,
            learning_rate=cfg.phase_lr(phase),
            batch=batch_arithmetic(cfg, world_size),
            prompts=len(records),
            rollouts_this_run=trainer.rollouts,
            rollouts_per_second=round(trainer.rollouts / wall, 3) if wall > 0 else None,
            optimizer_steps_per_second=(
                round((step - run.resumed_from) / wall, 4) if wall else None
            ),
            time_split_seconds=trainer.time_split(),
            reward_summary=(
                summarize_rewards(recorder.rewards_csv) if trainer.is_world_process_zero() else None
            ),
            config=asdict(cfg),
            rewards=asdict(rewards),
            model=str(model_path),
            reference=str(ref_path),
            dataset=str(dataset_jsonl),
        )
        return run.write_summary(trainer, summary)


def summarize_rewards(rewards_csv: Path) -> dict[str, dict[str, float]]:
    """Per class over the whole phase: prompt-weighted reward means, the format-valid and
    answer-correct shares of the rollouts, and the zero-spread fraction."""
    if not Path(rewards_csv).exists():
        return {}
    with Path(rewards_csv).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out: dict[str, dict[str, float]] = {}
    for cls in [c for c in CLASSES if any(r["class"] == c for r in rows)]:
        mine = [r for r in rows if r["class"] == cls]
        prompts = sum(int(r["prompts"]) for r in mine)
        stats = {"prompts": prompts}
        means = [f"{name}_mean" for name in COMPONENTS] + ["total_mean"]
        for key in means + ["format_valid", "answer_correct"]:
            stats[key] = round(sum(float(r[key]) * int(r["prompts"]) for r in mine) / prompts, 6)
        stats["zero_spread_fraction"] = round(
            sum(int(r["zero_spread_groups"]) for r in mine) / prompts, 6
        )
        out[cls] = stats
    return out
