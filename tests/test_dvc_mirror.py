"""dvc.yaml mirrors the Snakemake rule graph: the same stages and the same edges.

The rule graph is read after a real run (the workflow test's tiny run), because the cold-start
shards exist only once the QC checkpoint has run.
"""

from __future__ import annotations

import re
import subprocess
import sys

import yaml


def _substitute(text: str, item) -> str:
    """DVC's ${item} / ${item.key} interpolation, for the foreach forms dvc.yaml uses."""
    if isinstance(item, dict):
        return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)
    return text.replace("${item}", str(item))


def expanded_stages(repo) -> dict[str, dict]:
    """Stages with foreach expanded, keyed by their base name (one entry per base)."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    out: dict[str, dict] = {}
    for name, stage in stages.items():
        if "foreach" in stage:
            text = yaml.safe_dump(stage["do"])
            merged = {"deps": [], "outs": []}
            items = stage["foreach"]
            for item in items.values() if isinstance(items, dict) else items:
                one = yaml.safe_load(_substitute(text, item))
                merged["deps"] += one.get("deps", [])
                merged["outs"] += one.get("outs", [])
            out[name] = merged
        else:
            out[name] = stage
    return out


def dvc_graph(repo) -> tuple[set[str], set[tuple[str, str]]]:
    stages = expanded_stages(repo)
    outs = {
        name: [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
        for name, stage in stages.items()
    }
    edges = set()
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            for producer, paths in outs.items():
                if any(
                    dep == p or dep.startswith(p + "/") or p.startswith(dep + "/") for p in paths
                ):
                    edges.add((producer, name))
    return set(stages), edges  # a phase feeding the next is a self-edge, as in the rulegraph


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
    return set(names.values()) - {"all"}, {(a, b) for a, b in edges if b != "all"}


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
    assert set(expanded_stages(repo)) == set(rules) - {"all"}
