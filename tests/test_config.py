"""The config schema: defaults validate, and mistakes are named by their dotted key."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import yaml

from cmr_rd.config import config_errors, load_validated


def _default(repo):
    return yaml.safe_load((repo / "config/config.yaml").read_text())


def test_default_config_is_valid(repo):
    assert config_errors(_default(repo), repo / "config/schema.yaml") == []


def test_unknown_key_is_named_with_its_path(repo):
    cfg = _default(repo)
    cfg["ingest"]["slicez"] = {"mode": "all"}
    problems = config_errors(cfg, repo / "config/schema.yaml")
    assert len(problems) == 1
    assert "ingest.slicez" in problems[0] and "unknown" in problems[0]


def test_wrong_type_is_named_with_its_path(repo):
    cfg = _default(repo)
    cfg["split"]["test_per_class"] = "thirty"
    problems = config_errors(cfg, repo / "config/schema.yaml")
    assert problems == ["config key 'split.test_per_class': 'thirty' is not of type 'integer'"]


def test_defaults_fill_missing_keys(repo, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 7\n")
    cfg = load_validated(path, repo / "config/schema.yaml")
    assert cfg["seed"] == 7
    assert cfg["ingest"]["slices"]["count"] == 3
    assert cfg["data"]["synthetic"]["min_patients_per_class"] == 48


def test_every_schema_key_is_documented(repo):
    schema = yaml.safe_load((repo / "config/schema.yaml").read_text())
    readme = (repo / "config/README.md").read_text()

    def walk(node, prefix=""):
        for key, sub in node.get("properties", {}).items():
            name = f"{prefix}{key}"
            yield name, sub
            yield from walk(sub, name + ".")

    for name, sub in walk(schema):
        assert "description" in sub, f"schema key {name} has no description"
        assert f"`{name}`" in readme, f"config/README.md does not document {name}"


def test_snakemake_refuses_a_typo_naming_the_key(repo, tmp_path):
    bad = copy.deepcopy(_default(repo))
    bad["ingest"]["prefered"] = "psir"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(path)],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "unknown config key 'ingest.prefered'" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_config_readme_table_is_generated_from_the_schema(repo):
    from cmr_rd.devtools import config_key_table

    assert config_key_table(repo / "config/schema.yaml") in (repo / "config/README.md").read_text()


def test_devtools_check_writes_nothing_and_says_when_the_table_is_stale(
    repo, tmp_path, monkeypatch, capsys
):
    from cmr_rd import devtools

    (tmp_path / "config").mkdir()
    for name in ("README.md", "schema.yaml"):
        shutil.copy2(repo / "config" / name, tmp_path / "config" / name)
    monkeypatch.setattr(devtools, "REPO", tmp_path)
    readme, schema = tmp_path / "config/README.md", tmp_path / "config/schema.yaml"
    assert devtools.main(["--check"]) == 0

    schema.write_text(schema.read_text().replace("Where the inputs are.", "Where inputs live."))
    before = readme.read_text()
    assert devtools.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert readme.read_text() == before  # --check writes nothing

    assert devtools.main([]) == 0  # the default regenerates the table
    assert "Where inputs live." in readme.read_text()
    assert devtools.main(["--check"]) == 0
