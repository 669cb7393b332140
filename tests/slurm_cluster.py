"""A real single-node SLURM cluster on loopback, for tests and for trying the slurm profile by hand.

Everything lives in one directory: slurm.conf, gres.conf, four fake GPU device files, a munge key,
and the daemons' state, spool, pid and log files. Nothing is written to /etc and nothing is
installed: when the SLURM or munge binaries are missing, `LoopbackSlurm.missing()` says which, and
the tests skip with that reason (on Debian: `apt-get install slurm-wlm munge`).

Clients (sbatch, squeue, snakemake's slurm executor) find the cluster through `SLURM_CONF`, and
slurm.conf's `AuthInfo=socket=...` points them at this cluster's own munged. There is no
accounting (`sacct` cannot answer), so `MinJobAge=300` keeps finished jobs visible to `squeue`,
which is what the snakemake executor must be told to use (`slurm-status-command: squeue`).

    python tests/slurm_cluster.py start --dir /tmp/cluster   # prints the `export SLURM_CONF=...`
    python tests/slurm_cluster.py status --dir /tmp/cluster
    python tests/slurm_cluster.py stop --dir /tmp/cluster

Daemons are started in the foreground (`-D`/`-F`) in their own sessions, their PIDs recorded in
`pids.json`, and stopped by those PIDs (after cancelling the cluster's jobs). Runs as root in a
container without systemd; every daemon runs as the invoking user (SlurmUser=root there).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BINARIES = tuple("munged slurmctld slurmd sbatch srun squeue sinfo scontrol scancel".split())
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
PARTITION = "loopback"
GPUS = 4


def _which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def _free_ports(n: int) -> list[int]:
    """n distinct ports free on loopback now (all bound at once, so never the same one twice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tail(path: Path, lines: int = 25) -> str:
    if not path.is_file():
        return f"--- {path.name}: (missing)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path.name} (last {len(text)} lines):\n" + "\n".join(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("MemTotal not found in /proc/meminfo")


class LoopbackSlurm:
    """One controller and one compute node (this machine, as 127.0.0.1) with 4 fake GPUs.

    `with LoopbackSlurm(d) as cluster:` starts munged, slurmctld and slurmd, waits until the node
    is idle, and stops them on exit; `cluster.env()` is the environment for clients.
    """

    def __init__(self, workdir: str | Path, cpus: int | None = None, mem_mb: int | None = None):
        self.dir = Path(workdir).resolve()
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        # Below what the machine has, or slurmd drains the node ("Low RealMemory").
        self.mem_mb = mem_mb or int(_memory_mb() * 0.8)
        self.gpus = GPUS
        self.partition = PARTITION
        self.conf = self.dir / "slurm.conf"
        self.pids_file = self.dir / "pids.json"
        self._munge_dir: Path | None = None

    # -- what is needed -------------------------------------------------------------------------

    @staticmethod
    def missing() -> str | None:
        """Why a loopback cluster cannot run here, or None when it can."""
        absent = [b for b in BINARIES if _which(b) is None]
        if absent:
            return (
                f"SLURM/munge not installed (missing {', '.join(absent)}); "
                "on Debian/Ubuntu: apt-get install slurm-wlm munge"
            )
        if os.geteuid() != 0:
            # slurmd starts each job's slurmstepd as the job's user; only tried as root.
            return "the loopback SLURM runs its daemons as root (as in CI containers); not root"
        return None

    def env(self, base: dict | None = None) -> dict:
        """Environment for SLURM clients: SLURM_CONF, the srun shim and the sbin folders on PATH."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([str(self.dir / "bin"), env.get("PATH", ""), *SBIN])
        for leaked in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_"))]:
            if leaked != "SLURM_CONF":  # a test run inside a SLURM job must not leak its job
                env.pop(leaked)
        return env

    # -- files ------------------------------------------------------------------------------------

    @property
    def munge_socket(self) -> Path:
        assert self._munge_dir is not None
        return self._munge_dir / "munge.socket"

    def _layout(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "spool", "log", "run", "dev", "munge", "bin"):
            (self.dir / sub).mkdir(exist_ok=True)
        os.chmod(self.dir / "munge", 0o755)
        # A Unix socket path must fit in 108 bytes; a deep pytest tmp dir may not.
        munge_dir = self.dir / "munge"
        if len(str(munge_dir / "munge.socket")) > 100:
            munge_dir = Path(tempfile.mkdtemp(prefix="munge-"))
            (self.dir / "munge" / "socket_dir").write_text(str(munge_dir))
        self._munge_dir = munge_dir

    def _write_config(self) -> None:
        key = self.dir / "munge/munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        # Fake GPUs: slurmd wants each File= to be a character or block device, and numbers
        # CUDA_VISIBLE_DEVICES by the digits ending the name; links to /dev/null are both, and
        # need no privilege (mknod does).
        gres = []
        for i in range(self.gpus):
            dev = self.dir / f"dev/nvidia{i}"
            if not dev.is_symlink():
                dev.unlink(missing_ok=True)
                dev.symlink_to("/dev/null")
            gres.append(f"Name=gpu File={dev}")
        (self.dir / "gres.conf").write_text("\n".join(["AutoDetect=off", *gres]) + "\n")
        # snakemake-executor-plugin-slurm-jobstep (0.6.1) deletes every SLURM_* variable but the
        # job's identity, SLURM_CONF included, before the `srun` that runs the rule inside the
        # job; srun then looks for /etc/slurm/slurm.conf and DNS SRV records. Sites that keep
        # slurm.conf elsewhere hit the same failure; here a shim first on PATH (PATH is exported
        # to jobs) puts SLURM_CONF back.
        srun = self.dir / "bin/srun"
        srun.write_text(
            "#!/bin/sh\n# tests/slurm_cluster.py: restore SLURM_CONF for srun inside jobs.\n"
            f'export SLURM_CONF="${{SLURM_CONF:-{self.conf}}}"\n'
            f'exec {_which("srun")} "$@"\n'
        )
        srun.chmod(0o755)
        ports = dict(zip(("SlurmctldPort", "SlurmdPort"), _free_ports(2), strict=True))
        user = getpass.getuser()
        d = self.dir
        lines = [
            "# Written by tests/slurm_cluster.py: one node on loopback, no accounting.",
            "ClusterName=loopback",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={ports['SlurmctldPort']}",
            f"SlurmdPort={ports['SlurmdPort']}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/run/slurmctld.pid",
            f"SlurmdPidFile={d}/run/slurmd.pid",
            f"SlurmctldLogFile={d}/log/slurmctld.log",
            f"SlurmdLogFile={d}/log/slurmd.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "MpiDefault=none",
            "GresTypes=gpu",
            "ReturnToService=2",
            # Finished jobs stay visible to squeue for 5 minutes: the executor's status source.
            "MinJobAge=300",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=5",
            "Waittime=0",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.mem_mb} Gres=gpu:{self.gpus} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.host} Default=YES "
            "MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    # -- processes -------------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str]) -> int:
        out = open(self.dir / f"log/{name}.stdout", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=self.dir,
            start_new_session=True,
        )
        out.close()
        pids = self._pids()
        pids[name] = proc.pid
        self.pids_file.write_text(json.dumps(pids))
        return proc.pid

    def _pids(self) -> dict[str, int]:
        return json.loads(self.pids_file.read_text()) if self.pids_file.is_file() else {}

    def _logs(self) -> str:
        names = ["munged.log", "slurmctld.log", "slurmd.log"]
        names += [f"{n}.stdout" for n in ("munged", "slurmctld", "slurmd")]
        return "\n".join(_tail(self.dir / "log" / n) for n in names)

    def _wait(self, what: str, ok, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ok():
                return
            for name, pid in self._pids().items():
                if not _alive(pid):
                    raise RuntimeError(f"{name} (pid {pid}) exited while waiting for {what}\n"
                                       + self._logs())  # fmt: skip
            time.sleep(0.3)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n" + self._logs())

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> str:
        """Run a SLURM client against this cluster; its stdout."""
        result = subprocess.run(
            cmd, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def node_state(self) -> str:
        try:
            out = self.run("sinfo", "--noheader", "-N", "-o", "%T", check=False, timeout=10)
        except subprocess.TimeoutExpired:
            return ""
        return out.strip()

    def start(self, timeout: float = 60) -> LoopbackSlurm:
        reason = self.missing()
        if reason:
            raise RuntimeError(reason)
        if any(_alive(pid) for pid in self._pids().values()):
            raise RuntimeError(f"a cluster is already running in {self.dir} (stop it first)")
        self.pids_file.unlink(missing_ok=True)
        self._layout()
        self._write_config()
        d = self.dir
        # -f: munged refuses some ownerships and permissions of a root-owned tree otherwise.
        self._spawn("munged", [_which("munged"), "-F", "-f",
                               f"--socket={self.munge_socket}",
                               f"--key-file={d}/munge/munge.key",
                               f"--pid-file={d}/run/munged.pid",
                               f"--log-file={d}/log/munged.log",
                               f"--seed-file={d}/munge/munged.seed"])  # fmt: skip
        self._wait("munged's socket", self.munge_socket.exists, timeout)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: self.run("scontrol", "ping", check=False).find("UP") >= 0,
                   timeout)  # fmt: skip
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.host])
        self._wait(f"node {self.host} idle", lambda: self.node_state() == "idle", timeout)
        return self

    def jobs(self) -> list[str]:
        out = self.run("squeue", "--noheader", "-o", "%i %T", check=False)
        return [line for line in out.splitlines() if line.strip()]

    def stop(self, timeout: float = 20) -> None:
        """Cancel this cluster's jobs, stop the daemons by PID, remove the munge socket folder."""
        pids = self._pids()
        if _alive(pids.get("slurmctld", 0) or -1):
            self.run("scancel", "--full", "--partition", self.partition, check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not [j for j in self.jobs() if " RUNNING" in j or " COMPLETING" in j]:
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = pids.get(name)
            if not pid or not _alive(pid):
                continue
            if name not in _cmdline(pid):  # the PID was reused by something else
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            try:  # reap, when it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        self.pids_file.unlink(missing_ok=True)
        pointer = self.dir / "munge/socket_dir"
        if pointer.is_file():
            shutil.rmtree(pointer.read_text().strip(), ignore_errors=True)
            pointer.unlink()

    def status(self) -> str:
        pids = self._pids()
        lines = [f"{n}: pid {p} {'running' if _alive(p) else 'dead'}" for n, p in pids.items()]
        if not pids:
            lines.append(f"no cluster started in {self.dir}")
        elif _alive(pids.get("slurmctld", 0) or -1):
            lines += [f"node {self.host}: {self.node_state()}", *self.jobs()]
        return "\n".join(lines)

    def __enter__(self) -> LoopbackSlurm:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--dir", required=True, type=Path, help="the cluster's own folder")
    args = parser.parse_args(argv)
    cluster = LoopbackSlurm(args.dir)
    if args.command == "start":
        reason = cluster.missing()
        if reason:
            print(f"cannot start: {reason}", file=sys.stderr)
            return 2
        t0 = time.monotonic()
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        print(f"# loopback SLURM up in {time.monotonic() - t0:.1f} s: node {cluster.host}, "
              f"{cluster.cpus} CPUs, {cluster.mem_mb} MB, {cluster.gpus} fake GPUs, "
              f"partition {cluster.partition}")  # fmt: skip
        print(f"export SLURM_CONF={cluster.conf} PATH={cluster.dir / 'bin'}:$PATH")
        print("# then, from a workflow folder:")
        print(
            "#   snakemake --profile tests/slurm_profile "
            f"--max-threads {cluster.cpus} --resources mem_mb={cluster.mem_mb}"
        )
    elif args.command == "stop":
        cluster.stop()
        print(f"stopped the cluster in {cluster.dir}")
    else:
        print(cluster.status())
    return 0


if __name__ == "__main__":
    sys.exit(main())
