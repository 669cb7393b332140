"""cmr_rd.warm: a fork of the warm interpreter behaves as a new process would (exit code, output,
working directory, environment, module path, fresh cmr_rd code, SIGTERM, the same numbers), and
without a zygote everything runs as before."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cmr_rd import warm
from cmr_rd.stage import StageError
from test_numerics import PROBE

CHILD = """
import json, os, sys, time
fresh = "cmr_rd.numerics" not in sys.modules  # the zygote's copy was forgotten
import cmr_rd.numerics
if sys.argv[1:2] == ["sleep"]:
    print("sleeping", flush=True)
    time.sleep(60)
print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "marker": os.environ.get("MARKER"),
                  "fresh": fresh, "pins": os.environ.get("ATEN_CPU_CAPABILITY")}))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("EXIT", "0")))
"""


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    """A zygote serving this test process; the module `warmchild` on a PYTHONPATH of its own."""
    lib = tmp_path_factory.mktemp("lib")
    (lib / "warmchild.py").write_text(CHILD)
    (lib / "trainprobe.py").write_text(PROBE)
    saved = {k: os.environ.get(k) for k in (warm.SOCKET_ENV, "PYTHONPATH")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")])
    process = warm.start()
    path = Path(os.environ[warm.SOCKET_ENV])
    deadline = time.monotonic() + 120
    while not path.exists() and time.monotonic() < deadline:
        assert process.poll() is None, "the zygote exited while preloading"
        time.sleep(0.2)
    with open(os.devnull, "w") as null:  # served once it has preloaded: the tests start then
        assert warm.run(["-m", "warmchild"], null.fileno(), null.fileno()) == 0
    yield lib
    warm.stop(process)
    assert process.wait(timeout=10) is not None and not path.exists()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run_child(tmp_path, *args, **env) -> tuple[int | None, dict, str]:
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with open(out, "w") as stdout, open(err, "w") as stderr:
            code = warm.run(["-m", "warmchild", *args], stdout.fileno(), stderr.fileno())
    finally:
        for key, value in old.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    lines = out.read_text().splitlines()
    return code, json.loads(lines[-1]) if lines else {}, err.read_text()


def test_a_fork_is_the_callers_process(zygote, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, seen, err = run_child(tmp_path, "a", "b c", MARKER="m1", EXIT="3")
    assert code == 3
    assert seen == {"argv": ["a", "b c"], "cwd": str(tmp_path), "marker": "m1", "fresh": True,
                    "pins": "avx2"}  # fmt: skip
    assert "to stderr" in err
    code, seen, _ = run_child(tmp_path, MARKER="m2")
    assert code == 0 and seen["marker"] == "m2"


def test_a_crash_in_the_child_is_its_exit_code_and_traceback(zygote, tmp_path):
    err = tmp_path / "err.txt"
    with open(err, "w") as stream:
        code = warm.run(["-m", "no_such_module_here"], stream.fileno(), stream.fileno())
    assert code == 1 and "No module named no_such_module_here" in err.read_text()


def test_sigterm_reaches_the_child(zygote, tmp_path):
    """A preempted job's SIGTERM must reach the training child, which checkpoints and exits."""
    script = tmp_path / "client.py"
    script.write_text(
        "import sys\nfrom cmr_rd import warm\n"
        "sys.exit(warm.run(['-m', 'warmchild', 'sleep'], 1, 2))\n"
    )
    client = subprocess.Popen(
        [sys.executable, str(script)], env=dict(os.environ), stdout=subprocess.PIPE, text=True
    )
    assert client.stdout.readline().strip() == "sleeping"  # the fork runs
    time.sleep(0.5)  # the client has read its pid and forwards SIGTERM (microseconds after)
    assert client.poll() is None
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == 128 + signal.SIGTERM


def test_a_fork_computes_what_a_new_process_computes(zygote, tmp_path):
    out = tmp_path / "out.txt"
    with open(out, "w") as stream:
        assert warm.run(["-m", "trainprobe"], stream.fileno(), 2) == 0
    forked = json.loads(out.read_text().splitlines()[-1])
    fresh = subprocess.run([sys.executable, "-m", "trainprobe"], capture_output=True, text=True,
                           env=dict(os.environ), cwd=tmp_path, timeout=300)  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    new = json.loads(fresh.stdout.splitlines()[-1])
    assert forked["weights"] == new["weights"] and forked["numpy"] == new["numpy"]
    assert forked["record"]["torch"] == new["record"]["torch"]


def test_call_returns_the_result_and_known_errors_as_one_line(zygote, tmp_path):
    with open(tmp_path / "log", "w") as log:
        result = warm.call("cmr_rd.schedule:summary", {"jobs": [], "cores": 2}, log.fileno())
        assert result["wall_s"] == 0.0 and result["numerics"]["mode"] == "pinned"
        with pytest.raises(StageError, match="expected one of pinned, portable, native"):
            warm.call(
                "cmr_rd.numerics:pin_environment",
                {"environ": {"CMR_RD_NUMERICS": "fast"}},
                log.fileno(),
            )


def test_without_a_zygote_everything_runs_here(tmp_path, monkeypatch):
    monkeypatch.delenv(warm.SOCKET_ENV, raising=False)
    assert warm.run(["-m", "warmchild"], 1, 2) is None
    result = warm.call("cmr_rd.schedule:summary", {"jobs": [], "cores": 1}, 2)
    assert result["cores"] == 1 and "numerics" in result
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert warm.start() is None
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv(warm.OFF_ENV, "0")
    assert warm.start() is None


def test_a_caller_with_another_interpreter_starts_its_own(zygote, tmp_path, monkeypatch):
    """A job under --sdm conda or in a container runs another Python than the zygote's."""
    monkeypatch.setattr(sys, "prefix", "/opt/conda/envs/other")
    assert warm.run(["-m", "warmchild"], 1, 2) is None


GATE = """
import os, time
while not os.path.exists(os.environ["PRELOAD_GATE"]):  # the test opens it
    time.sleep(0.01)
"""


def gated_zygote(tmp_path, monkeypatch, **modules: str) -> tuple[subprocess.Popen, Path]:
    """A zygote whose preloading waits, before torch, until the test creates the gate file: the
    tests below then know its state instead of racing its imports (a CI machine had finished
    preloading before a 0.3 s sleep ended)."""
    monkeypatch.delenv(warm.SOCKET_ENV, raising=False)
    lib = tmp_path / "lib"
    lib.mkdir()
    for name, code in {"preloadgate": GATE, **modules}.items():
        (lib / f"{name}.py").write_text(code)
    gate = tmp_path / "gate"
    monkeypatch.setenv("PRELOAD_GATE", str(gate))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")]))
    path = tmp_path / "zygote.sock"
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cmr_rd import warm; "
         "warm.PRELOAD = ('preloadgate', *warm.PRELOAD); sys.exit(warm.main(sys.argv[1:]))",
         "serve", "--socket", str(path), "--parent", str(os.getpid())],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    monkeypatch.setenv(warm.SOCKET_ENV, str(path))
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    return process, gate


def torch_loaded(process: subprocess.Popen) -> bool:
    return "libtorch" in Path(f"/proc/{process.pid}/maps").read_text()


def test_a_job_that_asks_while_the_zygote_preloads_waits_for_its_fork(tmp_path, monkeypatch):
    """The socket listens before the imports: a job that starts at once is forked once the
    zygote is ready, rather than importing torch a second time beside it."""
    process, gate = gated_zygote(tmp_path, monkeypatch, warmchild=CHILD)
    sent = threading.Event()
    sendall = socket.socket.sendall

    def noting(self, data, *args):
        sendall(self, data, *args)
        sent.set()

    monkeypatch.setattr(socket.socket, "sendall", noting)
    outcome = {}

    def ask():
        outcome["code"], outcome["child"], _ = run_child(tmp_path, "early")

    asking = threading.Thread(target=ask)
    try:
        assert not torch_loaded(process)  # listening, torch not imported yet
        asking.start()
        assert sent.wait(60)  # the request is in the zygote's backlog
        assert not torch_loaded(process) and asking.is_alive()
        gate.touch()
        asking.join(120)
        assert outcome["code"] == 0  # forked: None would be "start your own"
        assert outcome["child"]["argv"] == ["early"] and torch_loaded(process)
    finally:
        gate.touch()
        warm.stop(process)


def test_a_caller_killed_while_the_zygote_preloads_gets_no_fork(tmp_path, monkeypatch):
    """A job killed while it waits in the backlog (preemption, Ctrl-C) must not leave a fork that
    runs its work without it."""
    marker = "import pathlib, sys\npathlib.Path(sys.argv[1]).write_text('ran')\n"
    process, gate = gated_zygote(tmp_path, monkeypatch, marker=marker)
    try:
        killed, served = tmp_path / "killed.txt", tmp_path / "served.txt"
        caller = subprocess.Popen(
            [sys.executable, "-c", "import socket\nfrom cmr_rd import warm\n"
             "sendall = socket.socket.sendall\n"
             "def noting(self, data): sendall(self, data); print('sent', flush=True)\n"
             "socket.socket.sendall = noting\n"
             f"warm.run(['-m', 'marker', {str(killed)!r}], 1, 2)"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert caller.stdout.readline().strip() == "sent"  # its request is in the backlog
        assert not torch_loaded(process)  # still preloading
        caller.kill()
        caller.wait()
        gate.touch()
        with open(os.devnull, "w") as null:
            code = warm.run(["-m", "marker", str(served)], null.fileno(), null.fileno())
        assert code == 0 and served.read_text() == "ran"  # served after the killed request
        assert not killed.exists()
    finally:
        gate.touch()
        warm.stop(process)


class _Job:
    def __init__(self, rule: str) -> None:
        self.rule = type("Rule", (), {"name": rule})()


class _Workflow:
    def __init__(self, rules: list[str] | None) -> None:
        self.rules = rules

    @property
    def dag(self):
        if self.rules is None:
            raise AttributeError("dag")  # Snakemake's internals changed
        jobs = [_Job(rule) for rule in self.rules]
        return type("Dag", (), {"needrun_jobs": lambda _self: iter(jobs)})()


def test_a_zygote_is_started_only_for_a_run_with_a_job_that_forks():
    assert warm.needed(_Workflow(["report_tables", "evaluate"]))
    assert not warm.needed(_Workflow(["judge", "report_tables", "dvc_commit"]))
    assert not warm.needed(_Workflow([]))
    assert warm.needed(_Workflow(None))  # unreadable: as before, start one


def test_the_rules_that_fork_are_the_rules_whose_scripts_call_the_zygote(repo):
    """Every rule whose script forks (warm.call, or a training child through
    cmr_rd.model.runtime.train_in_run_folder) is in warm.RULES, and only those."""
    forking = set()
    header = re.compile(r"^[ \t]*(?:rule|checkpoint) (\w+):", re.M)
    for smk in (repo / "rules").glob("*.smk"):
        text = smk.read_text()
        starts = list(header.finditer(text))
        for here, after in zip(starts, [*starts[1:], None], strict=False):
            body = text[here.end() : after.start() if after else len(text)]
            script = re.search(r'script:\s*"\.\./workflow/scripts/(\w+\.py)"', body)
            if script is None:
                continue
            code = (repo / "workflow/scripts" / script.group(1)).read_text()
            if "warm.call(" in code or "train_in_run_folder(" in code:
                forking.add(here.group(1))
    assert forking == warm.RULES
