"""Evaluation harness: answer log-likelihoods, the lenient answer reader, the metrics against
hand-computed tables and scikit-learn, determinism, the parquet table and the command line.

A tiny random Gemma3 (built once per module) and a few noise PNGs stand in for a checkpoint and
the test set; the likelihood checks use hand-written completions so every prefix shape occurs.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from cmr_rd.classes import CLASSES
from cmr_rd.evaluate import (
    EvalInputError,
    answer_loglikelihoods,
    compute_metrics,
    evaluate_model,
    extract_answer,
    normalise,
    sample_table,
)
from cmr_rd.evaluate.harness import main as harness_main
from cmr_rd.evaluate.scoring import count_forward_passes, reasoning_prefix
from cmr_rd.format import render_target
from cmr_rd.model.backbone import TinyConfig, build_tiny, load_backbone
from cmr_rd.model.generate import prompt_messages
from cmr_rd.model.train import open_image
from cmr_rd.prompts import DIAGNOSTIC_QUERY

BOXES = {"MI": [40, 40, 120, 120]}
SPECS = ["HCM", "DCM", "CAM", "LVNC", "MI", "NOR", "MI"]
VALID = "<think>Scar in the anterior wall.</think><location>[40,40,120,120]</location><answer>MI</answer>"


def _corpus() -> list[str]:
    return [DIAGNOSTIC_QUERY] + [
        render_target(f"The pattern suggests {c}.", (10, 20, 200, 220), c) for c in CLASSES
    ]


def write_test_set(root: Path, labels: list[str], seed: int = 0) -> Path:
    """Noise PNGs plus a prompts JSONL in the pipeline's test-set form (MI with a box)."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, label in enumerate(labels):
        path = root / "images" / f"{label}_{i}.png"
        pixels = bytes(rng.randrange(256) for _ in range(256 * 256))
        Image.frombytes("L", (256, 256), pixels).save(path)
        content = [{"type": "image"}, {"type": "text", "text": DIAGNOSTIC_QUERY}]
        rows.append(
            {
                "id": f"s{i}",
                "patient": f"P{i}",
                "source": "cmr",
                "images": [str(path)],
                "messages": [{"role": "user", "content": content}],
                "label": label,
                "box": BOXES.get(label),
            }
        )
    jsonl = root / "test.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return jsonl


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", _corpus(), TinyConfig())


@pytest.fixture(scope="module")
def loaded(tiny):
    model, processor = load_backbone(str(tiny))
    return model.eval(), processor


@pytest.fixture(scope="module")
def test_set(tmp_path_factory) -> Path:
    return write_test_set(tmp_path_factory.mktemp("testset"), SPECS)


def _records(jsonl: Path) -> list[dict]:
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


def _reference(model, processor, record: dict, completion: str, name: str) -> float:
    """log p(<answer>name</answer>) from one unpadded forward pass with full logits."""
    text = processor.apply_chat_template(
        prompt_messages(record["messages"]), add_generation_prompt=True, tokenize=False
    )
    inputs = processor(
        text=[text + reasoning_prefix(completion)],
        images=[[open_image(p) for p in record["images"]]],
        add_special_tokens=False,
        return_tensors="pt",
    )
    cont = processor.tokenizer(f"<answer>{name}</answer>", add_special_tokens=False)["input_ids"]
    n = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([cont])], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    types = inputs["token_type_ids"]
    inputs["token_type_ids"] = torch.cat([types, torch.zeros((1, len(cont)), dtype=types.dtype)], 1)
    with torch.inference_mode():
        logp = torch.log_softmax(model(**inputs).logits[0].float(), dim=-1)
    return sum(float(logp[n - 1 + j, t]) for j, t in enumerate(cont))


# ---------------------------------------------------------------------------------------------
# Scoring


def test_batched_loglik_equals_one_at_a_time(loaded, test_set, monkeypatch):
    model, processor = loaded
    records = _records(test_set)[:6]
    completions = [
        VALID,
        "",  # nothing generated: the prompt alone is the prefix
        "<think>short</think>",  # no answer tag: the whole completion is the prefix
        "<think>"
        + "a much longer line of reasoning " * 6
        + "</think><location>[1,2,3,4]</location>",
        "<think>two answers</think><answer>HCM</answer><answer>DCM</answer>",
        "<think>full name</think><location>[0,0,256,256]</location><answer>normal</answer>",
    ]
    monkeypatch.setattr(model, "generate", lambda *a, **k: pytest.fail("scoring must not generate"))
    with count_forward_passes(model) as counter:
        batched = answer_loglikelihoods(model, processor, records, completions, batch_size=4)
    assert counter.calls == 4  # ceil(6 / 4) chunks: prefixes, then continuations
    assert batched.shape == (6, len(CLASSES)) and batched.dtype == np.float64
    assert np.all(batched < 0)
    alone = np.array(
        [
            [_reference(model, processor, r, c, k) for k in CLASSES]
            for r, c in zip(records, completions, strict=True)
        ]
    )
    np.testing.assert_allclose(batched, alone, atol=1e-4, rtol=0)
    # The score reads the reasoning only: what follows the first <answer> does not matter.
    cut = answer_loglikelihoods(
        model, processor, records[:1], [VALID.split("<answer>")[0]], batch_size=1
    )
    np.testing.assert_allclose(cut, batched[:1], atol=1e-5, rtol=0)


def test_normalise_sums_to_one_and_keeps_the_ranking():
    loglik = np.array(
        [[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0], [-900.0, -2.0, -1000.0, -3.0, -2.5, -7]]
    )
    scores = normalise(loglik)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(np.isfinite(scores))
    for row_l, row_s in zip(loglik, scores, strict=True):
        assert list(np.argsort(-row_l, kind="stable")) == list(np.argsort(-row_s, kind="stable"))
    np.testing.assert_allclose(scores[0, 0] / scores[0, 1], math.e)


@pytest.mark.parametrize(
    ("text", "label", "box"),
    [
        (VALID, "MI", (40.0, 40.0, 120.0, 120.0)),
        ("prose before <answer> HCM </answer> and after", "HCM", None),  # invalid, answer present
        (
            "<think>x</think><location>[5,5,50,50]</location><answer>myocardial infarction</answer>",
            "MI",
            (5.0, 5.0, 50.0, 50.0),
        ),
        ("<answer>HCM</answer><answer>DCM</answer>", None, None),  # two answers
        ("<answer>HCM</answer></answer>", None, None),  # repeated closing tag
        ("<answer>sarcoidosis</answer>", None, None),  # not a class
        ("<answer>HCM or DCM</answer>", None, None),  # not exactly one class
        ("<location>[50,50,10,10]</location><answer>nor</answer>", "NOR", None),  # bad box
        ("<think>truncated before the answer", None, None),
        ("", None, None),
    ],
)
def test_extract_answer_is_lenient_about_the_format_only(text, label, box):
    assert extract_answer(text) == (label, box)


# ---------------------------------------------------------------------------------------------
# Metrics


def _table(labels, completions, loglik, boxes=None) -> pd.DataFrame:
    records = [
        {"id": f"r{i}", "patient": f"P{i}", "images": [f"/x/{i}.png"], "label": label,
         "box": (boxes or {}).get(i)}
        for i, label in enumerate(labels)
    ]  # fmt: skip
    return sample_table(records, completions, np.asarray(loglik, dtype=float))


def _done(label: str, box: str = "[10,10,60,60]") -> str:
    return f"<think>reasons</think><location>{box}</location><answer>{label}</answer>"


def test_metrics_against_a_hand_computed_table():
    labels = ["HCM", "HCM", "DCM", "MI", "MI", "NOR", "MI"]
    completions = [
        _done("HCM"),
        _done("DCM"),
        _done("dilated cardiomyopathy"),
        _done("MI", "[40,40,120,120]"),  # IoU 1
        "<think>no answer, truncated",  # unparsed; MI box missing -> IoU 0
        "<answer>NOR</answer>",  # correct answer, invalid format
        _done("MI", "[80,40,160,120]"),  # IoU 40*80 / (2*6400 - 3200) = 1/3
    ]
    rng = np.random.default_rng(0)
    loglik = rng.normal(-5, 2, size=(len(labels), len(CLASSES)))
    boxes = {3: [40, 40, 120, 120], 4: [40, 40, 120, 120], 6: [40, 40, 120, 120]}
    samples = _table(labels, completions, loglik, boxes)
    m = compute_metrics(samples)

    assert m["n"] == 7 and m["classes"] == list(CLASSES)
    assert m["accuracy"] == round(5 / 7, 6)
    assert m["accuracy_strict"] == round(4 / 7, 6)  # the NOR answer is outside a valid format
    assert m["parse_rate"] == round(6 / 7, 6) and m["format_valid_rate"] == round(5 / 7, 6)
    assert m["per_class_accuracy"] == {
        "HCM": 0.5, "DCM": 1.0, "CAM": None, "LVNC": None, "MI": round(2 / 3, 6), "NOR": 1.0
    }  # fmt: skip
    assert m["per_class_n"] == {"HCM": 2, "DCM": 1, "CAM": 0, "LVNC": 0, "MI": 3, "NOR": 1}
    # F1 over all six classes, absent ones 0: HCM 2/3, DCM 2/3, MI 0.8, NOR 1.
    assert m["macro_f1"] == round((2 / 3 + 2 / 3 + 0.8 + 1.0) / 6, 6)
    # OvR AUC: sklearn's binary AUC for each class present in the truth, averaged.
    scores = normalise(loglik)
    truth = np.array(labels)
    expected = {
        c: round(roc_auc_score(truth == c, scores[:, j]), 6)
        for j, c in enumerate(CLASSES)
        if c in labels
    }
    assert {c: v for c, v in m["auc_per_class"].items() if v is not None} == expected
    assert m["auc_per_class"]["CAM"] is None and m["auc_per_class"]["LVNC"] is None
    assert m["auc_macro"] == pytest.approx(np.mean(list(expected.values())), abs=2e-6)
    assert m["mi_n_boxes"] == 3
    assert m["mi_mean_iou"] == round((1 + 1 / 3 + 0) / 3, 6)
    assert m["mi_acc_at_50"] == round(1 / 3, 6)
    conf = m["confusion"]
    assert conf["labels"] == [*CLASSES, "unparsed"]
    assert len(conf["matrix"]) == 6 and all(len(row) == 7 for row in conf["matrix"])
    assert [sum(row) for row in conf["matrix"]] == [m["per_class_n"][c] for c in CLASSES]
    assert conf["matrix"][CLASSES.index("MI")] == [0, 0, 0, 0, 2, 0, 1]
    assert conf["matrix"][CLASSES.index("HCM")] == [1, 1, 0, 0, 0, 0, 0]
    json.dumps(m)  # plain Python types only
    assert samples["iou"].isna().sum() == 4 and samples.loc[4, "iou"] == 0.0


def test_auc_macro_equals_sklearn_ovr_and_a_perfect_table_scores_one():
    rng = np.random.default_rng(1)
    labels = [CLASSES[i % 6] for i in range(30)]
    loglik = rng.normal(size=(30, 6))
    m = compute_metrics(_table(labels, [_done(x) for x in labels], loglik))
    order = sorted(range(6), key=lambda j: CLASSES[j])  # sklearn wants sorted labels
    sk = roc_auc_score(labels, normalise(loglik)[:, order], multi_class="ovr", average="macro")
    assert m["auc_macro"] == pytest.approx(sk, abs=2e-6)

    perfect = np.full((30, 6), -9.0)
    perfect[np.arange(30), [CLASSES.index(x) for x in labels]] = -0.01
    m = compute_metrics(_table(labels, [_done(x) for x in labels], perfect))
    assert m["auc_macro"] == 1.0 and set(m["auc_per_class"].values()) == {1.0}
    assert m["accuracy"] == m["accuracy_strict"] == m["macro_f1"] == 1.0
    assert m["mi_n_boxes"] == 0 and m["mi_mean_iou"] is None and m["mi_acc_at_50"] is None


def test_auc_is_undefined_with_one_class_and_bad_tables_are_refused():
    m = compute_metrics(_table(["HCM", "HCM"], [_done("HCM"), _done("DCM")], np.zeros((2, 6))))
    assert m["auc_macro"] is None and set(m["auc_per_class"].values()) == {None}
    assert m["accuracy"] == 0.5
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(_table([], [], np.zeros((0, 6))))
    bad = _table(["HCM", "DCM"], [_done("HCM"), _done("DCM")], np.zeros((2, 6)))
    bad.loc[1, "label"] = "ARVC"
    with pytest.raises(ValueError, match="unknown truth label.*ARVC"):
        compute_metrics(bad)
    with pytest.raises(ValueError, match="do not match"):
        _table(["HCM"], [_done("HCM")], np.zeros((1, 5)))


# ---------------------------------------------------------------------------------------------
# Harness


def _plain(value):
    """Parquet gives lists back as numpy arrays; compare as lists."""
    return value.tolist() if isinstance(value, np.ndarray) else value


def test_evaluate_model_is_deterministic_and_the_table_round_trips(tiny, test_set, tmp_path):
    first = evaluate_model(str(tiny), test_set, batch_size=3, max_new_tokens=16, score_batch_size=4)
    second = evaluate_model(
        str(tiny), test_set, batch_size=3, max_new_tokens=16, score_batch_size=4
    )
    samples, metrics, timing = first
    assert json.dumps(metrics, sort_keys=True) == json.dumps(second[1], sort_keys=True)
    assert list(samples["completion"]) == list(second[0]["completion"])
    assert metrics["n"] == len(SPECS) == timing["samples"]
    assert timing["forward_passes_for_scoring"] == 2 * math.ceil(len(SPECS) / 4)  # prefix + rest
    assert set(timing) == {
        "decode_seconds", "score_seconds", "samples", "decode_samples_per_s",
        "forward_passes_for_scoring",
    }  # fmt: skip
    np.testing.assert_allclose(samples[[f"score_{c}" for c in CLASSES]].sum(axis=1), 1.0)
    assert list(samples["label"]) == SPECS and samples["box_true"][4] == [40.0, 40.0, 120.0, 120.0]

    path = tmp_path / "samples.parquet"
    samples.to_parquet(path, index=False)
    back = pd.read_parquet(path)
    assert list(back.columns) == list(samples.columns)
    assert compute_metrics(back) == metrics  # the metrics can be recomputed from the file
    for column in samples.columns:
        assert [_plain(v) for v in back[column]] == [_plain(v) for v in samples[column]] or (
            column == "iou" and back[column].equals(samples[column])
        ), column


def test_cli_accepts_another_model_by_path(tmp_path, test_set, capsys):
    other = build_tiny(tmp_path / "other", _corpus(), TinyConfig(seed=7, text_layers=1))
    out = tmp_path / "eval"
    code = harness_main(
        ["--model", str(other), "--test", str(test_set), "--out-dir", str(out),
         "--batch-size", "4", "--max-new-tokens", "8", "--limit", "3"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    text = (out / "metrics.json").read_text()
    assert text.endswith("}\n") and json.loads(text)["n"] == 3
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"
    assert len(pd.read_parquet(out / "samples.parquet")) == 3


def test_cli_missing_test_file_is_one_line(tiny, tmp_path, capsys):
    code = harness_main(
        ["--model", str(tiny), "--test", str(tmp_path / "nope.jsonl"), "--out-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "nope.jsonl" in err
    with pytest.raises(EvalInputError, match="label 'ARVC'"):
        bad = write_test_set(tmp_path / "bad", ["HCM", "ARVC"])
        evaluate_model(str(tiny), bad)


def test_cli_missing_model_folder_exits_2_without_traceback(test_set, tmp_path):
    missing = tmp_path / "no_such_model"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "cmr_rd.evaluate.harness", "--model", str(missing), "--test",
           str(test_set), "--out-dir", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "no_such_model" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
