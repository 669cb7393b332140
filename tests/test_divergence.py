"""cmr_rd.divergence: two runs compared job by job through their manifests, naming the first
job that computed other bytes from the same inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cmr_rd import divergence
from cmr_rd.lineage import write_manifest


def _job(rule: str, inputs: list[str], outputs: list[str], params: dict | None = None) -> None:
    from cmr_rd.lineage import describe_inputs

    write_manifest(
        Path(outputs[0]).parent / f"{rule}.manifest.json",
        rule=rule, config={"seed": 1}, params=params or {}, inputs=describe_inputs(inputs),
        outputs=outputs,
    )  # fmt: skip


def _run(root: Path, *, cohort="c", weights="w", summary="1 s", report="r", lr=0.1) -> Path:
    """A three-job run: a cohort (data), a model folder trained on it (with a wall-clock
    summary, as the training stages write), a report read from the model."""
    root.mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data/raw.txt").write_text("raw")
    (root / "results/cohort").mkdir(parents=True)
    (root / "results/cohort/cohort.txt").write_text(cohort)
    (root / "results/model/final").mkdir(parents=True)
    (root / "results/model/final/weights.bin").write_text(weights)
    (root / "results/model/final/config.json").write_text("{}")
    (root / "results/model/train_summary.json").write_text(summary)
    (root / "results/report").mkdir(parents=True)
    (root / "results/report/table.csv").write_text(report)
    return root


def _manifests(root: Path, monkeypatch, lr: float = 0.1) -> None:
    monkeypatch.chdir(root)
    _job("cohort", ["data/raw.txt"], ["results/cohort/cohort.txt"])
    _job("train", ["results/cohort/cohort.txt"],
         ["results/model/final", "results/model/train_summary.json"], {"lr": lr})  # fmt: skip
    _job("report", ["results/model/final"], ["results/report/table.csv"])


def _compare(tmp_path, monkeypatch, reference: dict, lr: float = 0.1, **changes) -> dict:
    other = _run(tmp_path / "other", **changes)
    _manifests(other, monkeypatch, lr)
    return divergence.compare(divergence.export(other), reference)


@pytest.fixture
def reference(tmp_path, monkeypatch) -> dict:
    root = _run(tmp_path / "reference")
    _manifests(root, monkeypatch)
    return divergence.export(root)


def _rules(entries: list[dict]) -> list[str]:
    return [e["rule"] for e in entries]


def test_the_same_bytes_are_the_same_whatever_the_wall_clock(tmp_path, monkeypatch, reference):
    result = _compare(tmp_path, monkeypatch, reference, summary="9 s")
    assert len(result["same"]) == 3
    assert not result["first"] and not result["downstream"] and not result["params"]


def test_a_job_that_computes_other_bytes_from_the_same_inputs_is_the_first(
    tmp_path, monkeypatch, reference
):
    result = _compare(tmp_path, monkeypatch, reference, weights="w2", report="r2")
    assert _rules(result["first"]) == ["train"]
    (first,) = result["first"]
    assert first["outputs"] == {"results/model/final": ["weights.bin"]}
    assert first["inputs"] == []
    # The report read the other weights: it inherits the difference.
    assert _rules(result["downstream"]) == ["report"]
    assert result["downstream"][0]["inputs"] == ["results/model/final"]
    assert _rules_of(result, "same") == ["cohort"]


def _rules_of(result: dict, kind: str) -> list[str]:
    return [Path(key).name.split(".")[0] for key in result[kind]]


def test_the_earliest_difference_is_named_and_the_rest_inherit_it(tmp_path, monkeypatch, reference):
    result = _compare(tmp_path, monkeypatch, reference, cohort="c2", weights="w2", report="r2")
    assert _rules(result["first"]) == ["cohort"]
    assert _rules(result["downstream"]) == ["train", "report"]  # in the DAG's order


def test_other_params_are_not_blamed_on_the_machine(tmp_path, monkeypatch, reference):
    result = _compare(tmp_path, monkeypatch, reference, lr=0.2, weights="w2")
    assert _rules(result["params"]) == ["train"] and not result["first"]


def test_cli_export_compare_and_a_bad_reference(tmp_path, monkeypatch, capsys, reference):
    root = tmp_path / "reference"
    out = tmp_path / "digests.json"
    assert divergence.main(["--root", str(root), "export", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3 + 2  # one line per job
    assert divergence.main(["--root", str(root), "compare", str(out)]) == 0
    assert "3 jobs in both runs: 3 the same" in capsys.readouterr().out

    other = _run(tmp_path / "other", weights="w2")
    _manifests(other, monkeypatch)
    assert divergence.main(["--root", str(other), "compare", str(out)]) == 1
    text = capsys.readouterr().out
    assert "First differences" in text and "train" in text and "weights.bin" in text

    bad = tmp_path / "bad.json"
    bad.write_text('{"jobs": {}}')
    assert divergence.main(["--root", str(root), "compare", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert divergence.main(["--root", str(root), "compare", str(tmp_path / "none.json")]) == 2
    assert "none.json: no such file" in capsys.readouterr().err
    assert divergence.main(["--root", str(tmp_path / "empty"), "export", "--out", str(out)]) == 2


@pytest.mark.slow
def test_the_tiny_run_agrees_with_its_own_export(tiny_run, tmp_path):
    exported = divergence.export(tiny_run)
    assert len(exported["jobs"]) > 20
    (tmp_path / "digests.json").write_text(divergence.dumps(exported))
    reference = divergence.load_reference(tmp_path / "digests.json")
    assert reference == json.loads(json.dumps(exported))
    result = divergence.compare(exported, reference)
    assert len(result["same"]) == len(exported["jobs"])
    # A copy whose model weights changed after the fact: the job that wrote them is named.
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run / "results", copy / "results")
    shutil.copytree(tiny_run / "data", copy / "data", ignore=shutil.ignore_patterns("dicom"))
    manifest, data, folder, record = next(
        (path, data, folder, record)
        for path in sorted((copy / "results/model").rglob("*manifest.json"))
        for data in [json.loads(path.read_text())]
        for folder, record in (data.get("output_dirs") or {}).items()
        if "model.safetensors" in record.get("file_sha256", {})
    )
    record["file_sha256"]["model.safetensors"] = "0" * 64
    record["sha256"] = "1" * 64
    manifest.write_text(json.dumps(data))
    result = divergence.compare(divergence.export(copy), reference)
    assert _rules(result["first"]) == [data["rule"]] and not result["downstream"]
    assert result["first"][0]["outputs"] == {folder: ["model.safetensors"]}


def test_the_published_exports_are_readable(repo):
    published = sorted((repo / "docs/digests").glob("*.json"))
    assert published, "docs/digests holds no export"
    for path in published:
        jobs = divergence.load_reference(path)["jobs"]
        assert len(jobs) > 100, f"{path.name}: {len(jobs)} jobs"
        assert all(job["outputs"] for job in jobs.values()), path.name
