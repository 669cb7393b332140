"""Stage 1a/1b training: freezing, the loss mask, preemption and resume, two processes, bad input,
and that a tiny model learns the answer format in a few dozen steps.

Everything runs on a tiny Gemma3 and a few dozen ring phantoms drawn here, so the file never
depends on a demo run and stays within a few minutes on two shared CPU cores.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from cmr_rd.format import render_target
from cmr_rd.model.backbone import TinyConfig, build_tiny, load_backbone, part_of, set_trainable
from cmr_rd.model.cli import main as cli_main
from cmr_rd.model.generate import check_checkpoint
from cmr_rd.model.train import (
    TrainConfig,
    build_dataset,
    load_records,
    make_trainer,
    train,
)

BIN = Path(sys.executable).parent
QUERY = (
    "Which disease does this LGE short-axis slice show: HCM, DCM or NOR? Answer exactly as "
    "<think>reasoning</think><location>[x1,y1,x2,y2]</location><answer>NAME</answer>."
)
# Three classes a 64-pixel image separates easily: wall thickness and cavity size.
RINGS = {
    "NOR": {"radius": 44, "wall": 6, "think": "The wall is thin and the cavity is normal."},
    "HCM": {"radius": 44, "wall": 22, "think": "The wall is thick and the cavity is small."},
    "DCM": {"radius": 80, "wall": 6, "think": "The wall is thin and the cavity is dilated."},
}


def _ring(label: str, rng: random.Random) -> tuple[Image.Image, tuple[int, int, int, int]]:
    spec = RINGS[label]
    cx, cy = 128 + rng.randint(-12, 12), 128 + rng.randint(-12, 12)
    r = spec["radius"] + rng.randint(-4, 4)
    image = Image.new("L", (256, 256), rng.randint(0, 30))
    draw = ImageDraw.Draw(image)
    box = (cx - r, cy - r, cx + r, cy + r)
    draw.ellipse(box, outline=rng.randint(170, 230), width=spec["wall"])
    return image, box


def make_rings(root: Path, per_class: int, seed: int, with_answer: bool = True) -> Path:
    """Ring phantoms as PNGs plus a conversational JSONL in the pipeline's dataset form."""
    rng = random.Random(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(per_class):
        for label, spec in RINGS.items():
            image, box = _ring(label, rng)
            path = images / f"{label}_{seed}_{i}.png"
            image.save(path)
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUERY}]}
            ]
            if with_answer:
                target = render_target(spec["think"], box, label)
                messages.append(
                    {"role": "assistant", "content": [{"type": "text", "text": target}]}
                )
            rows.append(
                {"id": path.stem, "images": [str(path)], "messages": messages, "label": label}
            )
    jsonl = root / ("train.jsonl" if with_answer else "prompts.jsonl")
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return jsonl


def _corpus() -> list[str]:
    return [QUERY] + [render_target(s["think"], (0, 0, 256, 256), c) for c, s in RINGS.items()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", _corpus(), TinyConfig())


@pytest.fixture(scope="module")
def rings(tmp_path_factory) -> Path:
    return make_rings(tmp_path_factory.mktemp("rings"), per_class=20, seed=1)


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="0")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(*args: str, config: dict | None = None, tmp: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "cmr_rd.model.cli", *args]
    if config is not None:
        path = Path(tmp) / f"cfg_{abs(hash(json.dumps(config, sort_keys=True)))}.json"
        path.write_text(json.dumps(config))
        cmd += ["--config", str(path)]
    return cmd


def _state(path: Path) -> dict[str, torch.Tensor]:
    model, _ = load_backbone(str(path))
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _loss_steps(out: Path) -> list[int]:
    with (out / "loss.csv").open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "lora", "changed"),
    [
        ("align", False, {"projector"}),
        ("sft", False, {"projector", "language"}),
        ("sft", True, {"projector", "language"}),
    ],
    ids=["align", "sft", "sft-lora"],
)
def test_only_the_stage_parts_change(tiny, rings, tmp_path, stage, lora, changed):
    before = _state(tiny)
    cfg = TrainConfig(
        stage=stage, max_steps=3, batch_size=4, save_steps=100, logging_steps=1, lora=lora
    )
    summary = train(tiny, rings, tmp_path / stage, cfg)
    after = _state(tmp_path / stage / "final")  # LoRA: merged, loads like the base
    assert set(after) == set(before)
    assert summary["steps"] == 3 and summary["precision"] == "fp32"
    assert summary["trainable_parameters"]["vision"] == 0

    moved = {"vision": set(), "projector": set(), "language": set()}
    for name, tensor in before.items():
        if not torch.equal(tensor, after[name]):
            moved[part_of(name, "gemma3")].add(name)
    assert not moved["vision"], f"vision tensors changed: {sorted(moved['vision'])[:3]}"
    for part in ("projector", "language"):
        if part in changed:
            assert moved[part], f"{part} did not change in {stage}"
            assert summary["trainable_parameters"][part] > 0
        else:
            assert not moved[part], f"{part} changed in {stage}: {sorted(moved[part])[:3]}"
            assert summary["trainable_parameters"][part] == 0
    # The collator's truncation/padding state must not leak into the saved tokenizer.
    saved = json.loads((tmp_path / stage / "final" / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"] is None
    assert (tmp_path / stage / "tensorboard").is_dir()
    assert any((tmp_path / stage / "tensorboard").rglob("events.out.tfevents.*"))


def test_loss_sees_only_the_assistant_answer_and_end_of_turn(tiny, rings, tmp_path):
    model, processor = load_backbone(str(tiny))
    set_trainable(model, ["projector", "language"])
    records = load_records(rings)
    dataset = build_dataset(records)
    cfg = TrainConfig(stage="sft", max_steps=1)
    trainer = make_trainer(model, processor, dataset, tmp_path / "ck", tmp_path / "tb", cfg)
    batch = trainer.data_collator([dataset[0], dataset[1]])  # two, so padding is exercised
    tokenizer = processor.tokenizer
    for row in range(2):
        target = records[row]["messages"][1]["content"][0]["text"]
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        kept = labels != -100
        assert torch.equal(labels[kept], ids[kept])
        assert tokenizer.decode(ids[kept]) == target + "<end_of_turn>"
        # The kept tokens are one contiguous span ending on <end_of_turn>.
        positions = kept.nonzero().flatten()
        assert positions[-1] - positions[0] + 1 == len(positions)
        assert ids[positions[-1]] == tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert batch["pixel_values"].shape[-1] == 64


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"trainer ended early ({proc.returncode}): {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for a checkpoint")
        time.sleep(0.05)


def _complete(out: Path, step: int) -> bool:
    return (out / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_preempt_and_resume_continue_the_step_counter(tiny, rings, tmp_path, sig):
    max_steps = 60
    config = {
        "max_steps": max_steps,
        "batch_size": 2,
        "save_steps": 2,
        "save_total_limit": 2,
        "logging_steps": 1,
        "threads": 1,
    }
    out = tmp_path / "run"
    cmd = _cli(
        "train", "--stage", "sft", "--model", str(tiny), "--data", str(rings), "--out", str(out),
        config=config, tmp=tmp_path,
    )  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(lambda: _complete(out, 2), proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err[-2000:]
        assert "preempted" in err and "Traceback" not in err
        stopped = int(err.split("at step ")[1].split(";")[0])
        assert 2 <= stopped < max_steps
        assert _complete(out, stopped), "no checkpoint at the step training stopped"
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (out / "final").exists()
    steps_done = sorted(
        int(p.name.split("-")[1])
        for p in (out / "checkpoints").glob("checkpoint-*")
        if (p / "trainer_state.json").is_file()
    )
    expected_resume = steps_done[-1]
    if sig == signal.SIGKILL:
        assert expected_resume % 2 == 0  # a periodic checkpoint

    rerun = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == expected_resume > 0
    assert summary["steps"] == max_steps
    assert summary["per_rank_samples"] == [(max_steps - expected_resume) * 2]
    steps = _loss_steps(out)
    assert steps == list(range(1, max_steps + 1)), "loss.csv lost or duplicated steps"
    assert (out / "final" / "config.json").is_file()
    load_backbone(str(out / "final"))


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_a_resumed_run_ends_with_the_uninterrupted_runs_weights(tiny, rings, tmp_path, lora):
    """Resuming restores the weights too, not only step, optimizer and schedule: a run restarted
    from its step-3 checkpoint ends byte-identical to one that never stopped. (The Trainer's own
    weight loading matched none of Gemma3's saved names and kept the starting weights.)"""
    config = {"max_steps": 8, "batch_size": 2, "save_steps": 1, "save_total_limit": 10,
              "logging_steps": 1, "threads": 1, "lora": lora}  # fmt: skip
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"

    def train(out: Path) -> None:
        cmd = _cli(
            "train", "--stage", "sft", "--model", str(tiny), "--data", str(rings),
            "--out", str(out), config=config, tmp=tmp_path,
        )  # fmt: skip
        result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]

    train(whole)
    shutil.copytree(whole / "checkpoints/checkpoint-3", resumed / "checkpoints/checkpoint-3")
    train(resumed)
    assert json.loads((resumed / "train_summary.json").read_text())["resumed_from_step"] == 3
    weights = "final/model.safetensors"
    assert (resumed / weights).read_bytes() == (whole / weights).read_bytes()
    # And its processor is the uninterrupted run's, not the checkpoint's (which carries the
    # collator's padding settings), so what a later stage digests is the same too.
    for name in PROCESSOR_FILES:
        assert (resumed / "final" / name).read_bytes() == (whole / "final" / name).read_bytes()
    # The per-step log comes from the checkpoint's log history plus the steps trained since: the
    # resumed run's loss.csv is the uninterrupted run's, steps 1-3 included.
    assert (resumed / "loss.csv").read_bytes() == (whole / "loss.csv").read_bytes()


PROCESSOR_FILES = ("tokenizer_config.json", "tokenizer.json", "processor_config.json",
                   "chat_template.jinja")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_share_the_batches(tiny, rings, tmp_path, repo):
    out = tmp_path / "ddp"
    config = {"max_steps": 3, "batch_size": 2, "save_steps": 100, "logging_steps": 1, "threads": 1}
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(config))
    cmd = [
        str(BIN / "accelerate"), "launch",
        "--config_file", str(repo / "config" / "accelerate" / "cpu2.yaml"),
        "--main_process_port", str(_free_port()),
        "-m", "cmr_rd.model.cli", "train", "--stage", "sft", "--model", str(tiny),
        "--data", str(rings), "--out", str(out), "--config", str(cfg_path),
    ]  # fmt: skip
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["steps"] == 3
    assert summary["per_rank_samples"] == [3 * 2, 3 * 2]
    assert _loss_steps(out) == [1, 2, 3]
    load_backbone(str(out / "final"))


def _mismatched_model(tiny: Path, tmp_path: Path) -> Path:
    bad = tmp_path / "bad_model"
    shutil.copytree(tiny, bad)
    config_path = bad / "processor_config.json"
    if not config_path.exists():
        config_path = bad / "preprocessor_config.json"
    config = json.loads(config_path.read_text())
    holder = config.get("image_processor", config)
    holder["size"] = {"height": 32, "width": 32}
    config_path.write_text(json.dumps(config))
    return bad


@pytest.mark.parametrize("case", ["empty", "missing_image", "missing_model", "image_size"])
def test_bad_input_is_one_line_and_exit_2(tiny, rings, tmp_path, case):
    data, model = rings, tiny
    if case == "empty":
        data = tmp_path / "empty.jsonl"
        data.write_text("")
        expected = "dataset is empty"
    elif case == "missing_image":
        rows = rings.read_text().splitlines()
        row = json.loads(rows[0])
        row["images"] = [str(tmp_path / "gone.png")]
        data = tmp_path / "missing.jsonl"
        data.write_text(json.dumps(row) + "\n" + "\n".join(rows[1:]) + "\n")
        expected = "image file not found"
    elif case == "missing_model":
        model = tmp_path / "no_such_model"
        expected = "does not exist"
    else:
        model = _mismatched_model(tiny, tmp_path)
        expected = "image size 32x32"
    cmd = _cli(
        "train", "--stage", "sft", "--model", str(model), "--data", str(data),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_bad_input_is_refused_before_torch_loads(rings, tmp_path):
    """Both training command lines check the config, the model's path and the dataset before they
    import torch, TRL and transformers (seconds on 2 cores), so a user's typo is answered at once.
    The one check that needs the model (its image size) is the case above that loads it."""
    gone = str(tmp_path / "no_such_model")
    out = str(tmp_path / "out")
    settings = tmp_path / "gppo.json"
    settings.write_text(json.dumps({"train": {"batch_prompts": 4}}))
    calls = [
        ("cmr_rd.model.cli", ["train", "--stage", "sft", "--model", gone, "--data", str(rings),
                              "--out", out]),
        ("cmr_rd.model.cli", ["check", "--model", gone, "--data", str(rings), "--out", out]),
        ("cmr_rd.gppo.cli", ["train", "--phase", "1", "--model", str(tmp_path), "--ref", gone,
                             "--data", str(rings), "--out", out, "--config", str(settings)]),
    ]  # fmt: skip
    script = (
        "import importlib, sys\n"
        + "".join(
            f"print(importlib.import_module({module!r}).main({argv!r}))\n" for module, argv in calls
        )
        + "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert result.stdout.split() == ["2", "2", "2", "False", "False"], result.stdout + result.stderr
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3 and "Traceback" not in result.stderr, result.stderr
    assert "backbone path does not exist" in errors[0] and "no_such_model" in errors[1]
    assert "KL reference checkpoint not found" in errors[2]


def test_sft_learns_the_format(tiny, tmp_path):
    """120 steps of batch 8 (~10 s) is the smallest budget found that passes; 60 steps gives 0."""
    train_jsonl = make_rings(tmp_path / "train", per_class=20, seed=2)
    prompts = make_rings(tmp_path / "heldout", per_class=8, seed=3, with_answer=False)
    cfg = TrainConfig(stage="sft", max_steps=120, batch_size=8, save_steps=1000, logging_steps=10)
    train(tiny, train_jsonl, tmp_path / "sft", cfg)
    with (tmp_path / "sft" / "loss.csv").open() as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses[-1] < 0.5 * losses[0]
    report = check_checkpoint(tmp_path / "sft" / "final", prompts, max_new_tokens=40)
    assert report["n"] == 24
    assert report["valid_format_rate"] >= 0.9, report["examples"]
    assert set(report["per_class_accuracy"]) == set(RINGS)

    out = tmp_path / "check.json"
    code = cli_main(
        ["check", "--model", str(tmp_path / "sft" / "final"), "--data", str(prompts),
         "--out", str(out), "--limit", "6", "--max-new-tokens", "40"]
    )  # fmt: skip
    again = json.loads(out.read_text())
    assert code == 0 and again["n"] == 6
    assert again["examples"] == report["examples"]  # greedy, deterministic, batch-independent


def test_balance_classes_repeats_each_class_up_to_the_largest():
    from cmr_rd.model.train import TrainInputError, balance_by_label

    records = [{"id": i, "label": label} for i, label in enumerate("AABAAC")]
    balanced = balance_by_label(records, "d.jsonl")
    assert [r["id"] for r in balanced] == [0, 1, 3, 4, 2, 2, 2, 2, 5, 5, 5, 5]
    with pytest.raises(TrainInputError, match=r"d.jsonl:2: balance_classes needs a 'label'"):
        balance_by_label([{"label": "A"}, {"id": 1}], "d.jsonl")
