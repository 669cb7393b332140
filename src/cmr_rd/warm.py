"""Warm interpreters for local runs: a process that has imported torch, transformers and TRL once
forks a copy of itself for each training or decoding process a job starts.

Every heavy job of the demo (a training child, an evaluation, a probe check) used to start Python
and import torch, transformers and TRL: about 4 s of CPU on our 2-core machine, 6 to 8 s when
both cores are busy (`python -X importtime`), before any work, in some 60 processes. A fork of a
process that has already imported them starts in milliseconds.

- `serve` (the zygote): imports PRELOAD, listens on a Unix socket, and for each request forks a
  child that takes the caller's working directory, environment, stdout and stderr (passed as file
  descriptors), forgets every `cmr_rd` module (so the child runs the code on disk, never the
  zygote's copy), runs `python -m MODULE ARGS...` and exits with its exit code, which the zygote
  sends back. It has no threads, so forking it is safe, and it exits when its parent (Snakemake)
  is gone or it has been idle for `idle_s`.
- `run` (the caller): sends the request and waits for the exit code, passing SIGTERM on to the
  child (so a preempted training child still checkpoints); returns None when there is no zygote,
  or when the caller runs another interpreter than the zygote's (a job under `--sdm conda` or in
  a container), so the caller starts an ordinary process instead.
- The Snakefile starts a zygote in `onstart` for local runs that will run a job of RULES, and
  names its socket in CMR_RD_WARM_SOCKET, which every job inherits. The socket listens before
  the zygote preloads, so a job that asks at once waits for its fork rather than importing
  everything itself beside the zygote. Cluster jobs (SLURM_JOB_ID set) never use one:
  their work must run inside the scheduler's allocation. CMR_RD_WARM=0 turns it off.

What a forked child computes is what a fresh process computes: the same code, the same
environment (the pins of cmr_rd.numerics are in the zygote's environment before NumPy and torch
load, and every library reads its kernel settings at first use, in the child), every random
generator seeded by the job itself. tests/test_warm.py compares the two.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

SOCKET_ENV = "CMR_RD_WARM_SOCKET"
OFF_ENV = "CMR_RD_WARM"
# What every heavy process imports: about 4 s of CPU together.
PRELOAD = (
    "numpy",
    "pandas",
    "PIL.Image",
    "torch",
    "transformers",
    "transformers.models.gemma3.modeling_gemma3",
    "transformers.models.gemma3.processing_gemma3",
    "datasets",
    "accelerate",
    "peft",
    "trl",
    "trl.trainer.grpo_trainer",
    "trl.trainer.sft_trainer",
)
_HEADER = struct.Struct("!Q")
# The rules whose jobs fork from the zygote (their scripts call `call`, or start a training child
# through cmr_rd.model.runtime, which calls `run`); tests/test_warm.py keeps the list complete.
RULES = frozenset({"foundation", "align", "sft", "sft_check", "gppo_train", "evaluate"})


def enabled(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return environ.get(OFF_ENV, "1").strip() not in {"0", "false", "no", "off"}


# ---------------------------------------------------------------------------------------------
# The caller


def run(argv: list[str], stdout: int, stderr: int) -> int | None:
    """Run `python ARGV` (e.g. ["-m", "cmr_rd.gppo.cli", "train", ...]) as a fork of the zygote,
    with this process's working directory and environment and the given output descriptors;
    return its exit code, or None when no zygote serves this process (start one yourself)."""
    path = os.environ.get(SOCKET_ENV)
    if not path or not enabled() or os.environ.get("SLURM_JOB_ID") or argv[:1] != ["-m"]:
        return None
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
    except OSError:
        client.close()
        return None
    with client:
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                   "interpreter": _interpreter()}  # fmt: skip
        payload = json.dumps(request).encode()
        socket.send_fds(client, [_HEADER.pack(len(payload))], [stdout, stderr])
        client.sendall(payload)
        reader = client.makefile("r", encoding="utf-8")
        first = reader.readline()
        if not first:
            return None  # the zygote went away before forking: start a process instead
        pid = int(first)
        previous = signal.getsignal(signal.SIGTERM)
        forwarding = threading.current_thread() is threading.main_thread()
        if forwarding:
            signal.signal(signal.SIGTERM, lambda *_: _kill(pid, signal.SIGTERM))
        try:
            line = reader.readline()
        finally:
            if forwarding:
                signal.signal(signal.SIGTERM, previous)
        return int(line) if line.strip() else 1


def _interpreter() -> list[str]:
    """Which Python and which environment: a venv's python links to the base interpreter, so
    the prefix tells them apart."""
    return [os.path.realpath(sys.executable), sys.prefix]


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class WarmCallError(RuntimeError):
    """A function run by `call` in a warm child failed; its traceback is in the job's log."""


def call(target: str, kwargs: dict, log_fd: int) -> dict:
    """`module:function(**kwargs)` in a fork of the warm interpreter, writing its output to
    `log_fd`, or in this process when there is none; the function's JSON-able result, with
    `numerics`, the record of the process that did the arithmetic (cmr_rd.numerics).

    A known input error (cmr_rd.stage.KNOWN_ERRORS) in the child comes back as a StageError with
    the child's one line, so the job still ends with exit 2 and that line."""
    with tempfile.TemporaryDirectory(prefix="cmr-rd-call-") as tmp:
        request, result, error = (Path(tmp) / n for n in ("args.json", "result.json", "error"))
        request.write_text(json.dumps(kwargs))
        code = run(["-m", "cmr_rd.warm", "call", target, str(request), str(result), str(error)],
                   log_fd, log_fd)  # fmt: skip
        if code is None:
            return _invoke(target, kwargs)
        if code == 0:
            return json.loads(result.read_text())
        if error.is_file():
            from cmr_rd.stage import StageError

            raise StageError(error.read_text())
        raise WarmCallError(f"{target} failed (exit {code}); the traceback is in the log")


def _invoke(target: str, kwargs: dict) -> dict:
    from cmr_rd import numerics

    module, _, function = target.partition(":")
    result = getattr(importlib.import_module(module), function)(**kwargs)
    return {**result, "numerics": numerics.record()}


def _call_main(target: str, request: str, result: str, error: str) -> int:
    """The child's side of `call`: a known error becomes one line in `error` and exit 2."""
    from cmr_rd.stage import known_error

    try:
        value = _invoke(target, json.loads(Path(request).read_text()))
    except Exception as exc:
        if not known_error(exc):
            raise
        Path(error).write_text(" ".join(str(exc).split()))
        return 2
    Path(result).write_text(json.dumps(value))
    return 0


# ---------------------------------------------------------------------------------------------
# The zygote


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = conn.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionError("caller closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the caller's process, run the module, exit with its code."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in fds:
            os.close(fd)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # The module search path `python -m` would build here: the working directory, then the
        # caller's PYTHONPATH, then the interpreter's own (site-packages).
        extra = [p for p in request["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [request["cwd"], *extra, *_BASE_PATH]
        # A new process would size torch's thread pool from OMP_NUM_THREADS (Snakemake sets it
        # to the job's threads); the zygote's pool was sized from its own environment.
        threads = request["env"].get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            sys.modules["torch"].set_num_threads(int(threads))
        for name in [m for m in sys.modules if m == "cmr_rd" or m.startswith("cmr_rd.")]:
            del sys.modules[name]
        module, *args = request["argv"][1:]
        sys.argv = [module, *args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                code = 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


_BASE_PATH: list[str] = []


def serve(path: str, parent: int, idle_s: float = 3600.0) -> None:
    """Listen, preload, then fork a child per request until the parent is gone or idle_s pass
    idle. The socket is there before the preloading: a job that starts meanwhile waits in the
    backlog for its fork instead of importing everything a second time beside the zygote."""
    own = {p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    _BASE_PATH[:] = [p for p in sys.path[1:] if p not in own]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    try:
        for name in PRELOAD:
            importlib.import_module(name)
        if threading.active_count() != 1:  # forking with threads can deadlock the children
            raise RuntimeError(f"preloading started {threading.active_count() - 1} thread(s)")
        _serve(server, parent, idle_s)
    finally:
        server.close()
        Path(path).unlink(missing_ok=True)


def _caller_gone(conn: socket.socket) -> bool:
    """The caller sends nothing after its request, so a readable connection is a closed one."""
    readable, _, _ = select.select([conn], [], [], 0)
    return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""


def _serve(server: socket.socket, parent: int, idle_s: float) -> None:
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    last_busy = time.monotonic()
    while os.getppid() == parent:
        for _ in selector.select(timeout=0.05):
            conn, _ = server.accept()
            try:
                header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 2)
                request = json.loads(_recv_exactly(conn, _HEADER.unpack(header)[0]))
            except (OSError, ValueError, struct.error):
                conn.close()
                continue
            if request.get("interpreter") != _interpreter():
                # A job in another environment (--sdm conda, a container) must run its own
                # interpreter: closing without a pid tells the caller to start one.
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            if _caller_gone(conn):  # it waited while the zygote preloaded, and was killed
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                server.close()
                conn.close()
                _child(request, fds)
            for fd in fds:
                os.close(fd)
            try:
                conn.sendall(f"{pid}\n".encode())
            except OSError:  # the caller died just now: its work must not go on without it
                _kill(pid, signal.SIGTERM)
                conn.close()
                continue
            children[pid] = conn
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                code = os.waitstatus_to_exitcode(status)
                try:
                    conn.sendall(f"{128 - code if code < 0 else code}\n".encode())
                except OSError:
                    pass
                conn.close()
        if children:
            last_busy = time.monotonic()
        elif time.monotonic() - last_busy > idle_s:
            break


# ---------------------------------------------------------------------------------------------
# Starting and stopping one (the Snakefile's onstart/onsuccess/onerror)


def needed(workflow: object) -> bool:
    """Whether Snakemake is about to run a job of RULES. A run without one (a report or judge
    rerun, the cohort alone) would pay the zygote's imports (5 s of CPU) for nothing. Read from
    Snakemake's DAG, an internal API: where it cannot be read, assume so."""
    try:
        planned = {job.rule.name for job in workflow.dag.needrun_jobs()}
    except Exception:
        return True
    return bool(planned & RULES)


def start() -> subprocess.Popen | None:
    """Start a zygote serving this process's children; name its socket in this process's
    environment (inherited by every job started afterwards). None when turned off or on a
    cluster node."""
    if not enabled() or os.environ.get("SLURM_JOB_ID"):
        return None
    folder = Path(tempfile.gettempdir())
    for stale in folder.glob("cmr-rd-warm-*.sock"):  # a zygote killed with SIGKILL leaves one
        owner = stale.stem.split("-")[3]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            stale.unlink(missing_ok=True)
    # The caller's pid (for the clean-up above), and a part of its own: two zygotes of one process
    # (a test's and a fixture's) never share a socket.
    path = folder / f"cmr-rd-warm-{os.getpid()}-{os.urandom(4).hex()}.sock"
    if len(str(path)) > 100:  # a Unix socket's path is at most 107 bytes
        return None
    zygote = subprocess.Popen(
        [sys.executable, "-m", "cmr_rd.warm", "serve", "--socket", str(path),
         "--parent", str(os.getpid())],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.environ[SOCKET_ENV] = str(path)
    return zygote


def stop(zygote: subprocess.Popen | None) -> None:
    os.environ.pop(SOCKET_ENV, None)
    if zygote is not None and zygote.poll() is None:
        zygote.terminate()
        try:
            zygote.wait(timeout=10)
        except subprocess.TimeoutExpired:
            zygote.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmr_rd.warm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serving = sub.add_parser("serve", help="preload and fork on request")
    serving.add_argument("--socket", required=True)
    serving.add_argument("--parent", type=int, required=True)
    serving.add_argument("--idle", type=float, default=3600.0)
    calling = sub.add_parser("call", help="run module:function on JSON arguments (for call())")
    calling.add_argument("target")
    calling.add_argument("request")
    calling.add_argument("result")
    calling.add_argument("error")
    args = parser.parse_args(argv)
    if args.command == "call":
        return _call_main(args.target, args.request, args.result, args.error)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.socket, args.parent, args.idle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
