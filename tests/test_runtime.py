"""The shared training runtime: the per-step log from the Trainer's history, the recorder's
rebuild on resume, and one owner for what the training stages share."""

import ast
import csv
import json
from pathlib import Path

from cmr_rd.gppo.train import BatchRecorder
from cmr_rd.model.runtime import fingerprint, last_loss, write_loss_csv

SRC = Path(__file__).resolve().parents[1] / "src" / "cmr_rd"


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cmr_rd"):
                offenders += [f"{path.name}: {a.name}" for a in node.names if a.name[0] == "_"]
    assert offenders == []


def test_one_training_skeleton():
    """Neither stage module keeps its own loop, signal handling or per-step log writer."""
    for module in ("model/train.py", "gppo/train.py"):
        text = (SRC / module).read_text(encoding="utf-8")
        for needle in ("signal.signal", ".train(resume_from_checkpoint", "LossCsv", "_trim"):
            assert needle not in text, f"{module} still has {needle}"


def test_loss_csv_is_the_log_history_rows_with_a_loss(tmp_path):
    history = [
        {"loss": 2.5, "learning_rate": 0.001, "epoch": 0.25, "step": 1},
        {"step": 1, "gppo_rewards": [], "gppo_batch": {}},  # a recorder entry: not a loss row
        {"loss": 1.25, "learning_rate": 0.0005, "epoch": 0.5, "step": 2},
        {"train_runtime": 3.0, "train_loss": 1.9, "epoch": 0.5, "step": 2},  # the end summary
    ]
    out = tmp_path / "loss.csv"
    write_loss_csv(out, history)
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["step", "epoch", "loss", "learning_rate"],
        ["1", "0.250000", "2.500000", "0.001"],
        ["2", "0.500000", "1.250000", "0.0005"],
    ]
    assert last_loss(history) == 1.25
    write_loss_csv(out, [])
    assert out.read_text().splitlines() == ["step,epoch,loss,learning_rate"]
    assert last_loss([]) is None and last_loss([{"loss": float("nan"), "step": 1}]) is None


def test_recorder_rebuilds_its_logs_from_a_resumed_history(tmp_path):
    recorder = BatchRecorder(tmp_path, phase=1, num_generations=2, is_main=True)
    for step in (1, 2, 3):
        recorder.current = {"format": [1.5, 0.0], "answer": [2.0, 0.0], "iou": [0.0, 0.0]}
        recorder.finish_batch(step, ["a", "a"], ["HCM", "HCM"])
    assert [e["step"] for e in recorder.pending] == [1, 2, 3]
    checkpoint_history = [{"loss": 1.0, "step": 1}, *recorder.history[:2]]  # saved at step 2
    stale = (tmp_path / "rewards.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in stale[1:]] == ["1", "2", "3"]

    resumed = BatchRecorder(tmp_path, phase=1, num_generations=2, is_main=True)
    resumed.restore(json.loads(json.dumps(checkpoint_history)))  # as trainer_state.json has it
    rows = (tmp_path / "rewards.csv").read_text().splitlines()
    assert rows[0] == stale[0] and rows[1:] == stale[1:3]  # step 3 is trained again
    batches = [json.loads(x)["step"] for x in (tmp_path / "batches.jsonl").read_text().splitlines()]
    assert batches == [1, 2] and resumed.pending == []


def test_fingerprint_is_stable_and_sensitive():
    settings = {"stage": "sft", "train": {"lr": 0.002, "seed": 1}, "data": "abc"}
    assert fingerprint(settings) == fingerprint(json.loads(json.dumps(settings)))
    assert fingerprint({**settings, "data": "abd"}) != fingerprint(settings)
    assert len(fingerprint(settings)) == 16
