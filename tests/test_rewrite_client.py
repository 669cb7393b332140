"""The real openai client against a loopback OpenAI-protocol server on 127.0.0.1.

Covers the PHI gate in front of the network, the content-addressed cache (a rerun makes no
calls), fault handling (429/5xx/timeouts via the client's own retries, malformed replies via
ours), the ledger, bounded concurrency, and that the API key never lands anywhere.
"""

from __future__ import annotations

import csv
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pandas as pd
import pytest

from cmr_rd.rewrite.client import LEDGER_FIELDS, LLMConfig, Request, cache_key, run_requests
from cmr_rd.rewrite.phi import scrub
from openai_loopback import (
    GARBAGE_TEXT,
    LoopbackOpenAI,
    echo_responder,
    images_of,
    prompt_of,
    small_cohort,
)

KEY_ENV = "CMR_RD_TEST_LLM_KEY"
KEY = f"sk-cmr-rd-test-{uuid.uuid4().hex}"
SYSTEM = "Rewrite the de-identified cardiac MRI report as a reasoning template. Reply in JSON."


def validate(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return "reply is not JSON"
    return None if isinstance(data, dict) and "echo" in data else "reply lacks echo"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackOpenAI]:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    srv = LoopbackOpenAI(api_key=KEY).start()
    try:
        yield srv
    finally:
        srv.stop()


def config(srv: LoopbackOpenAI, **kw: Any) -> LLMConfig:
    base = {"base_url": srv.base_url, "api_key_env": KEY_ENV, "timeout_s": 5.0, "max_retries": 2}
    return LLMConfig(**{**base, **kw})


def ledger_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def cohort_requests() -> tuple[list[Request], list[str]]:
    root = small_cohort()
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    strings = json.loads((root / "phi_strings.json").read_text())["strings"]
    reqs = [
        Request(f"P{i:03d}", SYSTEM, "Report:\n" + scrub(r, known=[pid]), known=(pid,))
        for i, (pid, r) in enumerate(zip(table["patient_id"], table["report"], strict=True))
    ]
    return reqs, strings


# ----------------------------------------------------------------------------- whole cohort


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_cohort_round_trip_then_fully_cached(
    server: LoopbackOpenAI, tmp_path: Path, api: str
) -> None:
    reqs, strings = cohort_requests()
    cfg = config(server, api=api)
    ledger = tmp_path / "ledger.csv"
    first = run_requests(reqs, cfg, tmp_path / "cache", ledger, validate)

    assert [r.item_id for r in first] == [r.item_id for r in reqs]
    assert [(r.status, r.cached, r.attempts) for r in first] == [("ok", False, 1)] * len(reqs)
    assert len(server.requests) == len(reqs)
    path = "/v1/responses" if api == "responses" else "/v1/chat/completions"
    assert {r["path"] for r in server.requests} == {path}
    sent = "\x01".join(server.bodies()).lower()
    sent += "\x01".join("\x01".join(prompt_of(r["body"])) for r in server.requests).lower()
    leaked = [s for s in strings if s.lower() in sent]
    assert leaked == [], f"PHI reached the server: {len(leaked)} strings"
    # each reply answers its own prompt, and the body has the shape of the protocol
    by_prompt = {req.prompt: res for req, res in zip(reqs, first, strict=True)}
    for rec in server.requests:
        system, user = prompt_of(rec["body"])
        assert system == SYSTEM
        assert by_prompt[user].reply == echo_responder(rec["body"])
        if api == "responses":
            assert rec["body"]["reasoning"] == {"effort": "medium"}
            assert rec["body"]["model"] == "o3"
        else:
            assert [m["role"] for m in rec["body"]["messages"]] == ["system", "user"]
            assert "temperature" not in rec["body"] and "reasoning" not in rec["body"]

    rows = ledger_rows(ledger)
    assert len(rows) == len(reqs) and all(r["status"] == "ok" for r in rows)
    assert list(rows[0]) == list(LEDGER_FIELDS)
    totals = json.loads(ledger.with_suffix(".json").read_text())
    tin = sum(int(r["input_tokens"]) for r in rows)
    tout = sum(int(r["output_tokens"]) for r in rows)
    assert (totals["calls"], totals["ok"], totals["input_tokens"]) == (len(reqs), len(reqs), tin)
    assert totals["cost_usd"] == pytest.approx((2.0 * tin + 8.0 * tout) / 1e6, abs=1e-5)

    server.reset()
    second = run_requests(reqs, cfg, tmp_path / "cache", ledger, validate)
    assert server.requests == []
    assert [r.reply for r in second] == [r.reply for r in first]
    assert all(r.cached and r.status == "ok" and r.attempts == 0 for r in second)
    totals = json.loads(ledger.with_suffix(".json").read_text())
    assert (totals["calls"], totals["cache_hits"], totals["cost_usd"]) == (0, len(reqs), 0.0)
    assert len(ledger_rows(ledger)) == len(reqs)  # nothing appended by the cached run


def test_cache_layout_and_key(server: LoopbackOpenAI, tmp_path: Path) -> None:
    cfg = config(server)
    key = cache_key(cfg, SYSTEM, "Report: normal study.")
    [res] = run_requests(
        [Request("A", SYSTEM, "Report: normal study.")], cfg, tmp_path, tmp_path / "l.csv", validate
    )
    entry = json.loads((tmp_path / key[:2] / f"{key}.json").read_text())
    assert entry["reply"] == res.reply and set(entry["usage"]) == {"input_tokens", "output_tokens"}
    assert not list(tmp_path.rglob("*.tmp"))
    assert cache_key(cfg, SYSTEM, "Report: normal study.") == key
    for other in (
        config(server, model="o4-mini"),
        config(server, reasoning_effort="high"),
        config(server, template_version="v2"),
        config(server, api="chat"),
    ):
        assert cache_key(other, SYSTEM, "Report: normal study.") != key
    assert cache_key(cfg, SYSTEM, "Report: abnormal study.") != key
    chat = config(server, api="chat")
    assert cache_key(chat, SYSTEM, "x") == cache_key(
        config(server, api="chat", reasoning_effort="high"), SYSTEM, "x"
    )
    assert cache_key(chat, SYSTEM, "x") != cache_key(
        config(server, api="chat", temperature=0.2), SYSTEM, "x"
    )
    # a corrupt entry is a miss, not a crash; identical requests in one batch are asked once
    (tmp_path / key[:2] / f"{key}.json").write_text("{not json")
    server.reset()
    again = run_requests(
        [
            Request("A", SYSTEM, "Report: normal study."),
            Request("B", SYSTEM, "Report: normal study."),
        ],
        cfg,
        tmp_path,
        tmp_path / "l.csv",
        validate,
    )
    assert len(server.requests) == 1
    assert [r.status for r in again] == ["ok", "ok"] and sum(r.cached for r in again) == 1


# ----------------------------------------------------------------------------- faults


def test_faults_end_ok_failed_or_refused(server: LoopbackOpenAI, tmp_path: Path) -> None:
    plan = {
        "T429": ["429"],
        "T500": ["500"],
        "T503": ["503", "503"],
        "TSLOW": ["slow"],
        "TGARBAGE": ["garbage"],
        "TBROKEN": ["broken_json", "garbage"],
        "ALWAYS503": ["503"] * 99,
        "ALWAYSSLOW": ["slow"] * 99,
        "ALWAYSGARBAGE": ["garbage"] * 99,
        "CLEAN": [],
    }

    # The marker goes into the prompt as a plain lower-case word: "T429" itself reads as an ID
    # to the PHI detector, and the gate would rightly refuse it.
    words = {m: m.lower().translate(str.maketrans("0123456789", "abcdefghij")) for m in plan}
    marker_of = {w: m for m, w in words.items()}

    def fault_for(body: dict[str, Any]) -> str | None:
        marker = marker_of.get(prompt_of(body)[1].split()[-1])
        return plan[marker].pop(0) if plan.get(marker) else None

    server.fault_for = fault_for
    server.slow_s = 2.0
    reqs = [Request(m, SYSTEM, f"Normal study. {words[m]}") for m in plan]
    # The detector's finds in a prompt are redacted and the request goes; what the exact known
    # list still sees (a known surname in lower case, which no generic rule reads as a name) is
    # refused and never sent.
    reqs.insert(3, Request("REDACT", SYSTEM, "Patient: Hescyra Umbrwick  DOB: 2003-06-21. CLEAN"))
    known = ("UMBRWICK^HESCYRA",)
    reqs.insert(4, Request("PHI", SYSTEM, "Seen with her brother umbrwick. CLEAN", known=known))
    cfg = config(server, timeout_s=0.5, max_retries=2, malformed_retries=2, max_concurrency=4)
    ledger = tmp_path / "ledger.csv"
    results = run_requests(reqs, cfg, tmp_path / "cache", ledger, validate)

    got = {r.item_id: r for r in results}
    assert [r.item_id for r in results] == [r.item_id for r in reqs]  # none lost, input order
    for name in ("T429", "T500", "T503", "TSLOW", "TGARBAGE", "TBROKEN", "CLEAN", "REDACT"):
        assert got[name].status == "ok" and validate(got[name].reply) is None, name
    assert got["T429"].attempts == got["T503"].attempts == got["TSLOW"].attempts == 1
    assert got["TGARBAGE"].attempts == 2 and got["TBROKEN"].attempts == 3
    assert got["ALWAYS503"].status == "failed"
    assert got["ALWAYS503"].reason == "API error 503 after retries"
    assert got["ALWAYSSLOW"].status == "failed"
    assert got["ALWAYSSLOW"].reason == "timeout after retries"
    assert got["ALWAYSGARBAGE"].status == "failed"
    assert got["ALWAYSGARBAGE"].reason == "malformed reply: reply is not JSON"
    assert got["ALWAYSGARBAGE"].attempts == 3  # 1 + malformed_retries
    assert got["PHI"].status == "refused"
    assert got["PHI"].reason == "PHI detected after scrubbing: known list: known identifier 'xxx+'"
    assert "umbrwick" not in got["PHI"].reason.lower()

    def seen(marker: str) -> int:
        return sum(prompt_of(r["body"])[1].endswith(words[marker]) for r in server.requests)

    assert len(server.requests) > len(reqs)  # the client retried
    assert seen("T429") == 2 and seen("T503") == 3 and seen("TSLOW") == 2
    assert seen("ALWAYS503") == 3 and seen("ALWAYSSLOW") == 3 and seen("ALWAYSGARBAGE") == 3
    assert not any(w in b.lower() for b in server.bodies() for w in ("umbrwick", "hescyra", "2003"))
    assert sum("Patient: [NAME]" in b and "[DATE]" in b for b in server.bodies()) == 1

    rows = ledger_rows(ledger)
    assert sum(r["item_id"] == "ALWAYSGARBAGE" and r["status"] == "malformed" for r in rows) == 3
    assert {r["status"] for r in rows if r["item_id"] == "TBROKEN"} == {"malformed", "ok"}
    assert [r["status"] for r in rows if r["item_id"] == "ALWAYS503"] == ["http_503"]
    assert [r["status"] for r in rows if r["item_id"] == "ALWAYSSLOW"] == ["timeout"]
    totals = json.loads(ledger.with_suffix(".json").read_text())
    assert (totals["ok"], totals["failed"], totals["refused"]) == (8, 3, 1)
    assert totals["calls"] == len(rows)
    # failures are not cached: a rerun asks again for exactly the failed items
    server.reset()
    server.fault_for = None
    rerun = run_requests(reqs, cfg, tmp_path / "cache", ledger, validate)
    assert len(server.requests) == 3
    assert sum(r.status == "ok" for r in rerun) == 11


def test_fault_queue_and_empty_replies(server: LoopbackOpenAI, tmp_path: Path) -> None:
    """The queue of next faults; an empty output text counts as malformed."""
    server.faults.extend(["429", "500"])
    cfg = config(server, max_concurrency=1, malformed_retries=1)
    [res] = run_requests(
        [Request("Q", SYSTEM, "Normal.")], cfg, tmp_path, tmp_path / "l.csv", validate
    )
    assert res.status == "ok" and len(server.requests) == 3
    assert [r["fault"] for r in server.requests] == ["429", "500", None]

    server.reset()
    server.responder = lambda body: ""
    [res] = run_requests(
        [Request("E", SYSTEM, "Other.")], cfg, tmp_path, tmp_path / "l.csv", validate
    )
    assert (res.status, res.reason, res.attempts) == ("failed", "malformed reply: empty reply", 2)
    assert len(server.requests) == 2


# ----------------------------------------------------------------------------- PHI gate


def test_phi_in_a_prompt_is_redacted_or_refused_and_never_sent(
    server: LoopbackOpenAI, tmp_path: Path
) -> None:
    """The detector's finds are redacted to typed placeholders before the request goes; a known
    identifier the detector cannot see (a surname in lower case) refuses the request."""
    reqs = [
        Request("raw", SYSTEM, "Name: Hescyra Umbrwick\nHospital number: H-9592820\nNormal."),
        Request(
            "known", SYSTEM, "Report: seen with zorquillbrack today.", known=("ZORQUILLBRACK^E",)
        ),
    ]
    results = run_requests(reqs, config(server), tmp_path / "c", tmp_path / "l.csv", validate)
    assert [r.status for r in results] == ["ok", "refused"]
    assert results[1].reason == "PHI detected after scrubbing: known list: known identifier 'xxx+'"
    assert results[1].attempts == 0 and results[1].reply is None
    assert len(server.requests) == 1
    [sent] = [prompt_of(r["body"])[1] for r in server.requests]
    assert sent.startswith("Name: [NAME]") and "[ID]" in sent and sent.endswith("\nNormal.")
    for secret in ("hescyra", "umbrwick", "9592820", "zorquillbrack"):
        assert not any(secret in b.lower() for b in server.bodies())
    assert json.loads((tmp_path / "l.json").read_text())["refused"] == 1


# ----------------------------------------------------------------------------- secrets


def test_key_never_written_logged_or_reported(
    server: LoopbackOpenAI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    reqs, _ = cohort_requests()
    reqs = reqs[:6]
    server.faults.extend(["garbage", "503", "broken_json"])
    results = run_requests(reqs, config(server), tmp_path / "cache", tmp_path / "l.csv", validate)
    assert all(r.status == "ok" for r in results)
    # a wrong key: the server answers 401 and (like the real API) quotes the key it was sent
    wrong = f"sk-wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, wrong)
    fresh = [Request(f"N{i}", SYSTEM, f"Normal study number {i}.") for i in range(4)]
    denied = run_requests(
        fresh, config(server, max_concurrency=1), tmp_path / "cache", tmp_path / "l.csv", validate
    )
    assert [r.status for r in denied] == ["failed"] * 4
    assert denied[0].reason == "API error 401"
    assert all("authentication failed" in r.reason for r in denied[1:])
    assert sum(r["status"] == 401 for r in server.requests) == 1  # stopped after the first 401

    out, err = capfd.readouterr()
    haystacks = {
        "logs": caplog.text,
        "stdout": out,
        "stderr": err,
        "results": repr(results) + repr(denied),
    }
    for path in tmp_path.rglob("*"):
        if path.is_file():
            haystacks[str(path)] = path.read_text(encoding="utf-8", errors="replace")
    assert len(haystacks) > 6  # cache files, ledger CSV and JSON were written
    assert "Retrying request" in caplog.text  # the logs were really captured
    for where, text in haystacks.items():
        for secret in (KEY, wrong, KEY[-12:], wrong[-12:]):
            assert secret not in text, f"API key found in {where}"


def test_missing_key_raises_only_when_the_network_is_needed(
    server: LoopbackOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(server)
    reqs = [Request("A", SYSTEM, "Normal study.")]
    run_requests(reqs, cfg, tmp_path / "c", tmp_path / "l.csv", validate)
    monkeypatch.delenv(KEY_ENV)
    [cached] = run_requests(reqs, cfg, tmp_path / "c", tmp_path / "l.csv", validate)
    assert cached.cached and cached.status == "ok"
    before = len(server.requests)
    with pytest.raises(RuntimeError, match=KEY_ENV):
        run_requests(
            reqs + [Request("B", SYSTEM, "Another normal study.")],
            cfg,
            tmp_path / "c",
            tmp_path / "l.csv",
            validate,
        )
    assert len(server.requests) == before


# ----------------------------------------------------------------------------- concurrency


def test_concurrency_is_bounded(server: LoopbackOpenAI, tmp_path: Path) -> None:
    server.latency_s = 0.25
    reqs = [Request(f"C{i}", SYSTEM, f"Normal study {i}.") for i in range(8)]
    results = run_requests(
        reqs, config(server, max_concurrency=2), tmp_path, tmp_path / "l.csv", validate
    )
    assert all(r.status == "ok" for r in results)
    assert server.max_in_flight == 2


# ----------------------------------------------------------------------------- the loopback


def test_loopback_replies_pass_strict_sdk_validation(server: LoopbackOpenAI) -> None:
    """The server speaks the protocol: the SDK's strict response validation accepts it."""
    server.responder = lambda body: "hello"
    client = openai.OpenAI(
        api_key=KEY, base_url=server.base_url, max_retries=0, _strict_response_validation=True
    )
    try:
        resp = client.responses.create(
            model="o3", instructions="s", input="p", reasoning={"effort": "low"}
        )
        assert resp.output_text == "hello" and resp.status == "completed"
        assert resp.usage is not None and resp.usage.output_tokens == 2
        chat = client.chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "p"}]
        )
        assert chat.choices[0].message.content == "hello"
        assert chat.usage is not None and chat.usage.completion_tokens == 2
        server.faults.append("garbage")
        assert client.responses.create(model="o3", input="p").output_text == GARBAGE_TEXT
    finally:
        client.close()
    bad = openai.OpenAI(api_key="sk-nope", base_url=server.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model="o3", input="p")
    bad.close()


def test_loopback_default_key_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    srv = LoopbackOpenAI()  # no key given: demand $OPENAI_API_KEY, as the workflow tests do
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key")
    assert srv.authorised("Bearer sk-env-key") and not srv.authorised("Bearer sk-other")
    monkeypatch.delenv("OPENAI_API_KEY")
    assert srv.authorised("Bearer anything") and not srv.authorised("") and not srv.authorised("x")
    assert LoopbackOpenAI(api_key="k").authorised("Bearer k")


# ----------------------------------------------------------------------------- images, logprobs


def _png(path: Path, value: int) -> Path:
    from PIL import Image

    Image.new("L", (8, 8), value).save(path)
    return path


def test_text_cache_keys_are_those_of_before_images_and_logprobs(server: LoopbackOpenAI) -> None:
    """Existing caches stay valid: a text-only key is still the hash of the same payload."""
    import hashlib

    for cfg in (config(server), config(server, api="chat", temperature=0.0)):
        payload = {
            "api": cfg.api,
            "model": cfg.model,
            "system": SYSTEM,
            "prompt": "Report: normal study.",
            "params": cfg.params(),
            "template_version": cfg.template_version,
        }
        canon = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        expected = hashlib.sha256(canon.encode()).hexdigest()
        assert cache_key(cfg, SYSTEM, "Report: normal study.") == expected
        assert cache_key(cfg, SYSTEM, "Report: normal study.", ()) == expected


def test_image_request_as_content_parts_cached_by_image_hash(
    server: LoopbackOpenAI, tmp_path: Path
) -> None:
    from cmr_rd.rewrite.client import image_data_url

    dark, light = _png(tmp_path / "a.png", 10), _png(tmp_path / "b.png", 200)
    url_a, url_b = image_data_url(dark), image_data_url(light)
    assert url_a.startswith("data:image/png;base64,") and url_a != url_b
    with pytest.raises(ValueError, match="not a PNG"):
        image_data_url(tmp_path / "x.bmp")
    prompt = "Which cardiomyopathy does this slice show?"
    for api in ("chat", "responses"):
        server.reset()
        cfg = config(server, api=api)
        text_key = cache_key(cfg, SYSTEM, prompt)
        key_a = cache_key(cfg, SYSTEM, prompt, (url_a,))
        assert len({text_key, key_a, cache_key(cfg, SYSTEM, prompt, (url_b,))}) == 3
        assert cache_key(cfg, SYSTEM, prompt, (url_a, url_b)) != key_a
        reqs = [Request("A", SYSTEM, prompt, images=(url_a,)), Request("T", SYSTEM, prompt)]
        cache = tmp_path / f"cache_{api}"
        results = run_requests(reqs, cfg, cache, tmp_path / f"{api}.csv", validate)
        assert [r.status for r in results] == ["ok", "ok"]
        assert len(server.requests) == 2  # same text, with and without an image: two keys
        text_only, with_image = sorted(server.requests, key=lambda r: len(r["images"]))
        assert with_image["images"] == [url_a] and text_only["images"] == []
        assert prompt_of(with_image["body"]) == (SYSTEM, prompt)
        if api == "chat":
            user = with_image["body"]["messages"][1]["content"]
            assert user == [
                {"type": "text", "text": prompt},
                {"type": "image_url", "image_url": {"url": url_a}},
            ]
            assert text_only["body"]["messages"][1]["content"] == prompt
        else:
            [message] = with_image["body"]["input"]
            assert message["role"] == "user"
            assert [p["type"] for p in message["content"]] == ["input_text", "input_image"]
            assert message["content"][1]["image_url"] == url_a
            assert text_only["body"]["input"] == prompt
        # the image is billed, and the cache holds the hash of the image, not the image
        tokens_in = {
            r["item_id"]: int(r["input_tokens"]) for r in ledger_rows(tmp_path / f"{api}.csv")
        }
        assert tokens_in["A"] > tokens_in["T"] + 80
        entry_text = (cache / key_a[:2] / f"{key_a}.json").read_text()
        assert url_a.split(",")[1][:40] not in entry_text
        server.reset()
        again = run_requests(reqs, cfg, cache, tmp_path / f"{api}.csv", validate)
        assert server.requests == [] and all(r.cached for r in again)
        # no system prompt: none is sent (an evaluation prompt may have none)
        [bare] = run_requests(
            [Request("S", "", prompt, images=(url_a,))], cfg, cache, tmp_path / "s.csv", validate
        )
        assert bare.status == "ok" and prompt_of(server.requests[-1]["body"]) == ("", prompt)
        if api == "chat":
            assert [m["role"] for m in server.requests[-1]["body"]["messages"]] == ["user"]
        else:
            assert "instructions" not in server.requests[-1]["body"]
        server.reset()
        other = run_requests(
            [Request("B", SYSTEM, prompt, images=(url_b,))],
            cfg,
            cache,
            tmp_path / "o.csv",
            validate,
        )
        assert not other[0].cached and server.requests[0]["images"] == [url_b]


def test_phi_gate_reads_the_text_of_image_requests(server: LoopbackOpenAI, tmp_path: Path) -> None:
    from cmr_rd.rewrite.client import image_data_url

    url = image_data_url(_png(tmp_path / "a.png", 90))
    reqs = [Request("P", SYSTEM, "Name: Hescyra Umbrwick\nNormal study.", images=(url,))]
    [res] = run_requests(reqs, config(server, api="chat"), tmp_path, tmp_path / "l.csv", validate)
    assert res.status == "ok" and images_of(server.requests[0]["body"]) == [url]
    assert not any("umbrwick" in b.lower() or "hescyra" in b.lower() for b in server.bodies())
    known = ("UMBRWICK^HESCYRA",)
    reqs = [Request("Q", SYSTEM, "Her brother umbrwick.", known=known, images=(url,))]
    [res] = run_requests(reqs, config(server, api="chat"), tmp_path, tmp_path / "l.csv", validate)
    assert res.status == "refused" and len(server.requests) == 1


def _logprob_responder(body: dict[str, Any]) -> dict[str, Any]:
    from openai_loopback import token_logprobs

    text = echo_responder(body)
    assert isinstance(text, str)
    rows = [
        ('{"', -0.01, [('{"', -0.01), ("{", -4.6)]),
        ("echo", -0.2, [("echo", -0.2), ("ec", -1.9), ("x", -3.0), ("y", -5.0)]),
    ]
    return {"text": text, "logprobs": token_logprobs(rows)}


def test_logprobs_round_trip_through_the_cache(server: LoopbackOpenAI, tmp_path: Path) -> None:
    server.responder = _logprob_responder
    cfg = config(server, api="chat", top_logprobs=3)
    plain = config(server, api="chat")
    assert cache_key(cfg, SYSTEM, "Normal.") != cache_key(plain, SYSTEM, "Normal.")
    reqs = [Request("L", SYSTEM, "Normal.")]
    [first] = run_requests(reqs, cfg, tmp_path / "c", tmp_path / "l.csv", validate)
    [rec] = server.requests
    assert rec["body"]["logprobs"] is True and rec["body"]["top_logprobs"] == 3
    assert first.logprobs == [
        {
            "token": '{"',
            "logprob": -0.01,
            "top": [{"token": '{"', "logprob": -0.01}, {"token": "{", "logprob": -4.6}],
        },
        {
            "token": "echo",
            "logprob": -0.2,
            "top": [
                {"token": "echo", "logprob": -0.2},
                {"token": "ec", "logprob": -1.9},
                {"token": "x", "logprob": -3.0},
            ],
        },
    ]
    assert first.input_tokens > 0 and first.output_tokens > 0
    server.reset()
    [cached] = run_requests(reqs, cfg, tmp_path / "c", tmp_path / "l.csv", validate)
    assert server.requests == [] and cached.cached and cached.logprobs == first.logprobs
    assert (cached.input_tokens, cached.output_tokens) == (first.input_tokens, first.output_tokens)
    # not asked for: not requested, not returned, not stored (and the server sends none)
    [without] = run_requests(reqs, plain, tmp_path / "c", tmp_path / "l.csv", validate)
    assert without.logprobs is None and without.reply == first.reply
    assert "logprobs" not in server.requests[-1]["body"]
    key = cache_key(plain, SYSTEM, "Normal.")
    assert "logprobs" not in json.loads((tmp_path / "c" / key[:2] / f"{key}.json").read_text())
    # asked for, but the API returns none: None, not an error
    server.responder = echo_responder
    [none] = run_requests(
        [Request("M", SYSTEM, "Other.")], cfg, tmp_path / "c", tmp_path / "l.csv", validate
    )
    assert none.status == "ok" and none.logprobs is None
    with pytest.raises(ValueError, match="top_logprobs needs api 'chat'"):
        LLMConfig(api="responses", top_logprobs=3)
    with pytest.raises(ValueError, match="between 0 and 20"):
        LLMConfig(api="chat", top_logprobs=21)
