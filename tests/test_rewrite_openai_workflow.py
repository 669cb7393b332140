"""The openai backend end to end through Snakemake, against a loopback OpenAI server.

The real `openai` client talks HTTP to a server of ours on 127.0.0.1 that implements the
endpoints we call, records every request body and injects faults (429, 5xx, a slow reply,
garbage). The model's text comes from the offline rewriter, so QC sees realistic templates.

Snakemake runs `rewrite_reports` with the openai backend in a copy of the finished tiny run
(conftest's `tiny_run`, whose cohort and ingestion are up to date), then reruns it alone: what
comes after it does not depend on the backend, and tests/test_workflow.py runs it.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from cmr_rd.devtools import snakemake
from cmr_rd.rewrite.offline import offline_rewrite
from conftest import copy_run
from openai_loopback import LoopbackOpenAI

pytestmark = pytest.mark.slow
KEY = "sk-loopback-test-3f9a1c77d2"
REWRITE = ("results/rewrite/templates.jsonl", "results/rewrite/ledger.json")


def _prompt_of(body: dict) -> str:
    if "input" in body:
        return body["input"] if isinstance(body["input"], str) else json.dumps(body["input"])
    return body["messages"][-1]["content"]


def _responder(body: dict) -> str:
    prompt = _prompt_of(body)
    match = re.search(r"Lesion box in the 256x256 image: \[([^\]]+)\]", prompt)
    box = [float(v) for v in match.group(1).split(",")] if match else None
    return offline_rewrite(prompt, box, item_id=str(len(prompt)), seed=0)


@pytest.fixture(scope="module")
def server():
    loopback = LoopbackOpenAI(responder=_responder)
    loopback.start()
    yield loopback
    loopback.stop()


def test_openai_backend_through_snakemake(tmp_path, tiny_run, server, monkeypatch):
    work = copy_run(tiny_run, tmp_path / "wf")  # the finished offline run: its cohort is there
    override = {
        "rewrite": {
            "backend": "openai",
            "openai": {
                "base_url": server.base_url,
                "timeout_s": 1.0,
                "max_retries": 3,
                "max_concurrency": 2,
            },
        }
    }
    (work / "config/openai.yaml").write_text(yaml.safe_dump(override))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server.faults.extend(["429", "500", "503", "slow", "garbage", "broken_json"])
    # Targets first: --configfile takes every value that follows it.
    args = [*REWRITE, "--cores", "2", "--configfile", "config/tiny.yaml", "config/openai.yaml"]
    result = snakemake(work, *args)
    assert "rule rewrite_reports:" in result.stdout + result.stderr  # the backend's params changed
    assert result.returncode == 0, result.stderr[-4000:]

    templates = [
        json.loads(x) for x in (work / "results/rewrite/templates.jsonl").read_text().splitlines()
    ]
    statuses = [t["status"] for t in templates]
    assert set(statuses) <= {"ok", "failed", "refused"}
    assert all(t["reason"] for t in templates if t["status"] != "ok")
    assert statuses == ["ok"] * len(templates)  # every injected fault was retried, not fatal
    calls = len(server.requests)
    assert calls > len(templates)  # retries happened

    phi = json.loads((work / "data/synthetic/phi_strings.json").read_text())["strings"]
    bodies = json.dumps(server.requests).lower()
    assert [s for s in phi if len(s) >= 4 and s.lower() in bodies] == []

    for folder in ("results", "logs", ".snakemake/log"):
        for path in (work / folder).rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), path

    rerun = snakemake(work, *args, "--forcerun", "rewrite_reports")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert len(server.requests) == calls  # zero API calls on rerun
    ledger = json.loads((work / "results/rewrite/ledger.json").read_text())
    assert ledger["cache_hits"] == statuses.count("ok")
    again = [
        json.loads(x) for x in (work / "results/rewrite/templates.jsonl").read_text().splitlines()
    ]
    assert [t["template"] for t in again if t["status"] == "ok"] == [
        t["template"] for t in templates if t["status"] == "ok"
    ]
