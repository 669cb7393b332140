"""dvc.yaml mirrors the Snakemake DAG: generated for the default config, the same stages and
edges as the rule graph, every output persistent. Fast: nothing runs.

Before a run, the rule graph stops at the QC checkpoint (the cold-start shards are known only
once it has run), so the exact comparison after a run is in test_dvc.py. dvc.yaml describes the
shards by their folder, so it is the same before and after a run: test_dvc.py also checks that
a run's dvc_commit leaves the dvc.yaml committed before it unchanged.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from cmr_rd.devtools import copy_workflow
from cmr_rd.dvcgen import AFTER_CHECKPOINT, NOT_STAGES, generate


def _substitute(text: str, item) -> str:
    """DVC's ${item.key} and ${item.key[i]} interpolation, the forms dvcgen writes."""

    def value(match: re.Match) -> str:
        found = item[match.group(1)]
        return str(found if match.group(2) is None else found[int(match.group(2))])

    return re.sub(r"\$\{item\.(\w+)(?:\[(\d+)\])?\}", value, text)


def expanded_stages(root) -> dict[str, dict]:
    """Stages with foreach expanded, merged per base name (one entry per rule)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out: dict[str, dict] = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        merged = {"deps": [], "outs": []}
        text = yaml.safe_dump(stage["do"])
        for item in stage["foreach"].values():
            one = yaml.safe_load(_substitute(text, item))
            merged["deps"] += one.get("deps", [])
            merged["outs"] += one.get("outs", [])
        out[name] = merged
    return out


def yaml_graph(root) -> tuple[set[str], set[tuple[str, str]]]:
    """The rule-level graph dvc.yaml describes, read from the file itself (no DVC needed)."""
    stages = expanded_stages(root)
    outs = {name: [next(iter(o)) for o in stage["outs"]] for name, stage in stages.items()}
    edges = set()
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            for producer, paths in outs.items():
                if any(dep == p or dep.startswith(p + "/") for p in paths):
                    edges.add((producer, name))
    return set(stages), edges  # a phase feeding the next is a self-edge, as in the rulegraph


def dvc_dag(root) -> tuple[set[str], set[tuple[str, str]]]:
    """`dvc dag` itself, foreach items (stage@item) folded onto their stage."""
    dot = subprocess.run(
        [sys.executable, "-m", "dvc", "dag", "--dot"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    base = lambda name: name.split("@")[0]  # noqa: E731
    nodes = {base(n) for n in re.findall(r'^"([^"]+)";', dot, flags=re.M)}
    edges = re.findall(r'^"([^"]+)" -> "([^"]+)";', dot, flags=re.M)
    return nodes, {(base(a), base(b)) for a, b in edges}


def snakemake_graph(workdir, *args: str) -> tuple[set[str], set[tuple[str, str]]]:
    dot = subprocess.run(
        [sys.executable, "-m", "snakemake", "--rulegraph", "--cores", "1", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, flags=re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M)}
    return set(names.values()) - NOT_STAGES, {(a, b) for a, b in edges if not {a, b} & NOT_STAGES}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, repo):
    """The workflow without results: the DAG depends on the code and config only."""
    return copy_workflow(tmp_path_factory.mktemp("wf"), repo)


def test_dvc_yaml_is_generated_for_the_default_config(repo, scratch):
    assert (repo / "dvc.yaml").read_text() == generate(scratch), (
        "dvc.yaml is stale: run `python -m cmr_rd.dvcgen`"
    )


def test_every_dvc_output_persists(repo):
    for name, stage in expanded_stages(repo).items():
        for out in stage["outs"]:
            ((path, options),) = out.items()
            assert options.get("persist") is True, f"{name}: {path} is not persist: true"


def test_dvc_stage_names_are_snakemake_rules(repo):
    rules = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules", "--cores", "1"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # Rules the default config does not schedule: no stage until they are configured.
    # evaluate.api_models is empty by default; predict.study is null by default
    unscheduled = {"evaluate_api", "predict"}
    assert set(expanded_stages(repo)) == set(rules) - NOT_STAGES - unscheduled


def test_dvc_dag_is_the_rule_graph_up_to_the_checkpoint(repo, scratch):
    """Before the QC checkpoint has run, Snakemake links it straight to the cold-start dataset;
    dvc.yaml has the shard stage between them: one stage whose out is the shards' folder, as many
    shards as QC accepts classes, and that folder is the dataset's dep."""
    nodes, edges = dvc_dag(repo)
    assert (nodes, edges) == yaml_graph(repo)
    assert AFTER_CHECKPOINT["coldstart_dataset"][0] == "coldstart_shard"
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert stages["coldstart_shard"]["outs"] == [{"results/datasets/coldstart": {"persist": True}}]
    assert "results/datasets/coldstart" in stages["coldstart_dataset"]["deps"]
    assert {("rewrite_qc", "coldstart_shard"), ("coldstart_shard", "coldstart_dataset")} <= edges
    nodes = nodes - {"coldstart_shard"}
    edges = {e for e in edges if "coldstart_shard" not in e} | {("rewrite_qc", "coldstart_dataset")}
    assert (nodes, edges) == snakemake_graph(scratch)
