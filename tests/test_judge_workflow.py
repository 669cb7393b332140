"""The judge stage through Snakemake, on the finished tiny run (conftest's `tiny_run`).

The offline judge is part of the default target, so the tiny run already holds its outputs; the
other tests rerun the judge rule alone on a copy of the run: with the LLM judge against the
loopback OpenAI server, and with a filled clinician sheet (good and bad).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cmr_rd.devtools import snakemake
from cmr_rd.judge.rubric import AXES, ERRORS, read_chain
from conftest import copy_run
from openai_loopback import LoopbackOpenAI, images_of, prompt_of

pytestmark = pytest.mark.slow
JUDGE = "results/judge"
TARGET = f"{JUDGE}/summary.csv"
OUTPUTS = (
    "ratings.parquet", "key.csv", "clinician_sheet.csv", "summary.csv", "summary.md",
    "claim.csv", "claim.md", "ratings.png", "ledger.csv", "ledger.json", "manifest.json",
)  # fmt: skip
KEY = "sk-loopback-judge-5e1d"


def _digests(root: Path, skip: str | None = None) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (skip and p.relative_to(root).as_posix().startswith(skip))
    }


def _judge(work: Path, *extra: str):
    """Snakemake on the judge's outputs, forcing the judge rule only."""
    args = [TARGET, "--cores", "1", "--configfile", "config/tiny.yaml", *extra]
    return snakemake(work, *args, "--forcerun", "judge")


@pytest.fixture
def work(tiny_run, tmp_path):
    folder = copy_run(tiny_run, tmp_path / "wf")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _completions(run: Path) -> dict[tuple[str, str], str]:
    """(evaluation, case) -> completion, from every evaluation's samples."""
    out = {}
    for path in (run / "results/eval").rglob("samples.parquet"):
        evaluation = path.parent.relative_to(run / "results/eval").as_posix()
        for row in pd.read_parquet(path, columns=["id", "completion"]).itertuples():
            out[(evaluation, row.id)] = row.completion or ""
    return out


def test_offline_judge_outputs_in_the_tiny_run(tiny_run):
    judge = tiny_run / JUDGE
    for name in OUTPUTS:
        assert (judge / name).is_file(), name
    key = pd.read_csv(judge / "key.csv")
    evaluations = {"none", "s1/seed1", "sft-ts-iou/seed1", "sft-static-iou/seed1"}
    assert evaluations | {"zeroshot/base-by-path"} == set(key["evaluation"])
    # tiny.yaml has 2 test cases per class: all of them, for every model.
    assert key.groupby("evaluation")["case"].nunique().eq(12).all()
    ratings = pd.read_parquet(judge / "ratings.parquet")
    assert set(ratings["judge"]) == {"rubric"} and len(ratings) == len(key)
    assert ratings[list(AXES)].isin([1, 2, 3, 4, 5]).all().all()
    assert (ratings[list(ERRORS)] >= 0).all().all()
    summary = pd.read_csv(judge / "summary.csv")
    assert set(summary["model"]) == {"none", "s1", "sft-ts-iou", "sft-static-iou",
                                     "zeroshot/base-by-path"}  # fmt: skip
    assert (summary["accuracy_ci_low"] <= summary["accuracy_mean"]).all()
    # Blinding: nothing a clinician sees names a model or a run.
    sheet = (judge / "clinician_sheet.csv").read_text()
    for word in ("sft-", "seed1", "zeroshot", "base-by-path", "results/eval"):
        assert word not in sheet
    assert set(pd.read_csv(judge / "clinician_sheet.csv")["id"]) == set(key["id"])
    manifest = json.loads((judge / "manifest.json").read_text())
    assert manifest["rule"] == "judge" and manifest["summary"]["items"] == len(key)
    assert json.loads((judge / "ledger.json").read_text())["calls"] == 0


@pytest.mark.edits_run
def test_offline_judge_rerun_is_byte_identical(work):
    before = _digests(work / JUDGE)
    result = _judge(work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "localrule judge:" in result.stdout + result.stderr
    assert _digests(work / JUDGE) == before


def _score(chain_text: str) -> int:
    """What the loopback judge gives a chain: a function of the text it sees, nothing else."""
    return 1 + hashlib.sha256(chain_text.encode()).digest()[0] % 5


def _rating_reply(body: dict) -> str:
    _, user = prompt_of(body)
    chain = re.search(r"The model's output:\n(.*)\n\nRate it as instructed", user, re.S).group(1)
    score = _score(chain)
    part = {"score": score, "reason": f"rated {score}"}
    return json.dumps({"accuracy": part, "coherence": part, "readability": part,
                       "errors": dict.fromkeys(ERRORS, 0)})  # fmt: skip


@pytest.mark.edits_run
def test_llm_judge_end_to_end_blinded_and_cached(work, monkeypatch):
    override = {"judge": {"backend": "openai", "openai": {
        "model": "gpt-4o", "timeout_s": 5, "max_retries": 2, "max_concurrency": 2}}}  # fmt: skip
    with LoopbackOpenAI(api_key=KEY, responder=_rating_reply) as server:
        override["judge"]["openai"]["base_url"] = server.base_url
        (work / "config/judge.yaml").write_text(yaml.safe_dump(override))
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        server.faults.extend(["429", "garbage"])  # retried by the client, asked again by us
        result = _judge(work, "config/judge.yaml")
        assert result.returncode == 0, result.stderr[-3000:]
        bodies, calls = server.bodies(), len(server.requests)
        # Rerun: every rating comes from the cache, no call.
        again = _judge(work, "config/judge.yaml")
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(server.requests) == calls
    key = pd.read_csv(work / JUDGE / "key.csv")
    ratings = pd.read_parquet(work / JUDGE / "ratings.parquet")
    llm = ratings[ratings["judge"] == "gpt-4o"]
    assert len(llm) == len(key) and (llm["status"] == "ok").all()
    # Joined back to the right model and case: each rating is the score of that item's chain.
    completions = _completions(work)
    for row in llm.itertuples():
        text = read_chain(completions[(row.evaluation, row.case)]).text()
        assert row.accuracy == row.readability == _score(text), (row.evaluation, row.case)
    summary = pd.read_csv(work / JUDGE / "summary.csv")
    assert {"rubric", "gpt-4o"} == set(summary["judge"])
    # Blinding: no model key, run name, results/ path, pseudonym or planted PHI was sent.
    test = [json.loads(x) for x in (work / "results/datasets/test.jsonl").read_text().splitlines()]
    planted = json.loads((work / "data/synthetic/phi_strings.json").read_text())["strings"]
    needles = {"sft-ts-iou", "sft-static-iou", "s1/seed", "seed1", "zeroshot", "base-by-path",
               "results/", *(t["patient"] for t in test), *(s for s in planted if len(s) >= 4)}  # fmt: skip
    for body in bodies:  # the image's base64 could spell a short needle by chance: not read
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", body).lower()
        leaks = [n for n in needles if n.lower() in text]
        assert not leaks, leaks
    chat = [r for r in server.requests if r["status"] == 200]
    assert all(len(images_of(r["body"])) == 1 for r in chat)
    assert all(images_of(r["body"])[0].startswith("data:image/png;base64,") for r in chat)
    ledger = json.loads((work / JUDGE / "ledger.json").read_text())
    assert ledger["calls"] == 0 and ledger["cache_hits"] > 0 and ledger["model"] == "gpt-4o"


@pytest.mark.edits_run
def test_a_filled_clinician_sheet_changes_the_judge_tables_only(work):
    results = work / "results"
    before = _digests(results, skip="judge/")
    sheet = pd.read_csv(work / JUDGE / "clinician_sheet.csv", dtype=str, keep_default_na=False)
    key = pd.read_csv(work / JUDGE / "key.csv").set_index("id")
    # A clinician rates the first ten items: 5 for the showcase's chains, 2 for the others.
    for i in range(10):
        score = "5" if key.at[sheet.loc[i, "id"], "model"] == "sft-ts-iou" else "2"
        sheet.loc[i, list(AXES)] = [score, score, score]
    sheet.loc[0, "comment"] = "clear"
    sheet.to_csv(work / "config/judge_ratings.csv", index=False)
    result = snakemake(work, TARGET, "--cores", "1", "--configfile", "config/tiny.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, re.M) == ["judge"]
    assert _digests(results, skip="judge/") == before  # nothing upstream was redone
    ratings = pd.read_parquet(work / JUDGE / "ratings.parquet")
    clinician = ratings[ratings["judge"] == "clinician"]
    assert len(clinician) == 10
    expected = [5.0 if m == "sft-ts-iou" else 2.0 for m in clinician["model"]]
    assert clinician["accuracy"].tolist() == expected
    summary = pd.read_csv(work / JUDGE / "summary.csv")
    assert "clinician" in set(summary["judge"])
    manifest = json.loads((work / JUDGE / "manifest.json").read_text())
    assert manifest["summary"]["clinician_rows_unrated"] == len(sheet) - 10

    # A bad row stops the judge, naming the file and the row.
    sheet.loc[3, "coherence"] = "7"
    sheet.to_csv(work / "config/judge_ratings.csv", index=False)
    result = snakemake(work, TARGET, "--cores", "1", "--configfile", "config/tiny.yaml")
    assert result.returncode != 0
    log = (work / "logs/judge/judge.log").read_text()
    assert "config/judge_ratings.csv: row 5: coherence '7' is not an integer 1-5" in log
    assert "Traceback" not in log
