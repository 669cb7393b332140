"""API-served VLMs as evaluation rows (cmr_rd.evaluate.api, rule evaluate_api).

Unit tests of the class scores read from log-probabilities, of what a request carries and of
the missing-key error; then the rule end to end through Snakemake against the loopback OpenAI
server answering as a VLM would (it reads the image it is sent), with injected faults.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image, PngImagePlugin

from cmr_rd.classes import CLASSES
from cmr_rd.devtools import snakemake
from cmr_rd.evaluate.api import (
    NOT_REQUESTED_NOTE,
    UNLISTED_GAP,
    answer_logliks,
    build_request,
    evaluate_api,
    llm_config,
)
from cmr_rd.evaluate.harness import EvalInputError
from cmr_rd.evaluate.metrics import NO_SCORES_NOTE
from cmr_rd.prompts import DIAGNOSTIC_QUERY
from cmr_rd.rewrite.client import MissingAPIKeyError, cache_key
from conftest import copy_run
from openai_loopback import GARBAGE_TEXT, LoopbackOpenAI, images_of, prompt_of, token_logprobs

KEY_ENV = "CMR_RD_TEST_VLM_KEY"
KEY = "sk-vlm-loopback-5b1e07c3"


def _lp(token: str, logprob: float, top: list[tuple[str, float]]) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "top": [{"token": t, "logprob": v} for t, v in top]}


# ----------------------------------------------------------------------------- class scores


def test_answer_logliks_reads_the_first_answer_token() -> None:
    head = [_lp("<think>x</think><answer", -0.01, []), _lp(">", -0.0, [])]
    answer = _lp("MI", -0.1, [("MI", -0.1), ("M", -2.0), ("H", -2.5), ("Norm", -3.0), ("LV", -4.0)])
    scores = answer_logliks([*head, answer, _lp("</answer>", 0.0, [])])
    got = dict(zip(CLASSES, scores, strict=True))
    assert got["MI"] == -0.1  # the best of "MI" and the prefix "M"
    assert got["HCM"] == -2.5 and got["LVNC"] == -4.0
    floor = -4.0 - UNLISTED_GAP  # "Norm" is not a prefix of NOR (case), so NOR is unlisted
    assert got["NOR"] == got["DCM"] == got["CAM"] == floor

    # the tag's ">" inside the answer's token; spaces before the name; "MI<" names MI
    straddle = [
        _lp("<answer", 0.0, []),
        _lp(">C", -0.3, [(">C", -0.3), ("> D", -1.2), (">MI<", -2.2), ("C", -1.0), (">X", -3.0)]),
        _lp("AM</answer>", 0.0, []),
    ]
    got = dict(zip(CLASSES, answer_logliks(straddle), strict=True))
    assert (got["CAM"], got["DCM"], got["MI"]) == (-0.3, -1.2, -2.2)  # "C" lacks the ">": ignored
    assert got["HCM"] == -3.0 - UNLISTED_GAP

    # the last <answer> counts; none, or nothing after it, or no log-probabilities: None
    twice = [_lp("<answer>H", -5.0, []), _lp("</answer><answer>", 0.0, []), _lp("D", -0.2, [])]
    assert dict(zip(CLASSES, answer_logliks(twice), strict=True))["DCM"] == -0.2
    assert answer_logliks([_lp("no tags here", -0.1, [])]) is None
    assert answer_logliks([_lp("<answer>", -0.1, []), _lp("  ", -0.1, [])]) is None
    assert answer_logliks(None) is None and answer_logliks([]) is None


# ----------------------------------------------------------------------------- requests


def _record(tmp: Path, i: int, label: str, value: int, system: str | None = None) -> dict:
    path = tmp / f"P{i:04d}secret_z0{i}.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Patient Hescyra Umbrwick")  # a text chunk must not travel
    Image.new("L", (16, 16), value).save(path, pnginfo=info)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": DIAGNOSTIC_QUERY}]}
    ]
    if system:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    return {
        "id": f"P{i:04d}secret_z0{i}",
        "patient": f"P{i:04d}secret",
        "images": [str(path)],
        "label": label,
        "box": None,
        "messages": messages,
        "source": "cmr",
    }


def test_request_carries_the_prompt_and_the_pixels_only(tmp_path: Path) -> None:
    record = _record(tmp_path, 1, "HCM", 77, system="You are a cardiac radiologist.")
    req = build_request(record, 1)
    assert (req.system, req.prompt) == ("You are a cardiac radiologist.", DIAGNOSTIC_QUERY)
    assert req.item_id == record["id"] and set(req.known) == {record["id"], record["patient"]}
    [url] = req.images
    assert url.startswith("data:image/png;base64,")
    png = base64.b64decode(url.split(",", 1)[1])
    assert b"Umbrwick" not in png and b"Umbrwick" in Path(record["images"][0]).read_bytes()
    with Image.open(io.BytesIO(png)) as image:
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(record["images"][0])))
    sent = req.system + req.prompt + "".join(req.images)
    assert "secret" not in sent and str(tmp_path) not in sent
    assert build_request(_record(tmp_path, 2, "NOR", 5), 2).system == ""

    bad = dict(record, images=[])
    with pytest.raises(EvalInputError, match=r"test record 3 \(P0001secret_z01\) has no image"):
        build_request(bad, 3)
    jpeg = tmp_path / "x.jpg"
    Image.new("RGB", (4, 4)).save(jpeg)
    with pytest.raises(EvalInputError, match="is JPEG, not a PNG"):
        build_request(dict(record, images=[str(jpeg)]), 1)

    cfg = llm_config({"name": "A", "model": "vlm-x", "top_logprobs": 5})
    assert (cfg.api, cfg.temperature, cfg.top_logprobs, cfg.model) == ("chat", 0.0, 5, "vlm-x")
    assert cfg.price_input_per_mtok == 0.0 and cfg.api_key_env == "OPENAI_API_KEY"
    same = llm_config({"name": "A", "model": "vlm-x", "top_logprobs": 5, "temperature": 0})
    assert cache_key(same, "", "q", ("u",)) == cache_key(cfg, "", "q", ("u",))
    with pytest.raises(EvalInputError, match="'B'.*top_logprobs must be between 0 and 20"):
        llm_config({"name": "B", "model": "m", "top_logprobs": 40})


def _write_test(tmp: Path, labels: list[str]) -> Path:
    records = [_record(tmp, i, lab, 20 * i) for i, lab in enumerate(labels)]
    path = tmp / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_missing_key_stops_only_when_requests_must_be_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test = _write_test(tmp_path, ["HCM", "NOR"])
    entry = {"name": "A", "model": "vlm-x", "api_key_env": KEY_ENV, "base_url": "http://x/v1"}
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(MissingAPIKeyError, match=f"environment variable {KEY_ENV} is not set"):
        evaluate_api(entry, test, tmp_path / "cache", tmp_path / "ledger.csv")


def test_no_logprobs_means_nan_scores_and_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test = _write_test(tmp_path, ["HCM", "NOR", "MI"])
    monkeypatch.setenv(KEY_ENV, KEY)
    answers = {20 * i: c for i, c in enumerate(["HCM", "NOR", "DCM"])}

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        [url] = images_of(body)
        with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
            label = answers[int(np.asarray(image)[0, 0])]
        return _reply(label, body)

    with LoopbackOpenAI(api_key=KEY, responder=respond) as server:
        base = {"name": "A", "model": "vlm-x", "api_key_env": KEY_ENV, "base_url": server.base_url}
        for extra, note in (({}, NOT_REQUESTED_NOTE), ({"top_logprobs": 3}, NO_SCORES_NOTE)):
            server.responder = lambda body: respond(body)["text"]  # a server without logprobs
            samples, metrics, timing = evaluate_api(
                {**base, **extra}, test, tmp_path / "cache", tmp_path / f"l{len(extra)}.csv"
            )
            assert list(samples["predicted"]) == ["HCM", "NOR", "DCM"]
            assert metrics["accuracy"] == pytest.approx(2 / 3)
            assert samples[[f"score_{c}" for c in CLASSES]].isna().all().all()
            assert metrics["auc_macro"] is None and metrics["auc_note"] == note
            assert metrics["api"]["ok"] == 3 and timing["calls"] == 3
        assert all(r["images"] for r in server.requests)


# ----------------------------------------------------------------------------- the loopback VLM


def _reply(label: str, body: dict[str, Any], runner_up: str | None = None) -> dict[str, Any]:
    """A valid completion for `label`, with log-probabilities at the answer's first token."""
    think = f"<think>The enhancement pattern is typical of {label}.</think>"
    head = f"{think}<location>[10,10,40,40]</location><answer>"
    other = runner_up or next(c for c in CLASSES if c != label)
    rows = [
        (head, -0.05, []),
        (label, -0.1, [(label, -0.1), (other[:1], -2.5), ("The", -6.0)]),
        ("</answer>", -0.01, []),
    ]
    return {"text": f"{head}{label}</answer>", "logprobs": token_logprobs(rows)}


def _pixels_key(url: str) -> str:
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
        return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def _file_key(path: Path) -> str:
    with Image.open(path) as image:
        return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


class FakeVLM:
    """Answers by looking the image up: right, except for the cases told to be wrong."""

    def __init__(self, work: Path, records: list[dict]) -> None:
        self.case_of = {_file_key(work / r["images"][0]): r["id"] for r in records}
        self.label = {r["id"]: r["label"] for r in records}
        self.wrong: set[str] = set()
        self.plan: dict[tuple[str, str], list[str]] = {}  # (model, case id) -> faults in order

    def case(self, body: dict[str, Any]) -> str:
        [url] = images_of(body)
        return self.case_of[_pixels_key(url)]

    def answer(self, case: str) -> str:
        truth = self.label[case]
        return CLASSES[(CLASSES.index(truth) + 1) % len(CLASSES)] if case in self.wrong else truth

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        case = self.case(body)
        return _reply(self.answer(case), body, runner_up=self.label[case])

    def fault_for(self, body: dict[str, Any]) -> str | None:
        faults = self.plan.get((body["model"], self.case(body)))
        return faults.pop(0) if faults else None


@pytest.mark.slow
def test_api_models_through_snakemake(
    tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy of the finished tiny run: its test split is there, so only the API jobs run.
    work = copy_run(tiny_run, tmp_path / "wf")
    base = ["--cores", "2", "--configfile", "config/tiny.yaml"]
    lines = (work / "results/datasets/test.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    n = len(records)
    assert n >= 12 and {r["label"] for r in records} == set(CLASSES)

    vlm = FakeVLM(work, records)
    ids = [r["id"] for r in records]
    vlm.wrong = set(ids[-3:])
    transient = {ids[0]: ["429"], ids[1]: ["500"], ids[2]: ["503", "503"], ids[3]: ["slow"]}
    transient |= {ids[5]: ["broken_json"]}
    for model in ("vlm-lp", "vlm-plain"):
        vlm.plan |= {(model, case): list(faults) for case, faults in transient.items()}
        vlm.plan[(model, ids[4])] = ["garbage"]  # a reply without the format: the model's answer
    vlm.plan[("vlm-lp", ids[6])] = ["503"] * 3  # fails after its retries, this run only

    server = LoopbackOpenAI(api_key=KEY, responder=vlm, slow_s=2.0)
    server.fault_for = vlm.fault_for
    monkeypatch.setenv(KEY_ENV, KEY)
    common = {"api_key_env": KEY_ENV, "timeout_s": 1.0, "max_retries": 2, "max_concurrency": 3}
    models = [
        {"name": "VLM-lp", "model": "vlm-lp", "top_logprobs": 3, "price_input_per_mtok": 1.5},
        {"name": "VLM-plain", "model": "vlm-plain", "price_output_per_mtok": 4.0},
    ]
    targets = [f"results/eval/api/{m['name']}/metrics.json" for m in models]
    # a third model whose key variable is unset: its job alone stops, with one line
    monkeypatch.delenv("CMR_RD_UNSET_KEY", raising=False)
    nokey = {"name": "VLM-nokey", "model": "vlm-nokey", "api_key_env": "CMR_RD_UNSET_KEY"}
    with server:
        for m in models:
            m |= {**common, "base_url": server.base_url}
        nokey["base_url"] = server.base_url
        config = {"evaluate": {"api_models": [*models, nokey]}}
        (work / "config/api.yaml").write_text(yaml.safe_dump(config))
        args = [*targets, *base, "config/api.yaml"]  # targets before --configfile's values
        nokey_target = "results/eval/api/VLM-nokey/metrics.json"
        first = snakemake(work, nokey_target, *args, "--keep-going")
        assert first.returncode == 1, first.stderr[-4000:]
        assert "Error in rule evaluate_api" in first.stderr
        assert first.stderr.count("Error in rule") == 1
        assert not (work / "results/eval/api/VLM-nokey/metrics.json").exists()
        errors = [
            line
            for line in (work / "logs/eval/api/VLM-nokey.log").read_text().splitlines()
            if " ERROR " in line
        ]
        assert len(errors) == 1 and "environment variable CMR_RD_UNSET_KEY is not set" in errors[0]
        assert "Traceback" not in (work / "logs/eval/api/VLM-nokey.log").read_text()
        requests_first = len(server.requests)
        outputs = {m["name"]: _outputs(work, m["name"]) for m in models}

        # rerun: only the case that failed is asked again; everything else is a cache hit
        rerun = snakemake(work, *args, "--forcerun", "evaluate_api")
        assert rerun.returncode == 0, rerun.stderr[-4000:]
        again = {m["name"]: _outputs(work, m["name"]) for m in models}
        new = server.requests[requests_first:]
        bodies = server.bodies()

    failed_case = ids[6]
    assert [vlm.case(r["body"]) for r in new] == [failed_case]
    assert new[0]["body"]["model"] == "vlm-lp"

    for name, (samples, metrics, ledger_rows, totals, timing) in outputs.items():
        lp = name == "VLM-lp"
        assert list(samples["id"]) == ids  # every test case, in order
        assert set(samples["api_status"]) <= {"ok", "failed"}
        by_id = samples.set_index("id")
        assert by_id.loc[ids[4], "completion"] == GARBAGE_TEXT
        assert not by_id.loc[ids[4], "parsed"]
        expect_failed = [failed_case] if lp else []
        assert list(samples.loc[samples["api_status"] == "failed", "id"]) == expect_failed
        if lp:
            row = by_id.loc[failed_case]
            assert row["completion"] == "" and not row["parsed"] and not row["correct"]
            assert row["api_reason"] == "API error 503 after retries"
        wrong = set(vlm.wrong) | {ids[4]} | set(expect_failed)
        assert set(samples.loc[~samples["correct"], "id"]) == wrong
        assert metrics["accuracy"] == pytest.approx((n - len(wrong)) / n, abs=1e-6)
        assert metrics["model"] == f"api/{name}"
        api = metrics["api"]
        assert (api["ok"], api["failed"], api["refused"]) == (
            n - len(expect_failed),
            len(expect_failed),
            0,
        )
        if lp:
            assert metrics["auc_note"] is None and metrics["auc_macro"] > 0.8
            assert api["logprobs"]["rows_scored_equal"] == 2  # the garbage reply, the failed case
            assert samples[[f"loglik_{c}" for c in CLASSES]].notna().all().all()
            assert metrics["patient"]["auc_macro"] is not None
        else:
            assert metrics["auc_macro"] is None and metrics["auc_note"] == NOT_REQUESTED_NOTE
            assert samples[[f"score_{c}" for c in CLASSES]].isna().all().all()
        # the ledger: every call (retries of unusable replies too), tokens, cost
        assert totals["calls"] == len(ledger_rows) == timing["calls"]
        assert totals["calls"] >= n + 1  # broken_json is asked again by our own retry
        assert totals["cache_hits"] == 0 and totals["ok"] == api["ok"]
        tin = sum(int(r["input_tokens"]) for r in ledger_rows)
        tout = sum(int(r["output_tokens"]) for r in ledger_rows)
        price_in, price_out = (1.5, 0.0) if lp else (0.0, 4.0)
        assert totals["cost_usd"] == pytest.approx(
            (price_in * tin + price_out * tout) / 1e6, abs=1e-6
        )
        assert totals["cost_usd"] > 0 and api["cost_usd"] > 0

        samples2, metrics2, ledger2, totals2, timing2 = again[name]
        if lp:
            assert (totals2["calls"], totals2["cache_hits"]) == (1, n - 1)
            assert metrics2["api"]["failed"] == 0 and metrics2["accuracy"] > metrics["accuracy"]
        else:
            assert (totals2["calls"], totals2["cache_hits"], totals2["cost_usd"]) == (0, n, 0.0)
            assert ledger2 == [] and timing2["calls"] == 0
            assert metrics2 == metrics  # the same file, from the cache
            assert (work / f"results/eval/api/{name}/metrics.json").read_bytes() == json.dumps(
                metrics, sort_keys=True, indent=2
            ).encode() + b"\n"
            pd.testing.assert_frame_equal(samples2, samples)

    # what was sent: the fixed prompt and the PNG, no PHI, no pseudonym, no path
    phi = json.loads((work / "data/synthetic/phi_strings.json").read_text())["strings"]
    manifest = pd.read_parquet(work / "results/ingest/manifest.parquet")
    pseudonyms = {str(p) for p in manifest["patient"]} | set(ids)
    assert len(pseudonyms) > n
    # the images' base64 is searched as pixels (no text chunk), not as text (random hits)
    png = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")
    haystack = "\x01".join(png.sub("data:image/png;base64,PNG", b) for b in bodies).lower()
    assert [s for s in phi if len(s) >= 4 and s.lower() in haystack] == []
    assert [p for p in pseudonyms if p.lower() in haystack] == []
    for r in server.requests:
        for url in r["images"]:
            with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as image:
                assert image.format == "PNG" and image.text == {}
    assert "results/" not in haystack and "ingest" not in haystack
    for r in server.requests:
        body = r["body"]
        assert body["model"] in ("vlm-lp", "vlm-plain")  # none from the model without a key
        assert set(body) <= {"model", "messages", "temperature", "logprobs", "top_logprobs"}
        assert body["temperature"] == 0 and len(r["images"]) == 1
        assert prompt_of(body) == ("", DIAGNOSTIC_QUERY)
        assert ("logprobs" in body) == (body["model"] == "vlm-lp")
    # the key never lands in a file
    for folder in ("results", "logs", ".snakemake/log"):
        for path in (work / folder).rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path
    assert re.search(r"api/VLM-lp: ACC", (work / "logs/eval/api/VLM-lp.log").read_text())


def _outputs(work: Path, name: str) -> tuple:
    folder = work / "results/eval/api" / name
    samples = pd.read_parquet(folder / "samples.parquet")
    metrics = json.loads((folder / "metrics.json").read_text())
    with open(folder / "ledger.csv", newline="") as handle:
        import csv

        rows = list(csv.DictReader(handle))
    totals = json.loads((folder / "ledger.json").read_text())
    timing = json.loads((folder / "timing.json").read_text())
    assert math.isfinite(timing["seconds"])
    return samples, metrics, rows, totals, timing
