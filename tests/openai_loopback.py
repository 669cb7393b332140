"""A loopback OpenAI-protocol server on 127.0.0.1, so tests exercise the real `openai` client.

It implements POST /v1/responses and POST /v1/chat/completions with replies the SDK parses
(Response and ChatCompletion objects with usage), checks the bearer key, records every request
body, counts requests in flight, and injects faults on demand: "429" (with Retry-After: 0),
"500", "503", "slow" (sleeps past the client timeout), "garbage" (a well-formed reply whose
text the caller's validator rejects) and "broken_json" (HTTP 200 with a body that is not JSON).

User messages may be content parts (chat: text + image_url; responses: input_text +
input_image): `prompt_of` joins their text, `images_of` lists their image URLs, and each
recorded request keeps them under "images". A responder returns the reply text, or a dict
{"text": ..., "logprobs": [...]} whose per-token log-probabilities (see `token_logprobs`) go
into a chat reply when the request asked for `logprobs`, as the real API does.

Also here, because both test modules need it: a small synthetic cohort generated once per
test process (a few seconds), so no test depends on an earlier demo run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FAULTS = ("429", "500", "503", "slow", "garbage", "broken_json")
GARBAGE_TEXT = "I am sorry, but I cannot help with that request."


IMAGE_TOKENS = 85  # what a low-detail image costs on the OpenAI API, per image


def tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: one token per four characters."""
    return max(1, math.ceil(len(text) / 4))


def _parts(content: Any) -> list[dict[str, Any]]:
    """Content parts of a message (a plain string is one text part)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [p for p in content or [] if isinstance(p, dict)]


def _text(content: Any) -> str:
    return "".join(
        p.get("text") or "" for p in _parts(content) if p.get("type") in ("text", "input_text")
    )


def _user_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    if "messages" in body:
        return [m for m in body["messages"] if m.get("role") == "user"]
    given = body.get("input")
    if isinstance(given, list):
        return [m for m in given if isinstance(m, dict) and m.get("role", "user") == "user"]
    return [{"role": "user", "content": given or ""}]


def prompt_of(body: dict[str, Any]) -> tuple[str, str]:
    """(system, user) text of a request body of either protocol; text parts joined."""
    if "messages" in body:
        system = "".join(_text(m.get("content")) for m in body["messages"] if m["role"] == "system")
    else:
        system = body.get("instructions") or ""
    return system, "".join(_text(m.get("content")) for m in _user_messages(body))


def images_of(body: dict[str, Any]) -> list[str]:
    """The image URLs (data URLs) in the user messages of a request body, in order."""
    urls = []
    for message in _user_messages(body):
        for part in _parts(message.get("content")):
            if part.get("type") == "image_url":
                urls.append((part.get("image_url") or {}).get("url") or "")
            elif part.get("type") == "input_image":
                urls.append(part.get("image_url") or "")
    return urls


def token_logprobs(rows: list[tuple[str, float, list[tuple[str, float]]]]) -> list[dict[str, Any]]:
    """Chat `logprobs.content` entries from (token, logprob, [(alternative, logprob), ...])."""

    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "bytes": list(token.encode()), "logprob": logprob}

    return [{**one(t, lp), "top_logprobs": [one(a, alp) for a, alp in top]} for t, lp, top in rows]


def echo_responder(body: dict[str, Any]) -> str | dict[str, Any]:
    """Default reply: a JSON object that identifies the prompt it answers."""
    system, user = prompt_of(body)
    digest = hashlib.sha256((system + "\x00" + user).encode()).hexdigest()[:16]
    return json.dumps({"echo": digest, "chars": len(user), "model": body.get("model")})


class LoopbackOpenAI:
    """Start with `.start()` (or use as a context manager); `.base_url` ends in /v1."""

    def __init__(
        self,
        api_key: str | None = None,
        responder: Callable[[dict[str, Any]], str | dict[str, Any]] | None = None,
        latency_s: float = 0.0,
        slow_s: float = 2.0,
    ) -> None:
        # The key to demand; None: whatever $OPENAI_API_KEY holds when the request arrives
        # (tests set it with monkeypatch), or any non-empty bearer token if that is unset too.
        self.api_key = api_key
        self.responder = responder or echo_responder
        self.latency_s = latency_s  # every request takes at least this long (concurrency tests)
        self.slow_s = slow_s  # how long a "slow" fault sleeps
        self.faults: deque[str] = deque()  # consumed one per incoming request, in order
        self.fault_for: Callable[[dict[str, Any]], str | None] | None = None  # per-request rule
        # {"path", "body", "raw", "images", "status", "fault"}
        self.requests: list[dict[str, Any]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LoopbackOpenAI:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LoopbackOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # ------------------------------------------------------------------ helpers for tests

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults.clear()
            self.max_in_flight = 0

    def bodies(self) -> list[str]:
        """Every recorded request body as raw text (for leak checks)."""
        with self._lock:
            return [r["raw"] for r in self.requests]

    def authorised(self, header: str) -> bool:
        expected = self.api_key if self.api_key is not None else os.environ.get("OPENAI_API_KEY")
        if expected:
            return header == f"Bearer {expected}"
        return header.startswith("Bearer ") and len(header) > len("Bearer ")

    def _next_fault(self, body: dict[str, Any]) -> str | None:
        with self._lock:
            if self.faults:
                return self.faults.popleft()
        return self.fault_for(body) if self.fault_for else None

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)


def _error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _input_tokens(body: dict[str, Any]) -> int:
    system, user = prompt_of(body)
    return tokens(system + user) + IMAGE_TOKENS * len(images_of(body))


def response_object(body: dict[str, Any], reply: str | dict[str, Any]) -> dict[str, Any]:
    """A Responses API `Response` (status completed) carrying one output_text."""
    text = reply["text"] if isinstance(reply, dict) else reply
    tin, tout = _input_tokens(body), tokens(text)
    effort = (body.get("reasoning") or {}).get("effort")
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "model": body.get("model", "unknown"),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": {},
        "output": [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "temperature": None,
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "reasoning": {"effort": effort, "summary": None},
        "text": {"format": {"type": "text"}},
        "usage": {
            "input_tokens": tin,
            "output_tokens": tout,
            "total_tokens": tin + tout,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def chat_object(body: dict[str, Any], reply: str | dict[str, Any]) -> dict[str, Any]:
    """A `ChatCompletion` with one choice; log-probabilities only if asked for and supplied."""
    text = reply["text"] if isinstance(reply, dict) else reply
    tin, tout = _input_tokens(body), tokens(text)
    logprobs = None
    if body.get("logprobs") and isinstance(reply, dict) and reply.get("logprobs") is not None:
        top = int(body.get("top_logprobs") or 0)
        content = [{**t, "top_logprobs": t["top_logprobs"][:top]} for t in reply["logprobs"]]
        logprobs = {"content": content, "refusal": None}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "unknown"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": logprobs,
            }
        ],
        "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout},
    }


_ROUTES = {"/v1/responses": response_object, "/v1/chat/completions": chat_object}


class _Handler(BaseHTTPRequestHandler):
    owner: LoopbackOpenAI
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output quiet

    def _send(
        self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes = b""
    ) -> None:
        data = raw or json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req_{uuid.uuid4().hex[:12]}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to answer

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        owner = self.owner
        owner._enter()
        try:
            self._handle(owner)
        finally:
            owner._leave()

    def _handle(self, owner: LoopbackOpenAI) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        entry: dict[str, Any] = {"path": self.path, "body": body, "raw": raw, "fault": None}
        entry["images"] = images_of(body) if isinstance(body, dict) else []
        auth = self.headers.get("Authorization") or ""
        if not owner.authorised(auth):
            entry["status"] = 401
            owner._record(entry)
            # Like the real API, quote the key that was sent: a client that copies error
            # messages into its logs or results would leak it, and the tests would see that.
            msg = f"Incorrect API key provided: {auth.removeprefix('Bearer ')}."
            self._send(401, _error_body(msg, "invalid_request_error", "invalid_api_key"))
            return
        route = _ROUTES.get(self.path)
        if route is None:
            entry["status"] = 404
            owner._record(entry)
            self._send(404, _error_body(f"Unknown path {self.path}", "invalid_request_error"))
            return
        fault = owner._next_fault(body)
        entry["fault"] = fault
        entry["status"] = {"429": 429, "500": 500, "503": 503}.get(fault or "", 200)
        owner._record(entry)
        if owner.latency_s:
            time.sleep(owner.latency_s)
        if fault == "429":
            err = _error_body("Rate limit reached.", "requests", "rate_limit_exceeded")
            self._send(429, err, {"Retry-After": "0"})
        elif fault in ("500", "503"):
            self._send(int(fault), _error_body("The server had an error.", "server_error"))
        elif fault == "slow":
            time.sleep(owner.slow_s)
            self._send(200, route(body, owner.responder(body)))
        elif fault == "broken_json":
            self._send(200, None, raw=b'{"id": "resp_broken", "output": [{"type": "mess')
        elif fault == "garbage":
            self._send(200, route(body, GARBAGE_TEXT))
        else:
            self._send(200, route(body, owner.responder(body)))


# ----------------------------------------------------------------------------- shared cohort


@functools.lru_cache(maxsize=1)
def small_cohort() -> Path:
    """A 48-patient synthetic cohort (labels.csv with reports, phi_strings.json), made once."""
    from cmr_rd.synth.cohort import SynthConfig, generate_cohort

    root = Path(tempfile.mkdtemp(prefix="cmr_rd_phi_cohort_"))
    import atexit

    atexit.register(shutil.rmtree, root, True)
    cfg = SynthConfig(scale=0.0, min_patients_per_class=8, lge_slices=6, matrix=96, cine_phases=1)
    generate_cohort(cfg, root, seed=5, workers=1)
    return root
