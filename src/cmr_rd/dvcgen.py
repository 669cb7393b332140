"""dvc.yaml, generated from Snakemake's own DAG, and the commit that records its hashes.

Snakemake executes; DVC versions. dvc.yaml has one stage per Snakemake rule (so `dvc dag` shows
the rule graph) and one `foreach` item per job of a rule with wildcards (a GPPO phase of one run
and seed, an evaluation). A stage's deps are the job's inputs, the rule's script and the library
folders the script uses; its outs are the job's outputs, all `persist: true` so that DVC never
deletes what Snakemake made; its params are the config keys the rule passes through; its cmd is
the Snakemake command that remakes the job (our flow never lets DVC run it, `dvc repro` would).
The one exception is a rule whose jobs only a checkpoint's output names (AFTER_CHECKPOINT: the
cold-start shards, one per class that QC accepted): it is one stage whose out is the folder its
outputs share, and its consumer depends on that folder, so dvc.yaml is the same before and after
a run, whatever the checkpoint decides. The file follows the config (runs x seeds x phases), so
it is generated, never edited:

    python -m cmr_rd.dvcgen [--configfile config/tiny.yaml] [--check] [TARGET ...]

`commit` is what the local rule dvc_commit runs once every final target exists; `restore`
(`python -m cmr_rd.dvcgen --restore`) brings results back from DVC so that Snakemake has
nothing to do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cmr_rd.classes import CLASSES
from cmr_rd.stage import StageError

log = logging.getLogger("cmr_rd")

DEFAULT_CONFIG = "config/config.yaml"
RECORD = "logs/dvc/commit.json"  # dvc_commit's output: not under results/, so not versioned
# Bookkeeping rules, not pipeline stages: the default target and the DVC commit itself.
NOT_STAGES = {"all", "dvc_commit"}
# Library modules every script uses for logging, lineage and JSONL: they do not shape results.
PLUMBING = {"lineage", "stage", "jsonl"}
# Jobs only a checkpoint's output names: consumer -> (producer, wildcard, values to ask for while
# the checkpoint has not run). Which classes get a shard, and so how many coldstart_shard jobs
# there are, Snakemake knows only once rewrite_qc has run; dvc.yaml describes the producer by the
# folder its outputs share (one stage, that folder its out and the consumer's dep), so the file is
# the same before and after a run, and committed before a run it stays current after one.
AFTER_CHECKPOINT = {"coldstart_dataset": ("coldstart_shard", "label", CLASSES)}


@dataclass
class Job:
    rule: str
    wildcards: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    patterns: list[str]  # the rule's output patterns, with {w} written as DVC's ${item.w}
    script: str | None
    config_keys: list[str]
    pending: list[str] = field(default_factory=list)  # checkpoint targets standing in for inputs
    remake: str = ""  # Snakemake arguments that remake the job, when not `--force OUTPUT`


def _dvc_pattern(pattern: str) -> str:
    return re.sub(r"\{(\w+)(?:,[^{}]*)?\}", r"${item.\1}", pattern)


def _config_keys(params: dict, config: dict) -> list[str]:
    """The config keys whose values a job's params pass through, matched by identity: a computed
    value (seed + 301) is not claimed, nor a value several keys share (True, None, small ints)."""
    index: dict[int, list[str]] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            index.setdefault(id(value), []).append(f"{prefix}{key}")
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")

    walk(config, "")
    found: set[str] = set()

    def match(value) -> None:
        paths = index.get(id(value), [])
        if len(paths) == 1 and value is not None and not isinstance(value, bool):
            found.add(paths[0])
        elif not paths and isinstance(value, dict):
            for sub in value.values():
                match(sub)

    for value in params.values():
        match(value)
    return sorted(k for k in found if not any(k.startswith(f"{o}.") for o in found))


# Snakemake 9 has no public API for the jobs of a DAG (their inputs, outputs, params and
# wildcards; `--d3dag` and `--summary` print rules and files, not params), so the functions
# marked INTERNAL below read them from its internals, and nothing else in this module does:
#   WorkflowApi._workflow; Workflow._prepare_dag(), ._build_dag(), .dag.jobs, .rules,
#   .get_rule(), .default_target, .config; Job.rule, .wildcards_dict, .input, .output, .params;
#   an input file's .flags["checkpoint_target"]; Rule.name, .script, .snakefile, .output.
# tests/test_dvc.py pins the Snakemake version they were checked against: on an upgrade, check
# these names, then move the pin.
SNAKEMAKE_CHECKED = "9.27.1"


def _jobs_of(workflow, workdir: Path) -> list[Job]:
    """INTERNAL: the built DAG's jobs, in the order the rule files define the rules."""
    jobs = []
    for job in workflow.dag.jobs:
        rule = job.rule
        if rule.name in NOT_STAGES:
            continue
        script = None
        if rule.script:
            script = (Path(rule.snakefile).parent / rule.script).resolve().relative_to(workdir)
        jobs.append(
            Job(
                rule=rule.name,
                wildcards={k: str(v) for k, v in job.wildcards_dict.items()},
                inputs=list(dict.fromkeys(str(f) for f in job.input)),
                outputs=[str(f) for f in job.output],
                patterns=[_dvc_pattern(str(f)) for f in rule.output],
                script=script and script.as_posix(),
                config_keys=_config_keys(dict(job.params.items()), workflow.config),
                pending=[str(f) for f in job.input if f.flags.get("checkpoint_target")],
            )
        )
    # In the order the rule files define the rules (the pipeline's), then phase 2 before 10.
    order = {rule.name: i for i, rule in enumerate(workflow.rules)}
    return sorted(jobs, key=lambda j: (order[j.rule], [_natural(v) for v in j.wildcards.values()]))


def _build_jobs(workflow_api, dag_settings, workdir: Path) -> list[Job]:
    """INTERNAL: build the DAG for these settings (public API: a DAGApi; the build: not)."""
    workflow_api.dag(dag_settings)  # installs the settings on the workflow
    workflow = workflow_api._workflow
    workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True, nolock=True)
    workflow._build_dag()
    return _jobs_of(workflow, workdir)


def _rule_outputs(workflow_api, rule: str) -> list[str]:
    """INTERNAL: a rule's output patterns."""
    return [str(f) for f in workflow_api._workflow.get_rule(rule).output]


def _default_target(workflow_api) -> str:
    """INTERNAL: the rule `snakemake` builds without targets."""
    return workflow_api._workflow.default_target


def _natural(value: str) -> tuple:
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def dag_jobs(workdir: Path, configfiles: list[str], targets: list[str]) -> list[Job]:
    """Every job Snakemake needs for the targets (default: rule all), done or not. The jobs behind
    a checkpoint (AFTER_CHECKPOINT) become one job per rule, whether the checkpoint has run or not:
    its inputs those its jobs share, its output their folder (_behind_checkpoint)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
    )

    workdir = Path(workdir).resolve()
    logging.getLogger("snakemake.logging").propagate = False  # not into the caller's log
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[workdir / c for c in configfiles]),
            snakefile=workdir / "Snakefile",
            workdir=workdir,
        )
        jobs = _build_jobs(workflow_api, DAGSettings(targets=set(targets)), workdir)
        rules = {j.rule for j in jobs}
        # Before the checkpoint has run (or if it accepted nothing), no producer job is in the
        # DAG: ask for the producer's outputs for every possible value, to learn its inputs.
        extra = set()
        for consumer, (producer, wildcard, values) in AFTER_CHECKPOINT.items():
            if consumer in rules and producer not in rules:
                pattern = _rule_outputs(workflow_api, producer)[0]
                extra |= {re.sub(rf"\{{{wildcard}(,[^{{}}]*)?\}}", v, pattern) for v in values}
        if extra:
            wanted = set(targets or [_default_target(workflow_api)]) | extra
            jobs = _build_jobs(workflow_api, DAGSettings(targets=wanted), workdir)
        for consumer, (producer, wildcard, _) in AFTER_CHECKPOINT.items():
            folder = _folder(_rule_outputs(workflow_api, producer), wildcard)
            jobs = _behind_checkpoint(jobs, consumer, producer, folder)
    return jobs


def _folder(patterns: list[str], wildcard: str) -> str:
    """The folder that holds a rule's outputs whatever the wildcard's value: each pattern's part
    before its first wildcard, the same folder for all, the wildcard only in what follows."""
    folders = {p.split("{", 1)[0] for p in patterns}
    if len(folders) != 1 or not all(f"{{{wildcard}" in p for p in patterns):
        raise ValueError(f"outputs {patterns} do not share a folder before {{{wildcard}}}")
    folder = folders.pop()
    if not folder.endswith("/"):
        raise ValueError(f"outputs {patterns} do not share a folder of their own")
    return folder.rstrip("/")


def _behind_checkpoint(jobs: list[Job], consumer: str, producer: str, folder: str) -> list[Job]:
    """The producer's jobs as one job whose output is their folder; the consumer's inputs that
    the checkpoint decides (its producer's outputs, or the checkpoint standing in for them) as
    that folder. Neither depends on how many producer jobs the checkpoint's output asks for."""
    made = [j for j in jobs if j.rule == producer]
    if not made:
        return jobs
    one = Job(
        rule=producer,
        wildcards={},
        inputs=list(dict.fromkeys(f for j in made for f in j.inputs)),
        outputs=[folder],
        patterns=[folder],
        script=made[0].script,
        config_keys=sorted({k for j in made for k in j.config_keys}),
        # Not a file Snakemake can target: force every job of the rule, and nothing after it.
        remake=f"--forcerun {producer} --until {producer}",
    )
    for job in jobs:
        if job.rule == consumer:
            decided = {*job.pending, *(o for j in made for o in j.outputs)}
            inputs = [folder if f in decided else f for f in job.inputs]
            job.inputs = list(dict.fromkeys([*inputs, folder]))
            job.pending = []
    first = jobs.index(made[0])
    rest = [j for j in jobs if j.rule != producer]
    return [*rest[:first], one, *rest[first:]]


def library_deps(script: Path) -> list[str]:
    """The library folders (or modules) a stage script imports or launches with `-m`."""
    deps = set()
    for name in re.findall(r"\bcmr_rd\.(\w+)", script.read_text()):
        if name not in PLUMBING:
            folder = (Path(__file__).parent / name).is_dir()
            deps.add(f"src/cmr_rd/{name}" if folder else f"src/cmr_rd/{name}.py")
    return sorted(deps)


def _params(keys: list[str], configfiles: list[str], workdir: Path) -> list[dict]:
    """DVC params: each key from the last config file that sets it. A section that a later file
    overrides in part is split into its keys; a key no file sets (a schema default) is left out."""
    files = list(dict.fromkeys([DEFAULT_CONFIG, *configfiles]))
    loaded = [(f, yaml.safe_load((workdir / f).read_text()) or {}) for f in files]

    def lookup(data: dict, key: str):
        for part in key.split("."):
            if not isinstance(data, dict) or part not in data:
                return None, False
            data = data[part]
        return data, True

    by_file: dict[str, list[str]] = {f: [] for f in files}

    def place(key: str) -> None:
        setters = [(f, v) for f, d in loaded for v, ok in [lookup(d, key)] if ok]
        if not setters:
            return
        last_file, last_value = setters[-1]
        if len(setters) == 1 or not isinstance(last_value, dict):
            by_file[last_file].append(key)
            return
        children = {c for _, v in setters if isinstance(v, dict) for c in v}
        for child in sorted(children):
            place(f"{key}.{child}")

    for key in keys:
        place(key)
    return [{f: keys} for f, keys in by_file.items() if keys]


def _stage(jobs: list[Job], configfiles: list[str], workdir: Path) -> dict:
    first = jobs[0]
    fixed = []
    if first.script:
        fixed = [first.script, *library_deps(workdir / first.script)]
    # Options after the target: --configfile takes every value that follows it.
    options = "".join(f" --configfile {c}" for c in configfiles)
    keys = sorted({k for j in jobs for k in j.config_keys})
    params = _params(keys, configfiles, workdir)
    if not first.wildcards:
        remake = first.remake or f"--force {first.outputs[0]}"
        stage = {
            "cmd": f"snakemake --cores all {remake}{options}",
            "deps": [*first.inputs, *fixed],
            "params": params,
            "outs": [{o: {"persist": True}} for o in first.outputs],
        }
        return {k: v for k, v in stage.items() if v}
    width = max(len(j.inputs) for j in jobs)
    items = {}
    for job in jobs:
        key = "-".join(v if not v.isdigit() else f"{w}{v}" for w, v in job.wildcards.items())
        key = key.replace("/", "-")  # sft-ts-iou-seed1-phase2, sft-ts-iou-seed1 (evaluate)
        pad = (job.inputs or fixed)[-1:] * (width - len(job.inputs))
        items[key] = {**job.wildcards, "deps": job.inputs + pad}
    do = {
        "cmd": f"snakemake --cores all --force {first.patterns[0]}{options}",
        "deps": [f"${{item.deps[{i}]}}" for i in range(width)] + fixed,
        "params": params,
        "outs": [{p: {"persist": True}} for p in first.patterns],
    }
    return {"foreach": items, "do": {k: v for k, v in do.items() if v}}


def generate(
    workdir: Path | str = ".", configfiles: list[str] = (), targets: list[str] = ()
) -> str:
    """The text of dvc.yaml for this config and these targets (default: rule all)."""
    workdir = Path(workdir).resolve()
    configfiles = [Path(c).as_posix() for c in configfiles]
    jobs = dag_jobs(workdir, list(configfiles), list(targets))
    stages = {
        rule: _stage([j for j in jobs if j.rule == rule], list(configfiles), workdir)
        for rule in dict.fromkeys(j.rule for j in jobs)
    }
    args = "".join(f" --configfile {c}" for c in configfiles) + "".join(f" {t}" for t in targets)
    header = (
        f"# Generated by `python -m cmr_rd.dvcgen{args}` from Snakemake's DAG: do not edit.\n"
        "# One stage per rule, one foreach item per job, outs persist: Snakemake makes them and\n"
        "# DVC versions them. The local rule dvc_commit regenerates this file, then commits.\n"
    )
    return header + yaml.safe_dump({"stages": stages}, sort_keys=False, width=100)


def _dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a DVC command; a failure is one StageError line with DVC's own message (DVC's
    `--quiet` would hide it, so no command here passes it)."""
    result = subprocess.run(
        [sys.executable, "-m", "cmr_rd.dvcrun", *args], cwd=cwd, capture_output=True, text=True
    )
    output = (result.stdout + result.stderr).strip() or "no output"
    log.info("dvc %s (exit %d): %s", " ".join(args), result.returncode, output)
    if result.returncode != 0:
        message = " ".join((result.stderr or result.stdout).split()) or "no message"
        raise StageError(f"dvc {' '.join(args)} failed (exit {result.returncode}): {message}")
    return result


def outside_git(workdir: Path) -> bool:
    """DVC keeps its metadata in git unless `core.no_scm` is set: an unpacked archive of this
    repository has .dvc/ but no git repository at or above it, and every DVC command fails."""
    if any((folder / ".git").exists() for folder in (workdir, *workdir.parents)):
        return False
    no_scm = _dvc("config", "core.no_scm", cwd=workdir).stdout.strip().lower()
    return no_scm not in {"true", "1", "yes"}


def commit(
    workdir: Path | str = ".",
    configfiles: list[str] = (),
    remote: str | None = None,
    targets: list[str] = (),
) -> dict:
    """Regenerate dvc.yaml, record every stage's hashes in dvc.lock, push to the remote.

    `--no-relink` leaves the workspace alone: a relink rewrites files in DVC's order, and the
    new modification times would make Snakemake rerun the pipeline. Outside a DVC repository (no
    .dvc/, e.g. the test suite's scratch copies) or outside git (an unpacked archive, unless
    `core.no_scm` is set) it does nothing and says so; a DVC command that fails is a StageError
    with DVC's message. It needs the whole workspace and DVC's lock: run it in a local rule,
    never in a cluster job.
    """
    workdir = Path(workdir).resolve()
    if not (workdir / ".dvc").is_dir():
        reason = "not a DVC repository (no .dvc/): dvc commit skipped (`dvc init` to version)"
        log.info(reason)
        return {"status": "skipped", "reason": reason}
    if outside_git(workdir):
        reason = (
            "a DVC repository outside git (no .git/ at or above it, as in an unpacked archive): "
            "dvc commit skipped (`git init`, or `dvc config --local core.no_scm true`, to version)"
        )
        log.info(reason)
        return {"status": "skipped", "reason": reason}
    text = generate(workdir, configfiles, targets)
    dvc_yaml = workdir / "dvc.yaml"
    if not dvc_yaml.is_file() or dvc_yaml.read_text() != text:
        log.info("dvc.yaml regenerated for this config")
        dvc_yaml.write_text(text)
    _dvc("commit", "--force", "--no-relink", cwd=workdir)
    if remote:
        _dvc("push", "--remote", remote, cwd=workdir)
    status = json.loads(_dvc("status", "--json", cwd=workdir).stdout or "{}")
    return {
        "status": "committed",
        "stages": len(yaml.safe_load(text)["stages"]),
        "configfiles": list(configfiles),
        "remote": remote,
        "dvc_status": status,  # {} when every stage is recorded as it is on disk
        **_lock(workdir),
    }


def _lock(workdir: Path) -> dict:
    return {"dvc_lock_sha256": hashlib.sha256((workdir / "dvc.lock").read_bytes()).hexdigest()}


def write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def restore(
    workdir: Path | str = ".", configfiles: list[str] = (), remote: str | None = None
) -> None:
    """Bring the results back from DVC and tell Snakemake they are current.

    A checkout writes files in DVC's order, so their modification times no longer follow the
    DAG and Snakemake would rerun jobs. Once `dvc status` confirms every output, dependency and
    param matches dvc.lock, `snakemake --touch` restamps the outputs in DAG order (nothing runs).
    """
    workdir = Path(workdir).resolve()
    try:
        _dvc("checkout", cwd=workdir)  # from the cache, when it holds everything
    except StageError:
        if not remote:
            raise
        _dvc("pull", "--remote", remote, cwd=workdir)
    status = json.loads(_dvc("status", "--json", cwd=workdir).stdout or "{}")
    if status:
        raise StageError(
            "dvc status is not clean, so the results are not marked current: "
            + json.dumps(status)[:4000]
        )
    # What dvc_commit would record now, so that its job too is current; then restamp in order.
    write_record(workdir / RECORD, {"status": "restored", "dvc_status": status, **_lock(workdir)})
    options = [arg for c in configfiles for arg in ("--configfile", c)]
    subprocess.run(
        [sys.executable, "-m", "snakemake", "--touch", "--cores", "1", "--quiet", *options],
        cwd=workdir,
        check=True,
    )


def configured_remote(workdir: Path, configfiles: list[str]) -> str | None:
    """dvc.remote as the config files set it (the last file that sets it wins)."""
    remote = None
    for name in dict.fromkeys([DEFAULT_CONFIG, *configfiles]):
        data = yaml.safe_load((Path(workdir) / name).read_text()) or {}
        remote = (data.get("dvc") or {}).get("remote", remote)
    return remote


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmr_rd.dvcgen",
        description="Write dvc.yaml from Snakemake's DAG (default), check it, or restore results.",
    )
    parser.add_argument("targets", nargs="*", help="Snakemake targets (default: rule all)")
    parser.add_argument("--configfile", action="append", default=[], help="as for snakemake")
    parser.add_argument("--directory", default=".", help="the workflow root (default: .)")
    parser.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is stale")
    parser.add_argument(
        "--restore",
        action="store_true",
        help="dvc checkout (or pull from dvc.remote), check dvc status, snakemake --touch",
    )
    args = parser.parse_args(argv)
    root = Path(args.directory)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.restore:
        try:
            restore(root, args.configfile, configured_remote(root, args.configfile))
        except StageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    text = generate(root, args.configfile, args.targets)
    current = root / "dvc.yaml"
    if args.check:
        if not current.is_file() or current.read_text() != text:
            again = " ".join(["python -m cmr_rd.dvcgen", *(sys.argv[1:] if argv is None else argv)])
            print(f"dvc.yaml is stale: run `{again.replace(' --check', '')}`", file=sys.stderr)
            return 1
        return 0
    current.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
