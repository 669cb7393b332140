"""The real LLM client layer: PHI gate, content-addressed cache, bounded concurrency, ledger.

Every request passes the PHI gate (`phi.gate_request`) before anything is sent: what the
detector flags in the prompt is redacted, and a request in which the detector or the known list
still sees anything is refused and never leaves the machine. Replies that pass the caller's
`validate` are cached under a hash of everything that determines them, so a rerun costs nothing.
Transport faults (429, 5xx, timeouts, dropped connections) are retried by the openai client
itself, with its backoff; we only re-ask for replies that arrive but are unusable. Every API
call is appended to a CSV ledger with its token usage and cost, and the run's totals go to a
JSON file next to it.

The API key is read only from the environment variable named in the config and handed straight
to the openai client; nothing here formats an exception message from the API (which may quote
the key) into a reason, a log line or a file.

A request may carry images (data URLs, see `image_data_url`): they go with the user text as
content parts (chat: text + image_url; responses: input_text + input_image), and the cache key
then includes each image's sha256 (never the base64 itself). The PHI gate reads the text only.
On the chat API a config may ask for the top log-probabilities of every output token
(`top_logprobs`); they come back on the `Result` and are kept in the cache entry, so a cache
hit returns them too. Text-only requests without log-probabilities have the same cache keys as
before either existed, so old caches stay valid.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cmr_rd.rewrite import phi

log = logging.getLogger(__name__)

LEDGER_FIELDS = (
    "item_id",
    "cache_key",
    "api",
    "model",
    "attempt",
    "status",
    "input_tokens",
    "output_tokens",
    "cost_usd",
)
_APIS = ("responses", "chat")
_AUTH_FAILED = "not sent: authentication failed earlier in this run"


@dataclass(frozen=True)
class LLMConfig:
    api: str = "responses"  # "responses" (OpenAI) or "chat" (OpenAI-compatible servers)
    model: str = "o3"
    base_url: str | None = None  # else env OPENAI_BASE_URL, else the client default
    api_key_env: str = "OPENAI_API_KEY"  # the key is read ONLY from this environment variable
    max_concurrency: int = 4
    timeout_s: float = 120.0
    max_retries: int = 4  # the openai client's own retries (429/5xx/timeouts, with backoff)
    malformed_retries: int = 2  # ours: a reply that fails `validate` is asked again, then failed
    reasoning_effort: str | None = "medium"  # responses API only
    temperature: float | None = None  # chat only, None = omit
    price_input_per_mtok: float = 2.0
    price_output_per_mtok: float = 8.0
    template_version: str = "v1"
    top_logprobs: int | None = None  # chat only: ask for logprobs with this many alternatives

    def __post_init__(self) -> None:
        if self.api not in _APIS:
            raise ValueError(f"api must be one of {_APIS}, not {self.api!r}")
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if self.max_retries < 0 or self.malformed_retries < 0:
            raise ValueError("max_retries and malformed_retries must be >= 0")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if self.top_logprobs is not None:
            if self.api != "chat":
                raise ValueError("top_logprobs needs api 'chat' (the chat completions API)")
            if not 0 <= self.top_logprobs <= 20:
                raise ValueError("top_logprobs must be between 0 and 20")

    def params(self) -> dict[str, Any]:
        """The sampling parameters that change the reply (and so belong in the cache key)."""
        if self.api == "responses":
            return {"reasoning_effort": self.reasoning_effort}
        return {"temperature": self.temperature}

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.price_input_per_mtok + output_tokens * self.price_output_per_mtok
        ) / 1_000_000


@dataclass(frozen=True)
class Request:
    item_id: str  # a pseudonym, never PHI
    system: str
    prompt: str  # already scrubbed by the caller
    known: tuple[str, ...] = ()  # known identifiers for the gate's exact third layer
    images: tuple[str, ...] = ()  # data URLs (data:image/png;base64,...), sent after the text


@dataclass
class Result:
    item_id: str
    status: str  # "ok" | "failed" | "refused"
    reply: str | None  # the model's text
    reason: str | None  # why failed/refused (no PHI, no key)
    cached: bool
    attempts: int  # API calls made for this item in this run (0 when cached or refused)
    # per output token {"token", "logprob", "top": [{"token", "logprob"}, ...]} when the config
    # asked for top_logprobs and the API returned them; else None
    logprobs: list[dict[str, Any]] | None = None
    # the billed tokens of the reply returned (from the cache entry on a hit; 0 without reply)
    input_tokens: int = 0
    output_tokens: int = 0


_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def image_data_url(path: str | Path) -> str:
    """A data URL (data:image/png;base64,...) of an image file, for `Request.images`."""
    path = Path(path)
    mime = _IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: not a PNG or JPEG file name (suffix {path.suffix!r})")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def cache_key(
    cfg: LLMConfig, system: str, prompt: str, images: tuple[str, ...] | list[str] = ()
) -> str:
    """sha256 of the canonical JSON of everything that determines the reply.

    Images enter as the sha256 of each data URL, and `top_logprobs` as its value, each only
    when present: a text-only request without log-probabilities keeps its old key."""
    payload: dict[str, Any] = {
        "api": cfg.api,
        "model": cfg.model,
        "system": system,
        "prompt": prompt,
        "params": cfg.params(),
        "template_version": cfg.template_version,
    }
    if images:
        payload["images"] = [hashlib.sha256(url.encode("ascii")).hexdigest() for url in images]
    if cfg.top_logprobs is not None:
        payload["top_logprobs"] = cfg.top_logprobs
    canon = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


class MissingAPIKeyError(RuntimeError):
    """Requests that must go to the API, and no API key in the environment."""


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.json"


def _atomic_write(path: Path, text: str) -> None:
    """Temp file in the same folder, then rename: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cache(
    cache_dir: Path, key: str, validate: Callable[[str], str | None]
) -> dict[str, Any] | None:
    """A cached entry, or None if absent, unreadable, or no longer accepted by `validate`."""
    path = _cache_path(cache_dir, key)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    reply = entry.get("reply") if isinstance(entry, dict) else None
    if not isinstance(reply, str) or not reply.strip() or _check(validate, reply) is not None:
        return None
    return entry


def _check(validate: Callable[[str], str | None], reply: str) -> str | None:
    try:
        return validate(reply)
    except Exception as exc:  # a validator bug must not take the whole run down
        return f"validate raised {type(exc).__name__}"


class _Malformed(Exception):
    """The API answered, but with nothing usable (unparseable, empty, truncated)."""


@dataclass
class _Reply:
    text: str
    input_tokens: int
    output_tokens: int
    logprobs: list[dict[str, Any]] | None = None


class _MalformedWithUsage(_Malformed):
    """Unusable, but billed: the tokens still go to the ledger."""

    def __init__(self, reason: str, reply: _Reply) -> None:
        super().__init__(reason)
        self.reply = reply


class _Ledger:
    """Per-call CSV rows (appended as they happen) and this run's totals."""

    def __init__(self, path: Path, cfg: LLMConfig) -> None:
        self.path = path
        self.cfg = cfg
        self.lock = threading.Lock()
        self.totals: dict[str, Any] = {
            "api": cfg.api,
            "model": cfg.model,
            "template_version": cfg.template_version,
            "items": 0,
            "calls": 0,
            "cache_hits": 0,
            "refused": 0,
            "failed": 0,
            "ok": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            with open(path, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(LEDGER_FIELDS)

    def call(
        self, item_id: str, key: str, attempt: int, status: str, tin: int = 0, tout: int = 0
    ) -> None:
        cost = self.cfg.cost(tin, tout)
        row = (item_id, key, self.cfg.api, self.cfg.model, attempt, status, tin, tout)
        with self.lock:
            with open(self.path, "a", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow((*row, f"{cost:.6f}"))
            self.totals["calls"] += 1
            self.totals["input_tokens"] += tin
            self.totals["output_tokens"] += tout
            self.totals["cost_usd"] += cost

    def finish(self, results: list[Result]) -> dict[str, Any]:
        totals = dict(self.totals)
        totals["items"] = len(results)
        totals["cache_hits"] = sum(r.cached for r in results)
        for status in ("ok", "failed", "refused"):
            totals[status] = sum(r.status == status for r in results)
        totals["cost_usd"] = round(totals["cost_usd"], 6)
        text = json.dumps(totals, indent=2, sort_keys=True) + "\n"
        _atomic_write(self.path.with_suffix(".json"), text)
        return totals


def _make_client(cfg: LLMConfig, api_key: str) -> Any:
    import openai  # imported here so the offline path never needs the package

    base_url = cfg.base_url or os.environ.get("OPENAI_BASE_URL") or None
    return openai.OpenAI(
        api_key=api_key, base_url=base_url, timeout=cfg.timeout_s, max_retries=cfg.max_retries
    )


def _user_content(req: Request) -> Any:
    """The user message: the prompt alone, or content parts (text, then each image)."""
    if not req.images:
        return req.prompt
    return [
        {"type": "text", "text": req.prompt},
        *({"type": "image_url", "image_url": {"url": url}} for url in req.images),
    ]


def _responses_input(req: Request) -> Any:
    if not req.images:
        return req.prompt
    parts = [{"type": "input_text", "text": req.prompt}]
    parts += [{"type": "input_image", "image_url": url, "detail": "auto"} for url in req.images]
    return [{"role": "user", "content": parts}]


def _logprobs(choice: Any) -> list[dict[str, Any]] | None:
    """The chat choice's per-token log-probabilities in plain dicts, or None if absent."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return [
        {
            "token": str(t.token),
            "logprob": float(t.logprob),
            "top": [
                {"token": str(a.token), "logprob": float(a.logprob)} for a in (t.top_logprobs or [])
            ],
        }
        for t in content
    ]


def _call_api(client: Any, cfg: LLMConfig, req: Request) -> _Reply:
    """One API call (the client retries transport faults inside it); the reply's text."""
    system = req.system
    if cfg.api == "responses":
        kwargs: dict[str, Any] = {"model": cfg.model, "input": _responses_input(req)}
        if system:  # an empty system prompt is left out (the evaluation prompt may have none)
            kwargs["instructions"] = system
        if cfg.reasoning_effort is not None:
            kwargs["reasoning"] = {"effort": cfg.reasoning_effort}
        response = client.responses.create(**kwargs)
        try:
            text = response.output_text
            usage = response.usage
            tin = int(getattr(usage, "input_tokens", 0) or 0) if usage else 0
            tout = int(getattr(usage, "output_tokens", 0) or 0) if usage else 0
            status = getattr(response, "status", None)
        except Exception as exc:
            raise _Malformed(f"unparseable API reply ({type(exc).__name__})") from None
        reply = _Reply(text or "", tin, tout)
        if status not in (None, "completed"):
            raise _MalformedWithUsage(f"response status {status}", reply)
        return reply
    kwargs = {
        "model": cfg.model,
        "messages": [
            *([{"role": "system", "content": system}] if system else []),
            {"role": "user", "content": _user_content(req)},
        ],
    }
    if cfg.temperature is not None:
        kwargs["temperature"] = cfg.temperature
    if cfg.top_logprobs is not None:
        kwargs["logprobs"] = True
        kwargs["top_logprobs"] = cfg.top_logprobs
    completion = client.chat.completions.create(**kwargs)
    try:
        usage = completion.usage
        tin = int(getattr(usage, "prompt_tokens", 0) or 0) if usage else 0
        tout = int(getattr(usage, "completion_tokens", 0) or 0) if usage else 0
        choice = completion.choices[0]
        text = choice.message.content
        finish = getattr(choice, "finish_reason", None)
        logprobs = _logprobs(choice) if cfg.top_logprobs is not None else None
    except Exception as exc:
        raise _Malformed(f"unparseable API reply ({type(exc).__name__})") from None
    reply = _Reply(text or "", tin, tout, logprobs)
    if finish == "length":
        raise _MalformedWithUsage("reply truncated (finish_reason length)", reply)
    return reply


def _classify(exc: Exception) -> tuple[str, str, bool]:
    """(ledger status, reason, ask again?) for an exception raised by one API call.

    Built from the status code and exception class only, never from the message (an
    authentication error quotes part of the key)."""
    import openai

    name = type(exc).__name__
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", "timeout after retries", False
    if isinstance(exc, openai.APIConnectionError):
        return "connection_error", "connection error after retries", False
    if isinstance(exc, openai.APIStatusError):
        code = int(exc.status_code)
        retried = code in (408, 409, 429) or code >= 500
        return f"http_{code}", f"API error {code}" + (" after retries" if retried else ""), False
    if isinstance(exc, openai.APIResponseValidationError | ValueError):
        # a 200 whose body does not decode (JSONDecodeError is a ValueError): ask again
        return "malformed", f"malformed reply: unparseable API reply ({name})", True
    if isinstance(exc, openai.OpenAIError):
        return "client_error", f"client error ({name})", False
    return "error", f"unexpected error ({name})", False  # not an API problem; run goes on


@dataclass
class _Run:
    cfg: LLMConfig
    cache_dir: Path
    ledger: _Ledger
    validate: Callable[[str], str | None]
    client: Any = None
    key_locks: dict[str, threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    auth_failed: threading.Event = field(default_factory=threading.Event)

    def lock_for(self, key: str) -> threading.Lock:
        with self.guard:
            return self.key_locks.setdefault(key, threading.Lock())

    def process(self, req: Request, key: str) -> Result:
        # Identical requests in one batch: the first asks, the others find its cache entry.
        with self.lock_for(key):
            entry = _read_cache(self.cache_dir, key, self.validate)
            if entry is not None:
                return _cached_result(req, entry)
            return self._ask(req, key)

    def _ask(self, req: Request, key: str) -> Result:
        cfg, attempts, reason = self.cfg, 0, "no attempt"
        for attempt in range(1, cfg.malformed_retries + 2):
            if self.auth_failed.is_set():
                return Result(req.item_id, "failed", None, _AUTH_FAILED, False, attempts)
            attempts = attempt
            try:
                reply = _call_api(self.client, cfg, req)
            except _MalformedWithUsage as exc:
                self.ledger.call(req.item_id, key, attempt, "malformed", *_usage(exc.reply))
                reason = f"malformed reply: {exc}"
                continue
            except _Malformed as exc:
                self.ledger.call(req.item_id, key, attempt, "malformed")
                reason = f"malformed reply: {exc}"
                continue
            except Exception as exc:
                status, reason, again = _classify(exc)
                self.ledger.call(req.item_id, key, attempt, status)
                if again:
                    continue
                if status in ("http_401", "http_403"):
                    self.auth_failed.set()
                log.warning("item %s: %s", req.item_id, reason)
                return Result(req.item_id, "failed", None, reason, False, attempts)
            usage = _usage(reply)
            if not reply.text.strip():
                self.ledger.call(req.item_id, key, attempt, "malformed", *usage)
                reason = "malformed reply: empty reply"
                continue
            problem = _check(self.validate, reply.text)
            if problem is not None:
                self.ledger.call(req.item_id, key, attempt, "malformed", *usage)
                reason = f"malformed reply: {problem}"
                continue
            self.ledger.call(req.item_id, key, attempt, "ok", *usage)
            entry = {
                "key": key,
                "api": cfg.api,
                "model": cfg.model,
                "params": cfg.params(),
                "template_version": cfg.template_version,
                "reply": reply.text,
                "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
            }
            if cfg.top_logprobs is not None:  # absent otherwise: old entries stay identical
                entry["top_logprobs"] = cfg.top_logprobs
                entry["logprobs"] = reply.logprobs
            _atomic_write(
                _cache_path(self.cache_dir, key),
                json.dumps(entry, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
            )
            return Result(
                req.item_id, "ok", reply.text, None, False, attempts, reply.logprobs, *usage
            )
        log.warning("item %s: %s after %d attempts", req.item_id, reason, attempts)
        return Result(req.item_id, "failed", None, reason, False, attempts)


def _usage(reply: _Reply) -> tuple[int, int]:
    return reply.input_tokens, reply.output_tokens


def _cached_result(req: Request, entry: dict[str, Any]) -> Result:
    logprobs = entry.get("logprobs") or None
    usage = entry.get("usage") if isinstance(entry.get("usage"), dict) else {}
    tokens = (int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))
    return Result(req.item_id, "ok", entry["reply"], None, True, 0, logprobs, *tokens)


def run_requests(
    requests: list[Request],
    cfg: LLMConfig,
    cache_dir: Path,
    ledger_path: Path,
    validate: Callable[[str], str | None],
    safe: phi.SafeList | None = None,
) -> list[Result]:
    """Gate, cache, ask (bounded concurrency), validate, record; results in input order.

    API problems never raise: they become "failed" results with a reason. A missing API key
    raises MissingAPIKeyError, but only when some request actually has to go to the network."""
    cache_dir, ledger_path = Path(cache_dir), Path(ledger_path)
    safe = safe or phi.SafeList()
    results: list[Result | None] = [None] * len(requests)
    pending: list[tuple[int, Request, str]] = []
    for i, req in enumerate(requests):
        gated = phi.gate_request(req.system, req.prompt, req.known, safe)
        if gated.text is None:
            results[i] = Result(req.item_id, "refused", None, gated.reason, False, 0)
            log.warning("item %s refused: %s", req.item_id, gated.reason)
            continue
        if gated.redacted:
            log.info("item %s: redacted %s", req.item_id, ", ".join(map(str, gated.redacted)))
            req = replace(req, prompt=gated.text)
        key = cache_key(cfg, req.system, req.prompt, req.images)
        entry = _read_cache(cache_dir, key, validate)
        if entry is not None:
            results[i] = _cached_result(req, entry)
        else:
            pending.append((i, req, key))
    api_key = os.environ.get(cfg.api_key_env, "").strip()
    if pending and not api_key:
        raise MissingAPIKeyError(
            f"{len(pending)} request(s) need the API, but the environment variable "
            f"{cfg.api_key_env} is not set (the API key is read only from there)"
        )
    ledger = _Ledger(ledger_path, cfg)
    if pending:
        run = _Run(cfg, cache_dir, ledger, validate, client=_make_client(cfg, api_key))
        workers = min(cfg.max_concurrency, len(pending))
        log.info("%d request(s) to %s/%s, %d worker(s)", len(pending), cfg.api, cfg.model, workers)
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm") as pool:
                futures = [(i, pool.submit(run.process, req, key)) for i, req, key in pending]
                for i, fut in futures:
                    results[i] = fut.result()
        finally:
            run.client.close()
    done = [r for r in results if r is not None]
    assert len(done) == len(requests)
    totals = ledger.finish(done)
    log.info(
        "LLM calls %d, cache hits %d, ok %d, failed %d, refused %d, cost $%.4f",
        totals["calls"],
        totals["cache_hits"],
        totals["ok"],
        totals["failed"],
        totals["refused"],
        totals["cost_usd"],
    )
    return done
