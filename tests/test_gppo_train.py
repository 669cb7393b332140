"""One GPPO phase through TRL's GRPOTrainer: the settings docs/method.md fixes, the quota batches as
the trainer sees them, the KL reference, bad input, and preemption with resume.

A tiny Gemma3 and ring phantoms drawn here keep the file independent of a demo run.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from cmr_rd.gppo.posterior import Posterior
from cmr_rd.gppo.quotas import plan_phase
from cmr_rd.gppo.rewards import RewardConfig
from cmr_rd.gppo.train import (
    HEALTH_FIELDS,
    BatchRecorder,
    GPPOConfig,
    batch_arithmetic,
    build_prompt_dataset,
    load_policy,
    make_trainer,
    train_phase,
)
from cmr_rd.model import sampling
from cmr_rd.model.backbone import TinyConfig, build_tiny, load_backbone
from cmr_rd.model.train import TrainInputError
from test_train import PROCESSOR_FILES, _corpus, _env, make_rings

B, G = 4, 4
real_multinomial = torch.multinomial


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", _corpus(), TinyConfig())


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> list[dict]:
    """A long-tailed pool: 20 HCM, 20 DCM and only 3 NOR (a with-replacement class)."""
    path = make_rings(tmp_path_factory.mktemp("rings"), per_class=20, seed=3, with_answer=False)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    nor = [r for r in rows if r["label"] == "NOR"][:3]
    return [r for r in rows if r["label"] != "NOR"] + nor


def _phase_dataset(prompts: list[dict], out: Path, n_batches: int = 3, seed: int = 5) -> tuple:
    posterior = Posterior(
        alpha={"HCM": 9, "DCM": 3, "CAM": 1, "LVNC": 1, "MI": 1, "NOR": 1},
        beta={"HCM": 1, "DCM": 3, "CAM": 1, "LVNC": 1, "MI": 1, "NOR": 6},
    )
    plan = plan_phase(
        [r["label"] for r in prompts], posterior, strategy="ts", batch_size=B,
        n_batches=n_batches, pool_threshold=5, seed=seed, phase=2,
    )  # fmt: skip
    rows = [{**prompts[i], "batch": k} for k, ids in enumerate(plan.batches) for i in ids]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return plan, rows


def _cfg(**overrides) -> GPPOConfig:
    values = dict(
        epochs=2.0, batch_prompts=B, num_generations=G, micro_batch=8, max_completion_length=8,
        save_steps=1000, threads=1, lr=1e-3,
    )  # fmt: skip
    values.update(overrides)
    return GPPOConfig(**values)


def test_trainer_settings_are_the_methods(tiny, prompts, tmp_path):
    _phase_dataset(prompts, tmp_path / "phase.jsonl")
    model, processor = load_policy(tiny, tiny)
    cfg = _cfg(beta=0.05, epsilon=0.3, entropy_coef=0.002, lr=1e-3, lr_decay=0.5, top_p=0.9,
               min_p=0.1, warmup_ratio=0.25, lr_scheduler="constant_with_warmup")  # fmt: skip
    dataset = build_prompt_dataset([json.loads(x) for x in open(tmp_path / "phase.jsonl")])
    trainer = make_trainer(model, processor, dataset, tmp_path, cfg, RewardConfig(), 3, 1)
    args = trainer.args
    assert args.scale_rewards == "none" and args.loss_type == "grpo"
    assert args.use_bias_correction_kl is False and args.shuffle_dataset is False
    assert (args.beta, args.epsilon, args.entropy_coef) == (0.05, 0.3, 0.002)
    assert args.learning_rate == pytest.approx(1e-3 * 0.5**2)  # lr_3 = lr_1 * decay^(3-1)
    assert args.num_generations == G and args.num_train_epochs == 2.0
    assert args.top_p == 0.9 and args.warmup_steps == 0.25  # our options reach the trainer
    assert args.min_p == 0.1 and trainer.min_p == 0.1
    assert args.lr_scheduler_type == "constant_with_warmup"
    # One generation batch = one quota batch of B prompts x G completions = one optimizer step.
    assert args.generation_batch_size == B * G
    assert args.steps_per_generation == args.gradient_accumulation_steps == B * G // 8
    assert [f.__name__ for f in trainer.reward_funcs] == [
        "format_reward",
        "answer_reward",
        "iou_reward",
    ]


def test_batch_arithmetic_refuses_a_split_that_breaks_batches():
    assert batch_arithmetic(_cfg(micro_batch=4), world_size=2) == {
        "generation_batch_size": 16,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
    }
    with pytest.raises(TrainInputError, match="split evenly"):
        batch_arithmetic(_cfg(micro_batch=6), world_size=1)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("top_p", 0.0, "top_p must be in"),
        ("min_p", 1.0, "min_p must be in"),
        ("warmup_ratio", 1.0, "warmup_ratio must be in"),
    ],
)
def test_sampling_and_warmup_options_are_checked(key, value, message):
    with pytest.raises(TrainInputError, match=message):
        _cfg(**{key: value})


def test_every_generation_batch_is_one_quota_batch(tiny, prompts, tmp_path, monkeypatch):
    """Read from inside the trainer: the prompts of each generation batch, in order, per epoch."""
    plan, rows = _phase_dataset(prompts, tmp_path / "phase.jsonl")
    assert plan.record["modes"]["NOR"] == "with_replacement"
    out = tmp_path / "out"
    draws = []  # rollouts' next tokens come from the inverse-CDF sampler, not torch.multinomial

    def counted(weights, generator=None):
        draws.append(weights.shape[0])
        return real_sample(weights, generator)

    real_sample = sampling.inverse_cdf_sample
    monkeypatch.setattr(sampling, "inverse_cdf_sample", counted)
    summary = train_phase(tiny, tiny, tmp_path / "phase.jsonl", out, _cfg(), RewardConfig(), 2)
    assert draws and set(draws) == {B * G}
    assert torch.multinomial is real_multinomial  # restored after each generation
    seen = [json.loads(x) for x in (out / "batches.jsonl").read_text().splitlines()]
    assert summary["steps"] == len(seen) == 2 * len(plan.batches)  # 2 epochs, no batch dropped
    for step, batch in enumerate(seen, start=1):
        planned = plan.batches[(step - 1) % len(plan.batches)]
        assert batch["step"] == step
        assert Counter(batch["prompt_ids"]) == Counter(prompts[i]["id"] for i in planned)
        assert Counter(batch["labels"]) == +Counter(plan.record["quotas"])
        assert batch["group_sizes"] == [G]
    rewards = (out / "rewards.csv").read_text().splitlines()
    assert rewards[0].startswith("phase,step,class,prompts,format_mean")
    assert {line.split(",")[2] for line in rewards[1:]} == {
        c for c, q in plan.record["quotas"].items() if q
    }
    assert set(summary["time_split_seconds"]) == {
        "generation",
        "reward",
        "logprobs",
        "loss_backward",
    }
    assert summary["rollouts_this_run"] == 2 * len(plan.batches) * B * G
    # RL health: one row per optimizer step, the rollout shares beside TRL's logged metrics.
    health = list(csv.DictReader((out / "health.csv").open()))
    assert [int(r["step"]) for r in health] == [b["step"] for b in seen]
    assert set(health[0]) == set(HEALTH_FIELDS)
    for row in health:
        assert row["phase"] == "2"
        assert 0 <= float(row["format_valid"]) <= 1 and 0 <= float(row["answer_correct"]) <= 1
        assert float(row["answer_correct"]) <= float(row["format_valid"])
        assert 0 < float(row["completion_length"]) <= 8  # the cap of _cfg()
        assert 0 <= float(row["clipped_fraction"]) <= 1
        assert float(row["entropy"]) > 0 and float(row["kl"]) >= 0
    per_class = summary["reward_summary"]
    assert all(0 <= v["format_valid"] <= 1 for v in per_class.values())
    # The shares agree with the per-class rows they summarise (prompt-weighted).
    rows = list(csv.DictReader((out / "rewards.csv").open()))
    step1 = [r for r in rows if r["step"] == "1"]
    weighted = sum(float(r["format_valid"]) * int(r["prompts"]) for r in step1) / B
    assert float(health[0]["format_valid"]) == pytest.approx(weighted, abs=1e-6)
    config = json.loads((out / "final" / "config.json").read_text())
    assert "_name_or_path" not in config  # the borrowed reference path is not saved as identity


def test_kl_reference_is_the_start_model_not_the_previous_phase(tiny, prompts, tmp_path):
    previous, processor = load_backbone(str(tiny))
    with torch.no_grad():
        for p in previous.parameters():
            p.add_(0.01)
    previous.save_pretrained(tmp_path / "phase1")
    processor.save_pretrained(tmp_path / "phase1")
    _phase_dataset(prompts, tmp_path / "phase.jsonl")
    model, processor = load_policy(tmp_path / "phase1", tiny)
    dataset = build_prompt_dataset([json.loads(x) for x in open(tmp_path / "phase.jsonl")])
    trainer = make_trainer(model, processor, dataset, tmp_path, _cfg(), RewardConfig(), 2, 1)
    sft, _ = load_backbone(str(tiny))
    ref = dict(trainer.ref_model.named_parameters())
    policy = dict(trainer.model.named_parameters())
    for name, p in sft.named_parameters():
        assert torch.equal(ref[name].cpu(), p), name
        assert not torch.equal(policy[name].cpu(), p), name


def test_recorder_counts_zero_spread_groups(tmp_path):
    recorder = BatchRecorder(tmp_path, phase=1, num_generations=2, is_main=True)
    # Two HCM groups (one flat, one with spread) and one flat MI group.
    recorder.current = {
        "format": [1.5, 1.5, 1.5, 0.0, 1.5, 1.5],
        "answer": [2.0, 2.0, 0.0, 0.0, 0.0, 0.0],
        "iou": [0.0, 0.0, 0.0, 0.0, 0.1, 0.1],
    }
    # (format-valid, answer-correct) per rollout, as the wrapper reads them from completions
    recorder.outcome = [(1, 1), (1, 1), (1, 0), (0, 0), (1, 0), (1, 0)]
    recorder.finish_batch(1, ["a", "a", "b", "b", "c", "c"], ["HCM"] * 4 + ["MI"] * 2)
    rows = (tmp_path / "rewards.csv").read_text().splitlines()
    assert rows[0].endswith("zero_spread_fraction,format_valid,answer_correct")
    assert rows[1] == "1,1,HCM,2,1.125000,1.000000,0.000000,2.125000,1,0.500000,0.750000,0.500000"
    assert rows[2] == "1,1,MI,1,1.500000,0.000000,0.100000,1.600000,1,1.000000,1.000000,0.000000"
    recorder.trim(0)
    assert (tmp_path / "rewards.csv").read_text().splitlines()[1:] == []


def _cli(tiny: Path, data: Path, out: Path, settings: dict) -> list[str]:
    config = out.parent / f"{out.name}.json"
    config.write_text(json.dumps(settings))
    return [
        sys.executable, "-m", "cmr_rd.gppo.cli", "train", "--phase", "1", "--model", str(tiny),
        "--ref", str(tiny), "--data", str(data), "--out", str(out), "--config", str(config),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("uneven", "not a whole number of batches of 4"),
        ("unknown_key", "unknown GPPO config keys: lerning_rate"),
        ("no_ref", "KL reference checkpoint not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny, prompts, tmp_path, case, message):
    data = tmp_path / "phase.jsonl"
    _phase_dataset(prompts, data)
    train = {"batch_prompts": B, "max_completion_length": 8, "threads": 1}
    cmd = _cli(tiny, data, tmp_path / "out", {"train": train})
    if case == "uneven":
        data.write_text("".join(data.read_text().splitlines(keepends=True)[:-1]))
    elif case == "unknown_key":
        cmd = _cli(tiny, data, tmp_path / "out", {"train": {**train, "lerning_rate": 1}})
    else:
        cmd[cmd.index("--ref") + 1] = str(tmp_path / "missing")
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_sigterm_saves_and_the_rerun_resumes_without_duplicate_steps(tiny, prompts, tmp_path):
    data = tmp_path / "phase.jsonl"
    plan, _ = _phase_dataset(prompts, data, n_batches=6)
    out = tmp_path / "run"
    train = {"batch_prompts": B, "micro_batch": 8, "max_completion_length": 8, "threads": 1,
             "save_steps": 1, "epochs": 2.0}  # fmt: skip
    cmd = _cli(tiny, data, out, {"train": train})
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    import time

    deadline = time.monotonic() + 240
    while not checkpoint.is_file():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-2000:]
    assert not (out / "final").exists()
    rerun = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_step"] >= 2 and summary["steps"] == 2 * len(plan.batches)
    steps = [json.loads(x)["step"] for x in (out / "batches.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 2 * len(plan.batches) + 1))
    csv_steps = {line.split(",")[1] for line in (out / "rewards.csv").read_text().splitlines()[1:]}
    assert csv_steps == {str(s) for s in steps}
    health_steps = [int(r["step"]) for r in csv.DictReader((out / "health.csv").open())]
    assert health_steps == steps  # the log history the checkpoint saved, and the rest


def test_a_resumed_phase_ends_with_the_uninterrupted_phases_weights(tiny, prompts, tmp_path):
    """A phase restarted from its step-2 checkpoint samples the same completions (the RNG state
    is restored) and ends byte-identical to one that never stopped."""
    import shutil

    data = tmp_path / "phase.jsonl"
    _phase_dataset(prompts, data, n_batches=3)
    train = {"batch_prompts": B, "micro_batch": 8, "max_completion_length": 8, "threads": 1,
             "save_steps": 1, "save_total_limit": 10, "epochs": 2.0}  # fmt: skip
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    for out in (whole, resumed):
        if out == resumed:
            shutil.copytree(whole / "checkpoints/checkpoint-2", out / "checkpoints/checkpoint-2")
        result = subprocess.run(
            _cli(tiny, data, out, {"train": train}), env=_env(), capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((resumed / "train_summary.json").read_text())["resumed_from_step"] == 2
    weights = "final/model.safetensors"
    assert (resumed / weights).read_bytes() == (whole / weights).read_bytes()
    for name in PROCESSOR_FILES:  # the processor of the model it started from, not the checkpoint's
        assert (resumed / "final" / name).read_bytes() == (whole / "final" / name).read_bytes()

    def completions_after_step_2(out: Path) -> list[str]:
        rows = [json.loads(x) for x in (out / "batches.jsonl").read_text().splitlines()]
        return [json.dumps(r, sort_keys=True) for r in rows if r["step"] > 2]

    assert completions_after_step_2(resumed) == completions_after_step_2(whole)
