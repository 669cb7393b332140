"""API-served VLMs (e.g. Seed1.5-VL, GPT-4o) as evaluation rows, through the LLM client layer.

Each test record is asked exactly what a local model is asked: the record's own prompt (its
system text, if it has one, and its user text, the fixed diagnostic query) with its image, as
one chat request at temperature 0. The image is sent as a base64 data URL of the de-identified
PNG, re-encoded from its pixels so that no PNG text chunk can travel with it. Nothing else is
sent: no record id, no patient pseudonym, no path (the ids stay local, in the ledger and the
sample table, and are also handed to the PHI gate as known identifiers, so a prompt that
carried one would be refused, not sent).

The client layer (`cmr_rd.rewrite.client`) brings the PHI gate, the content-addressed cache (a
rerun makes no calls), retries with backoff, bounded concurrency and the cost ledger. Every test
case stays in the sample table: a request that failed after its retries has an empty completion
(so it counts as unparsed, i.e. wrong) and its reason in `api_reason`.

Per-class scores for AUC come only from log-probabilities (`top_logprobs` in the model's
config, chat API). They are an approximation of the local harness's class likelihoods: see
`answer_logliks`. Without log-probabilities every score is NaN and `compute_metrics` leaves AUC
empty with a note saying why.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cmr_rd.classes import CLASSES
from cmr_rd.evaluate.harness import EvalInputError, load_test_records
from cmr_rd.evaluate.metrics import compute_metrics, sample_table
from cmr_rd.model.generate import prompt_messages
from cmr_rd.prompts import QUERY_VERSION
from cmr_rd.rewrite.client import LLMConfig, Request, Result, run_requests

ANSWER_TAG = "<answer>"
# How far below the smallest listed log-probability a class that is not listed at all sits.
UNLISTED_GAP = 1.0
NOT_REQUESTED_NOTE = (
    "no per-class scores: log-probabilities were not requested (top_logprobs is null)"
)
# The settings of an evaluate.api_models entry that go to the client as they are.
_CLIENT_KEYS = (
    "model", "base_url", "api_key_env", "max_concurrency", "timeout_s", "max_retries",
    "malformed_retries", "temperature", "price_input_per_mtok", "price_output_per_mtok",
    "top_logprobs",
)  # fmt: skip


def llm_config(entry: dict[str, Any]) -> LLMConfig:
    """The client config of one `evaluate.api_models` entry: chat API, temperature 0 unless set.

    The template version names the evaluation query's version, so a changed query is a new key
    even where its text alone would not show it."""
    settings = {k: entry[k] for k in _CLIENT_KEYS if entry.get(k) is not None}
    # a float, so that `temperature: 0` and `0.0` in a config give the same cache key
    settings["temperature"] = float(settings.get("temperature", 0.0))
    settings.setdefault("price_input_per_mtok", 0.0)
    settings.setdefault("price_output_per_mtok", 0.0)
    try:
        return LLMConfig(api="chat", template_version=f"eval-{QUERY_VERSION}", **settings)
    except (TypeError, ValueError) as exc:
        raise EvalInputError(f"evaluate.api_models {entry.get('name')!r}: {exc}") from None


def png_data_url(path: str | Path) -> str:
    """data:image/png;base64 of the image's pixels, re-encoded (no metadata chunks travel)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise EvalInputError(f"test image {path} is {image.format}, not a PNG")
            image.load()
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", optimize=False)
    except (OSError, UnidentifiedImageError) as exc:
        raise EvalInputError(f"test image {path}: {type(exc).__name__}") from None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(
        part.get("text") or ""
        for part in content or []
        if isinstance(part, dict) and part.get("type") == "text"
    )


def build_request(record: dict[str, Any], number: int) -> Request:
    """The request for one test record: its prompt text and its image(s), nothing else."""
    messages = prompt_messages(record.get("messages") or [])
    system = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
    user = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "user")
    ident = str(record.get("id", number))
    if not user.strip():
        raise EvalInputError(f"test record {number} ({ident}) has no user text")
    images = record.get("images") or []
    if not images:
        raise EvalInputError(f"test record {number} ({ident}) has no image")
    known = tuple(str(v) for v in (record.get("id"), record.get("patient")) if v)
    return Request(
        item_id=ident,
        system=system,
        prompt=user,
        known=known,
        images=tuple(png_data_url(p) for p in images),
    )


def _matches(rest: str, name: str) -> bool:
    """An alternative's answer text names `name`: a non-empty prefix of it, the name itself, or
    the name followed by a non-word character (a token such as `MI<`)."""
    if not rest:
        return False
    if name.startswith(rest):
        return True
    return rest.startswith(name) and not (rest[len(name)].isalnum() or rest[len(name)] == "_")


def answer_logliks(
    logprobs: list[dict[str, Any]] | None, classes: Sequence[str] = CLASSES
) -> np.ndarray | None:
    """Per-class log-likelihood scores from the top log-probabilities of one reply, or None.

    The approximation, documented: find the output token where the answer's content begins (the
    first non-space character after the last `<answer>` in the tokens' text). Each alternative
    listed at that position (the chosen token and its top alternatives) is read as the start of
    the answer: its text after whatever the chosen token holds before the answer (`>` of the tag,
    a space) names a class if it is a non-empty prefix of exactly that class name or the name
    itself (or the name and a non-word character). A class's score is the best log-probability
    among the alternatives that name it; a class no alternative names gets a floor UNLISTED_GAP
    below the smallest listed log-probability. This is the probability of the answer's first
    token, not of the whole class name, and a class outside the top-k is only known to be less
    likely than every listed token; with the class names' distinct first letters (H, D, C, L, M,
    N) the first token separates them. None when there is no answer tag or no log-probability.
    """
    if not logprobs:
        return None
    text = "".join(t["token"] for t in logprobs)
    tag = text.rfind(ANSWER_TAG)
    if tag < 0:
        return None
    start = tag + len(ANSWER_TAG)
    while start < len(text) and text[start].isspace():
        start += 1
    if start >= len(text):
        return None
    pos = 0
    for token in logprobs:
        end = pos + len(token["token"])
        if end > start:
            break
        pos = end
    lead = text[pos:start]
    alternatives = [(token["token"], float(token["logprob"]))]
    alternatives += [(a["token"], float(a["logprob"])) for a in token.get("top") or []]
    listed = [lp for _, lp in alternatives if math.isfinite(lp)]
    if not listed:
        return None
    best: dict[str, float] = {}
    for alt, logprob in alternatives:
        if not alt.startswith(lead) or not math.isfinite(logprob):
            continue
        rest = alt[len(lead) :].lstrip()
        for name in classes:
            if _matches(rest, name):
                best[name] = max(best.get(name, -math.inf), logprob)
    floor = min(listed) - UNLISTED_GAP
    return np.array([best.get(name, floor) for name in classes], dtype=np.float64)


def _accept(reply: str) -> str | None:
    """Every non-empty reply is the model's answer (the client refuses empty ones): one that
    does not follow the format is scored as the model's failure, not asked again."""
    return None


def _scores(
    results: list[Result], cfg: LLMConfig, classes: list[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    """(n x classes log-likelihoods, how they were made). NaN throughout without logprobs; with
    them, a row whose answer token cannot be found scores every class equally (it expressed no
    preference, as an unparsed answer is simply wrong for ACC)."""
    n, k = len(results), len(classes)
    returned = sum(bool(r.logprobs) for r in results)
    info: dict[str, Any] = {"requested": cfg.top_logprobs, "replies_with_logprobs": returned}
    if cfg.top_logprobs is None or returned == 0:
        info["method"] = None
        return np.full((n, k), np.nan), info
    loglik = np.zeros((n, k))
    unscored = 0
    for i, result in enumerate(results):
        row = answer_logliks(result.logprobs, classes)
        if row is None:
            unscored += 1
        else:
            loglik[i] = row
    info["method"] = "first answer token's top log-probabilities (cmr_rd.evaluate.api)"
    info["rows_scored_equal"] = unscored
    return loglik, info


def evaluate_api(
    entry: dict[str, Any],
    test_jsonl: str | Path,
    cache_dir: str | Path,
    ledger_path: str | Path,
    limit: int | None = None,
    classes: Sequence[str] = CLASSES,
    safe=None,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """(samples, metrics, timing) of one API model on a test JSONL.

    samples and metrics are functions of the replies alone (the same on a rerun from the cache);
    what this run cost and how many calls it made go to timing and the ledger."""
    classes = list(classes)
    cfg = llm_config(entry)
    records = load_test_records(test_jsonl, limit)
    requests = [build_request(r, i) for i, r in enumerate(records, start=1)]
    started = time.perf_counter()
    results = run_requests(requests, cfg, Path(cache_dir), Path(ledger_path), _accept, safe)
    seconds = time.perf_counter() - started

    completions = [r.reply if r.status == "ok" and r.reply else "" for r in results]
    loglik, scoring = _scores(results, cfg, classes)
    samples = sample_table(records, completions, loglik, classes)
    samples["api_status"] = [r.status for r in results]
    samples["api_reason"] = [r.reason for r in results]
    metrics = compute_metrics(samples, classes)
    if cfg.top_logprobs is None:
        metrics["auc_note"] = metrics["patient"]["auc_note"] = NOT_REQUESTED_NOTE
    input_tokens = sum(r.input_tokens for r in results)
    output_tokens = sum(r.output_tokens for r in results)
    metrics["api"] = {
        "model": cfg.model,
        "api": cfg.api,
        "temperature": cfg.temperature,
        "ok": sum(r.status == "ok" for r in results),
        "failed": sum(r.status == "failed" for r in results),
        "refused": sum(r.status == "refused" for r in results),
        # the tokens and price of the replies in this table, cached or not (what the table cost)
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": round(cfg.cost(input_tokens, output_tokens), 6),
        "logprobs": scoring,
    }
    ledger = _read_totals(Path(ledger_path))
    timing = {
        "seconds": round(seconds, 3),
        "samples": len(records),
        # this run's API use (0 calls on a rerun from the cache); the ledger has every call
        "calls": ledger.get("calls"),
        "cache_hits": ledger.get("cache_hits"),
        "cost_usd": ledger.get("cost_usd"),
    }
    return samples, metrics, timing


def _read_totals(ledger_path: Path) -> dict[str, Any]:
    return json.loads(ledger_path.with_suffix(".json").read_text(encoding="utf-8"))
