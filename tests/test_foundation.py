"""The foundation stage's pool, questions and vision pretraining, and the guard that the image
path learns: SFT on the real images beats the same SFT on blank images on held-out patients."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cmr_rd.classes import CLASSES
from cmr_rd.format import parse_completion
from cmr_rd.foundation.pool import PoolConfig, build_pool, pool_jobs
from cmr_rd.foundation.questions import QUESTIONS, question_records
from cmr_rd.foundation.vision import CATEGORICAL, VisionConfig, pretrain_tower
from cmr_rd.model.backbone import TinyConfig, build_tiny, load_backbone
from cmr_rd.prompts import DIAGNOSTIC_QUERY
from cmr_rd.synth.cohort import plan_patient

POOL = PoolConfig(patients=12, slices_per_patient=3, seed=91, lge_slices=6, matrix=96)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("pool")
    return root, build_pool(POOL, root, 256, 120.0)


def test_pool_is_deterministic_whatever_the_workers(pool, tmp_path):
    root, findings = pool
    again = build_pool(POOL, tmp_path, 256, 120.0, workers=2)
    assert again == findings
    for f in findings:
        png = (root / f["image"]).read_bytes()
        assert hashlib.sha256(png).hexdigest() == f["sha256"]
        assert (tmp_path / f["image"]).read_bytes() == png


def test_findings_are_consistent_and_carry_no_diagnosis(pool):
    _, findings = pool
    assert len(findings) == POOL.patients * POOL.slices_per_patient
    for f in findings:
        assert "label" not in f and not set(map(str, f.values())) & set(CLASSES)
        x1, y1, x2, y2 = f["lv_box"]
        assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256
        assert f["enhancement"] == (f["enhanced_box"] is not None) == bool(f["enhanced_wall"])
        for key, values in CATEGORICAL.items():
            assert f[key] in values
    # The pool holds every kind of finding, not one class's look.
    assert {f["cavity"] for f in findings} == {"small", "normal", "dilated"}
    assert {f["thickness"] for f in findings} == {"thin", "normal", "thick"}
    assert {f["enhancement"] for f in findings} == {True, False}
    assert any(f["trabeculated"] for f in findings)


def test_questions_answer_in_the_format_with_an_option_name_and_never_ask_the_diagnosis(pool):
    root, findings = pool
    records = question_records(findings, root.as_posix(), per_image=7, seed=3)
    assert {r["question"] for r in records} == set(QUESTIONS)
    for record in records:
        user = record["messages"][0]["content"][1]["text"]
        target = parse_completion(record["messages"][1]["content"][0]["text"])
        assert target.valid, target.reason
        assert target.answer_text not in CLASSES  # never a diagnosis
        assert f"{target.answer_text} (" in user  # the answer is an option's name, copied
        assert user != DIAGNOSTIC_QUERY and "disease" not in user.lower()
        for name in CLASSES:
            assert name not in user.split()
    assert question_records(findings, root.as_posix(), 7, 3) == records


def test_renamed_options_are_answered_by_copying_a_fresh_code(pool):
    """With renamed_share, that share of the questions name their options with fresh codes (never
    a class name): the answer is the code of the option that fits the image, the description is
    the one the plain question had, and the other questions are unchanged."""
    root, findings = pool
    plain = question_records(findings, root.as_posix(), per_image=7, seed=3)
    mixed = question_records(findings, root.as_posix(), per_image=7, seed=3, renamed_share=0.5)
    assert len(mixed) == len(plain)
    renamed = [(p, m) for p, m in zip(plain, mixed, strict=True) if m["renamed"]]
    assert 0.35 < len(renamed) / len(mixed) < 0.65
    codes = set()
    for p, m in renamed:
        user = m["messages"][0]["content"][1]["text"]
        target = parse_completion(m["messages"][1]["content"][0]["text"])
        old = parse_completion(p["messages"][1]["content"][0]["text"])
        assert target.valid and target.think == old.think and target.box == old.box
        code = target.answer_text
        assert code.isupper() and 2 <= len(code) <= 4 and code not in CLASSES
        assert code != old.answer_text and m["answer"] == code
        # The code names the option whose description the plain question's answer had.
        description = p["messages"][0]["content"][1]["text"].split(f"{old.answer_text} (")[1]
        assert f"{code} ({description.split(')')[0]})" in user
        assert old.answer_text + " (" not in user
        codes.add(code)
    assert len(codes) > len(renamed) / 4  # fresh codes, not a fixed vocabulary
    unchanged = [(p, m) for p, m in zip(plain, mixed, strict=True) if not m["renamed"]]
    assert all({**p, "renamed": False} == m for p, m in unchanged)
    with pytest.raises(ValueError, match="renamed_share"):
        question_records(findings, root.as_posix(), 7, 3, renamed_share=1.5)


def test_the_pool_shares_no_patient_with_a_cohort_under_another_seed():
    """Same generator, different seed: other anatomy, other identifiers, other reports."""
    cohort = PoolConfig(patients=12, seed=7, lge_slices=6, matrix=96)
    plans = [plan_patient(j) for j in pool_jobs(cohort, Path("."))]
    pool_plans = [plan_patient(j) for j in pool_jobs(POOL, Path("."))]
    assert not {p.phi.mrn for p in plans} & {p.phi.mrn for p in pool_plans}
    assert not {p.report for p in plans} & {p.report for p in pool_plans}


def test_vision_pretraining_learns_the_findings_and_is_seeded(pool, tmp_path):
    root, findings = pool
    corpus = [r["messages"][0]["content"][1]["text"] for r in
              question_records(findings, root.as_posix(), 2, 1)]  # fmt: skip
    init = build_tiny(tmp_path / "init", corpus, TinyConfig())
    cfg = VisionConfig(steps=40, batch_size=16, holdout=0.2, threads=1)
    runs = []
    for _ in range(2):
        model, processor = load_backbone(str(init))
        before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
        summary = pretrain_tower(model, processor, findings, root.as_posix(), cfg)
        after = model.model.vision_tower.state_dict()
        runs.append((summary, after))
        assert any(not torch.equal(before[k], after[k]) for k in before)
    (first, weights), (second, again) = runs
    assert first["loss_last"] < 0.8 * first["loss_first"]
    assert first == second  # the summary is an output: same bytes on rerun
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert first["heldout_images"] > 0 and set(first["heldout_accuracy"]) == set(CATEGORICAL)


def test_a_pool_seed_equal_to_the_cohort_seed_is_refused(repo, tmp_path):
    from cmr_rd.devtools import copy_workflow, snakemake

    work = copy_workflow(tmp_path / "wf", repo)
    (work / "config/same.yaml").write_text(
        "seed: 5\nmodel:\n  foundation:\n    pool:\n      seed: 5\n"
    )
    result = snakemake(work, "-n", "--configfile", "config/same.yaml")
    assert result.returncode != 0
    assert "model.foundation.pool.seed equals seed" in result.stderr + result.stdout


def _blank(records: list[dict], root: Path) -> list[dict]:
    blank = root / "blank.png"
    shutil.copy(records[0]["images"][0], blank)
    from PIL import Image

    Image.new("L", (256, 256), 0).save(blank)
    return [{**r, "images": [str(blank)]} for r in records]


def _write(records: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.slow
def test_the_image_path_learns(tmp_path):
    """The guard: on the pipeline's own images (the generator through ingestion's pixel path),
    a tower pretrained on the findings and an SFT that reads the slice tell three classes apart
    on patients it never saw; the same SFT on blank images can only guess. This is the test that
    fails when a change stops the image from reaching the language model."""
    from cmr_rd.format import render_target
    from cmr_rd.model.generate import check_checkpoint
    from cmr_rd.model.train import TrainConfig, train

    labels = ("HCM", "DCM", "NOR")
    cfg = PoolConfig(patients=120, slices_per_patient=2, seed=4242, lge_slices=6, matrix=96)
    findings = build_pool(cfg, tmp_path / "pool", 256, 120.0, workers=2)
    kind = {f"pool{cfg.seed}-{j.index:05d}": j.label for j in pool_jobs(cfg, tmp_path)}
    findings = [f for f in findings if kind[f["patient"]] in labels]
    rng = np.random.default_rng(0)
    patients = sorted({f["patient"] for f in findings})
    held = set(rng.choice(patients, size=len(patients) // 4, replace=False))

    def record(f: dict, answer: bool) -> dict:
        label = kind[f["patient"]]
        user = {"role": "user", "content": [{"type": "image"},
                                            {"type": "text", "text": DIAGNOSTIC_QUERY}]}  # fmt: skip
        messages = [user]
        if answer:
            target = render_target(f"The wall is {f['thickness']} and the cavity {f['cavity']}.",
                                   f["lv_box"], label)  # fmt: skip
            messages.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
        return {"id": f["image"], "images": [str(tmp_path / "pool" / f["image"])],
                "messages": messages, "label": label}  # fmt: skip

    train_set = [record(f, True) for f in findings if f["patient"] not in held]
    heldout = [record(f, False) for f in findings if f["patient"] in held]
    corpus = [DIAGNOSTIC_QUERY] + [r["messages"][1]["content"][0]["text"] for r in train_set]
    init = build_tiny(tmp_path / "init", corpus, TinyConfig())
    model, processor = load_backbone(str(init))
    pool_train = [f for f in findings if f["patient"] not in held]
    pretrain_tower(model, processor, pool_train, str(tmp_path / "pool"),
                   VisionConfig(steps=300, batch_size=32, holdout=0.0, threads=2))  # fmt: skip
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")

    sft = TrainConfig(stage="sft", max_steps=150, batch_size=16, lr=0.003, save_steps=1000,
                      logging_steps=50, threads=2)  # fmt: skip
    accuracy = {}
    for name, records, prompts in (
        ("real", train_set, heldout),
        ("blank", _blank(train_set, tmp_path), _blank(heldout, tmp_path)),
    ):
        data = _write(records, tmp_path / f"{name}.jsonl")
        train(tmp_path / "base", data, tmp_path / name, sft)
        report = check_checkpoint(tmp_path / name / "final",
                                  _write(prompts, tmp_path / f"{name}_prompts.jsonl"),
                                  batch_size=64, max_new_tokens=48)  # fmt: skip
        accuracy[name] = report["accuracy"]
    print("held-out accuracy", accuracy, len(heldout))
    assert len(heldout) >= 30
    assert accuracy["real"] >= accuracy["blank"] + 0.25, accuracy


def test_the_tokenizer_corpus_is_the_pools_clinical_text_and_nothing_else():
    from cmr_rd.foundation.corpus import pool_texts, report_body

    lines = list(pool_texts(POOL, POOL.seed))
    assert lines == list(pool_texts(POOL, POOL.seed))  # the same lines on every run
    assert lines[0] == DIAGNOSTIC_QUERY
    text = "\n".join(lines)
    # Each patient's report body, its findings caption and its reasoning chain are there ...
    assert text.count("Final diagnosis") + text.count("Conclusion") + text.count("consistent") > 0
    assert sum("LGE" in line for line in lines) >= POOL.patients
    # ... never the header or the signature, with their invented names and numbers.
    for job in pool_jobs(POOL, Path(".")):
        plan = plan_patient(job)
        body = report_body(plan.report)
        assert body.split("\n", 1)[0].startswith(("CLINICAL", "INDICATION", "HISTORY"))
        for identifier in (plan.phi.mrn, plan.phi.accession, plan.phi.report_name):
            assert identifier not in text
    assert "Reported by" not in text and "MRN" not in text
