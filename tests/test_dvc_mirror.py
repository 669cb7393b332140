"""dvc.yaml mirrors the Snakemake rule graph: the same stages and the same edges."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml


def _snakemake_edges(repo) -> tuple[set[str], set[tuple[str, str]]]:
    dot = subprocess.run(
        [sys.executable, "-m", "snakemake", "--rulegraph", "--cores", "1"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, flags=re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, flags=re.M)}
    rules = set(names.values()) - {"all"}
    return rules, {(a, b) for a, b in edges if b != "all"}


def _dvc_edges(repo) -> tuple[set[str], set[tuple[str, str]]]:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    outs = {
        name: [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
        for name, stage in stages.items()
    }
    edges = set()
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            for producer, paths in outs.items():
                if any(dep == p or dep.startswith(p + "/") for p in paths):
                    edges.add((producer, name))
    return set(stages), edges


def test_dvc_stages_and_edges_match_the_rule_graph(repo):
    assert _dvc_edges(repo) == _snakemake_edges(repo)


def test_every_dvc_output_persists(repo):
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for out in stage["outs"]:
            ((path, options),) = out.items()
            assert options.get("persist") is True, f"{name}: {path} is not persist: true"
