"""The rule-script harness (cmr_rd.stage.RuleRun) on a snakemake-shaped object built from
Snakemake's own containers, the run-name parser, and the checkpoint check as jobs meet it."""

from __future__ import annotations

import ast
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, Wildcards

from cmr_rd.gppo.runs import RunName, RunNameError
from cmr_rd.lineage import checkpoint_digest, packages_path, sha256_file, write_manifest
from cmr_rd.stage import KNOWN_ERRORS, RuleRun, StageError

SRC = Path(__file__).resolve().parents[1] / "src/cmr_rd"
CHECKPOINT = "results/model/sft/final"
# A rule's lineage outputs: the manifest and the package list beside it.
Y = {"lineage": "results/y/manifest.json", "packages": "results/y/manifest.packages.txt"}
PARAMS = {"train": {"lr": 0.1, "betas": (0.9, 0.99)}, "seed": 7, "label": "MI"}


@pytest.fixture(autouse=True)
def _root_logging():
    """RuleRun points the root logger at the job's log, as in a job: put it back after."""
    handlers = logging.root.handlers[:]
    yield
    for handler in logging.root.handlers:
        if handler not in handlers:
            handler.close()
    logging.root.handlers[:] = handlers


def _snakemake(inputs: dict, outputs: dict, params=PARAMS, wildcards=None, rule="stage_x"):
    """What Snakemake hands a script: its containers, a rule name and the config."""
    return SimpleNamespace(
        rule=rule,
        config={"seed": 7, "train": {"lr": 0.1}},
        input=InputFiles(fromdict=inputs),
        output=OutputFiles(fromdict=outputs),
        params=Params(fromdict=params),
        wildcards=Wildcards(fromdict=wildcards or {}),
        log=Log(fromdict={"main": "logs/stage_x.log"}),
        threads=1,
    )


@pytest.fixture
def upstream(tmp_path, monkeypatch) -> Path:
    """A checkpoint recorded by its producer's manifest, and two data files."""
    monkeypatch.chdir(tmp_path)
    final = Path(CHECKPOINT)
    final.mkdir(parents=True)
    (final / "config.json").write_text('{"a": 1}\n')
    (final / "model.safetensors").write_bytes(b"\0" * 64)
    write_manifest("results/model/sft/manifest.json", rule="sft", config={}, params={},
                   inputs={}, extra={"final_sha256": checkpoint_digest(final)})  # fmt: skip
    Path("data").mkdir()
    for name in ("a.jsonl", "b.jsonl", "probe.jsonl"):
        Path("data", name).write_text(f"{name}\n")
    return tmp_path


def _job(**body) -> dict:
    """A job with every kind of declared input and output; returns its manifest."""
    sm = _snakemake(
        inputs={"model": CHECKPOINT, "shards": ["data/a.jsonl", "data/b.jsonl"],
                "probe": "data/probe.jsonl"},
        outputs={"final": "results/x/model", "table": "results/x/table.csv",
                 "lineage": "results/x/manifest.json",
                 "packages": "results/x/manifest.packages.txt"},
        wildcards={"run": "sft-ts-iou", "seed": "1"},
    )  # fmt: skip
    with RuleRun(sm) as run:
        Path("results/x/model").mkdir(parents=True)
        Path("results/x/model/weights.bin").write_bytes(b"w" * 8)
        Path("results/x/table.csv").write_text("a,b\n1,2\n")
        run.record(**body)
    return json.loads(Path("results/x/manifest.json").read_text())


def test_manifest_lists_every_declared_input_output_and_param(upstream):
    manifest = _job(rows=3)
    inputs = manifest["inputs"]
    assert set(inputs) == {CHECKPOINT, "data/a.jsonl", "data/b.jsonl", "data/probe.jsonl"}
    assert inputs[CHECKPOINT]["sha256"] == checkpoint_digest(CHECKPOINT)["sha256"]
    assert inputs[CHECKPOINT]["path"] == CHECKPOINT and inputs[CHECKPOINT]["kind"] == "dir"
    assert inputs["data/a.jsonl"] == {"sha256": sha256_file("data/a.jsonl"), "kind": "file"}
    assert manifest["input_names"] == {
        "model": CHECKPOINT, "shards": ["data/a.jsonl", "data/b.jsonl"],
        "probe": "data/probe.jsonl",
    }  # fmt: skip
    assert manifest["outputs"] == {"results/x/table.csv": sha256_file("results/x/table.csv")}
    folder = manifest["output_dirs"]["results/x/model"]
    assert folder["path"] == "results/x/model" and folder["file_sha256"] == {
        "weights.bin": sha256_file("results/x/model/weights.bin")
    }
    assert manifest["params"] == {"train": {"lr": 0.1, "betas": [0.9, 0.99]}, "seed": 7,
                                  "label": "MI"}  # fmt: skip
    assert manifest["wildcards"] == {"run": "sft-ts-iou", "seed": "1"}
    assert manifest["rule"] == "stage_x" and manifest["rows"] == 3
    listed = Path(manifest["environment"]["packages_file"])
    assert listed == packages_path("results/x/manifest.json") and listed.is_file()
    assert "checkpoint results/model/sft/final matches" in Path("logs/stage_x.log").read_text()


def test_a_rerun_writes_the_same_bytes(upstream):
    _job()
    first = Path("results/x/manifest.json").read_bytes()
    for path in ("results/x/model/weights.bin", "results/x/model", "results/x/manifest.json"):
        Path(path).unlink() if Path(path).is_file() else Path(path).rmdir()
    _job()
    assert Path("results/x/manifest.json").read_bytes() == first


def test_known_error_exits_2_with_one_line_and_no_manifest(upstream):
    sm = _snakemake({"probe": "data/probe.jsonl"}, Y)
    with pytest.raises(SystemExit) as stopped, RuleRun(sm):
        raise StageError("datasets.pmcvqa_dir:\n   no such folder")
    assert stopped.value.code == 2
    log = Path("logs/stage_x.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert errors and errors[0].endswith("datasets.pmcvqa_dir: no such folder")
    assert len(errors) == 1 and "Traceback" not in log
    assert not Path("results/y/manifest.json").exists()


def test_a_library_error_is_known_by_its_class(upstream):
    from cmr_rd.rewrite.qc import ReviewError

    sm = _snakemake({}, Y)
    with pytest.raises(SystemExit) as stopped, RuleRun(sm):
        raise ReviewError("row 3: decision 'maybe' is not accept or reject")
    assert stopped.value.code == 2


def test_an_unknown_error_still_raises(upstream):
    sm = _snakemake({}, Y)
    with pytest.raises(ZeroDivisionError), RuleRun(sm):
        1 / 0  # noqa: B018
    assert not Path("results/y/manifest.json").exists()


def test_an_edited_checkpoint_stops_the_job_before_the_body(upstream):
    (Path(CHECKPOINT) / "model.safetensors").write_bytes(b"\1" + b"\0" * 63)
    sm = _snakemake({"model": CHECKPOINT}, Y)
    ran = []
    with pytest.raises(SystemExit) as stopped, RuleRun(sm):
        ran.append(True)
    assert stopped.value.code == 2 and ran == []
    log = Path("logs/stage_x.log").read_text()
    assert "changed: results/model/sft/final/model.safetensors" in log and "rule sft" in log
    assert "Traceback" not in log


def test_checkpoints_module_names_the_edited_file(upstream):
    from cmr_rd.checkpoints import CheckpointError, verify_checkpoint

    assert verify_checkpoint(CHECKPOINT) == "results/model/sft/manifest.json"
    (Path(CHECKPOINT) / "config.json").write_text('{"a": 2}\n')
    with pytest.raises(CheckpointError, match="changed: results/model/sft/final/config.json"):
        verify_checkpoint(CHECKPOINT)


def test_record_cannot_overwrite_what_the_harness_records(upstream):
    sm = _snakemake({}, Y)
    with pytest.raises(ValueError, match="params"), RuleRun(sm) as run:
        run.record(params={"hand": "picked"})


def test_the_package_list_must_be_declared_beside_the_manifest(upstream):
    ran = []
    for packages in ({}, {"packages": "results/y/pkgs.txt"}):
        sm = _snakemake({}, {"lineage": "results/y/manifest.json", **packages})
        with pytest.raises(ValueError, match="manifest.packages.txt"), RuleRun(sm):
            ran.append(True)
    assert ran == []


def test_every_known_error_is_a_library_class():
    defined = {
        node.name
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    }
    assert KNOWN_ERRORS <= defined, KNOWN_ERRORS - defined


def test_run_name_parses_and_round_trips():
    run = RunName.parse("sft-ts-iou")
    assert (run.start, run.sampling, run.reward) == ("sft", "ts", "iou")
    assert run.use_iou and run.from_cold_start and str(run) == "sft-ts-iou"
    other = RunName.parse("base-full-noiou")
    assert not other.use_iou and not other.from_cold_start
    assert RunName.parse(str(other)) == other
    with pytest.raises(AttributeError):
        run.reward = "noiou"  # frozen


@pytest.mark.parametrize("bad", ["sft-ts", "sft-ts-iou-x", "SFT-ts-iou", "sft-thompson-iou", ""])
def test_a_bad_run_name_is_one_line(bad):
    with pytest.raises(RunNameError) as caught:
        RunName.parse(bad)
    assert "\n" not in str(caught.value) and repr(bad) in str(caught.value)
    with pytest.raises(RunNameError):
        RunName("sft", "thompson", "iou")


def test_run_names_match_the_schema_and_the_quota_strategies(repo):
    from cmr_rd.gppo.quotas import STRATEGIES
    from cmr_rd.gppo.runs import SAMPLINGS

    assert SAMPLINGS == STRATEGIES
    schema = (repo / "config/schema.yaml").read_text()
    runs = yaml.safe_load(schema)["properties"]["gppo"]["properties"]["runs"]["items"]
    assert runs["pattern"] == f"^{RunName.PATTERN}$"
    # Every other key that names a run (report rows, showcase) spells the same language.
    patterns = re.findall(r'pattern: "([^"]*sft\|base[^"]*)"', schema)
    assert len(patterns) > 1 and all(RunName.PATTERN in p for p in patterns)
