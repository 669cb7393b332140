"""Lineage audit over a small fake results tree written with the real `write_manifest`:
raw data -> stage_a (a file) -> stage_b (a directory output) -> stage_c (a table)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cmr_rd import audit
from cmr_rd.lineage import describe_inputs, sha256_tree, write_manifest

RAW = "data/raw"
A_OUT = "results/a/clean.csv"
B_DIR = "results/b/model"
C_OUT = "results/c/table.csv"
MANIFESTS = [
    "results/a/manifest.json",
    "results/b/train.manifest.json",
    "results/c/manifest.json",
]


def _stage_a() -> None:
    Path(A_OUT).parent.mkdir(parents=True, exist_ok=True)
    Path(A_OUT).write_text("id,value\n" + Path(RAW, "one.txt").read_text())
    write_manifest("results/a", rule="stage_a", config={"seed": 1}, params={"k": 1},
                   inputs=describe_inputs([RAW]), outputs=[A_OUT])  # fmt: skip


def _stage_b() -> None:
    Path(B_DIR).mkdir(parents=True, exist_ok=True)
    Path(B_DIR, "weights.bin").write_bytes(Path(A_OUT).read_bytes() * 3)
    Path(B_DIR, "config.json").write_text('{"layers": 2}\n')
    Path("results/b/summary.json").write_text('{"loss": 0.5}\n')
    write_manifest("results/b/train.manifest.json", rule="stage_b", config={"seed": 1},
                   params={"lr": 0.1}, inputs=describe_inputs([A_OUT]),
                   outputs=["results/b/summary.json"],
                   extra={"final_sha256": describe_inputs([B_DIR])[B_DIR]})  # fmt: skip


def _stage_c() -> None:
    Path(C_OUT).parent.mkdir(parents=True, exist_ok=True)
    Path(C_OUT).write_text("model,acc\nb,0.9\n")
    write_manifest("results/c", rule="stage_c", config={"seed": 1}, params={"split": "test"},
                   inputs=describe_inputs([B_DIR]), outputs=[C_OUT])  # fmt: skip


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # manifests record paths relative to the working directory
    Path(RAW, "scans").mkdir(parents=True)
    Path(RAW, "one.txt").write_text("1,42\n")
    Path(RAW, "scans/s1.dcm").write_bytes(b"\x00DICM" * 10)
    _stage_a()
    _stage_b()
    _stage_c()
    return tmp_path


def _chain(node: dict, path: str) -> dict:
    return next(child for child in node["inputs"] if child["path"] == path)


def test_tree_reaches_raw_root_with_its_hash(tree):
    lineage = audit.lineage_tree(C_OUT, tree)
    assert lineage["rule"] == "stage_c" and lineage["status"] == "ok"
    assert lineage["all_problems"] == []
    raw = _chain(_chain(_chain(lineage, B_DIR), A_OUT), RAW)
    assert raw["rule"] is None and raw["status"] == "root"
    assert raw["sha256"] == sha256_tree(tree / RAW)[0]
    assert lineage["roots"] == [
        {"path": RAW, "kind": "dir", "files": 2, "sha256": sha256_tree(tree / RAW)[0]}
    ]


def test_json_output_has_the_chain_c_b_a_raw(tree, capsys):
    assert audit.main([C_OUT, "--json", "--root", str(tree)]) == 0
    node = json.loads(capsys.readouterr().out)
    seen = []
    for path in (B_DIR, A_OUT, RAW):
        seen.append(node["rule"])
        node = _chain(node, path)
    seen.append(node["rule"])
    assert seen == ["stage_c", "stage_b", "stage_a", None]
    assert node["path"] == RAW


def test_text_tree_shows_provenance_and_back_references(tree, capsys):
    assert audit.main([C_OUT, "--root", str(tree)]) == 0
    text = capsys.readouterr().out
    first = text.splitlines()[0]
    assert first.startswith(C_OUT) and "rule stage_c" in first
    for needle in ("rule stage_b", "rule stage_a", "slurm local", "config ", "env python "):
        assert needle in text
    assert "results/c/manifest.packages.txt" in text and "(see above)" not in text
    assert f"{RAW}  dir, 2 files  {sha256_tree(tree / RAW)[0]}" in text


def test_shared_ancestor_is_expanded_once(tree, capsys):
    Path("results/d").mkdir()
    Path("results/d/report.md").write_text("# report\n")
    write_manifest("results/d", rule="stage_d", config={}, params={},
                   inputs=describe_inputs([A_OUT, C_OUT]), outputs=["results/d/report.md"])  # fmt: skip
    assert audit.main(["results/d/report.md", "--root", str(tree)]) == 0
    text = capsys.readouterr().out
    # stage_a's file is read by stage_d and (through stage_c, stage_b) again: one expansion.
    assert text.count("(see above)") == 1 and text.count("rule stage_a") == 2
    assert text.count(f"<- {RAW}") == 1
    lineage = audit.lineage_tree("results/d/report.md", tree)
    again = _chain(_chain(_chain(lineage, C_OUT), B_DIR), A_OUT)
    assert again["see_above"] is True and again["inputs"] == []


def test_modified_intermediate_is_flagged(tree, capsys):
    Path(A_OUT).write_text("id,value\n1,43\n")
    Path(B_DIR, "extra.bin").write_bytes(b"x")
    lineage = audit.lineage_tree(C_OUT, tree)
    model = _chain(lineage, B_DIR)
    assert model["status"] == "MODIFIED"
    assert _chain(model, A_OUT)["status"] == "MODIFIED"
    assert audit.main([C_OUT, "--root", str(tree)]) == 1
    assert f"MODIFIED: {A_OUT}" in capsys.readouterr().out
    # The artifact itself: audited directly, its own drift is reported on the top node.
    assert audit.lineage_tree(A_OUT, tree)["status"] == "MODIFIED"


def test_input_whose_producer_reran_is_stale(tree, capsys):
    Path(RAW, "one.txt").write_text("1,99\n")
    _stage_a()  # stage_a reran on new raw data; stage_b and stage_c did not
    lineage = audit.lineage_tree(C_OUT, tree)
    model = _chain(lineage, B_DIR)
    assert model["status"] == "ok"  # the model itself is as stage_b published it
    a_under_b = _chain(model, A_OUT)
    assert a_under_b["status"] == "stale" and a_under_b["sha256"] == a_under_b["recorded_sha256"]
    assert a_under_b["consumed_sha256"] != a_under_b["recorded_sha256"]
    assert audit.main([C_OUT, "--root", str(tree)]) == 1
    assert "stale: input changed since stage_b read it: results/a/clean.csv" in (
        capsys.readouterr().out
    )


def test_unknown_or_absent_path_exits_2_with_one_line(tree, capsys):
    Path("results/c/notes.txt").write_text("by hand\n")
    for path in ("results/c/notes.txt", "results/c/absent.csv"):
        assert audit.main([path, "--root", str(tree)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err
    assert audit.find_producer("results/c/notes.txt", tree) is None
    assert audit.find_producer(RAW, tree) is None


def test_directory_outputs_and_files_inside_them(tree):
    assert audit.find_producer(B_DIR, tree)[0] == "results/b/train.manifest.json"
    manifest, data = audit.find_producer(f"{B_DIR}/weights.bin", tree)
    assert manifest == "results/b/train.manifest.json" and data["rule"] == "stage_b"
    inside = audit.lineage_tree(tree / B_DIR / "config.json", tree)  # absolute paths work too
    assert inside["within"] == B_DIR and inside["status"] == "ok"
    assert inside["inputs"][0]["path"] == A_OUT


def test_older_manifests_without_recorded_folder_paths(tree):
    """Manifests from before folder digests carried their path: the folder output is found
    beside its manifest, and an input stored under a role name is matched by digest."""
    for name in ("results/b/train.manifest.json", "results/c/manifest.json"):
        data = json.loads(Path(name).read_text())
        data.get("final_sha256", {}).pop("path", None)
        if B_DIR in data["inputs"]:
            data["inputs"]["parent_checkpoint"] = data["inputs"].pop(B_DIR)
            data["inputs"]["parent_checkpoint"].pop("path")
        Path(name).write_text(json.dumps(data))
    lineage = audit.lineage_tree(C_OUT, tree)
    model = _chain(lineage, B_DIR)
    assert model["input"] == "parent_checkpoint" and model["rule"] == "stage_b"
    assert lineage["all_problems"] == []


def test_package_list_beside_every_manifest(tree):
    for name in MANIFESTS:
        env = json.loads(Path(name).read_text())["environment"]
        listed = Path(env["packages_file"])
        assert listed == Path(name.removesuffix(".json") + ".packages.txt") and listed.is_file()
        content = listed.read_bytes()
        assert env["packages_sha256"] == hashlib.sha256(content).hexdigest()
        assert b"pytest==" in content and content.endswith(b"\n")
        assert content.decode().splitlines() == sorted(content.decode().splitlines())
    before = {name: Path(name).read_bytes() for name in MANIFESTS}
    lists = {
        name: Path(name.removesuffix(".json") + ".packages.txt").read_bytes() for name in MANIFESTS
    }
    _stage_a()
    _stage_b()
    _stage_c()
    assert {name: Path(name).read_bytes() for name in MANIFESTS} == before
    assert {
        name: Path(name.removesuffix(".json") + ".packages.txt").read_bytes() for name in MANIFESTS
    } == lists


def test_a_corrupted_checkpoint_is_named_before_use(tmp_path, monkeypatch):
    from cmr_rd.checkpoints import CheckpointError, verify_checkpoint
    from cmr_rd.lineage import checkpoint_digest

    monkeypatch.chdir(tmp_path)
    final = Path("results/model/sft/final")
    final.mkdir(parents=True)
    (final / "config.json").write_text('{"a": 1}\n')
    (final / "model.safetensors").write_bytes(b"\0" * 64)
    write_manifest(
        "results/model/sft/manifest.json",
        rule="sft",
        config={},
        params={},
        inputs={},
        extra={"final_sha256": checkpoint_digest(final)},
    )
    assert verify_checkpoint(final) == "results/model/sft/manifest.json"
    assert verify_checkpoint("results/elsewhere") is None  # nobody recorded it: a hub model
    (final / "model.safetensors").write_bytes(b"\1" + b"\0" * 63)
    (final / "stray.bin").write_bytes(b"x")
    with pytest.raises(CheckpointError) as caught:
        verify_checkpoint(final)
    message = str(caught.value)
    assert "changed: results/model/sft/final/model.safetensors" in message
    assert "unexpected: results/model/sft/final/stray.bin" in message
    assert "rule sft" in message and "\n" not in message


def test_require_intact_hashes_each_checkpoint_once_and_returns_its_input_record(
    tmp_path, monkeypatch
):
    """The check and the job's manifest share one hashing pass over the checkpoint."""
    import logging

    from cmr_rd import lineage
    from cmr_rd.checkpoints import require_intact
    from cmr_rd.lineage import checkpoint_digest, describe_inputs

    monkeypatch.chdir(tmp_path)
    recorded, outside = Path("results/model/sft/final"), Path("models/zero_shot")
    for folder in (recorded, outside):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text('{"a": 1}\n')
        (folder / "model.safetensors").write_bytes(b"\0" * 64)
    write_manifest("results/model/sft/manifest.json", rule="sft", config={}, params={},
                   inputs={}, extra={"final_sha256": checkpoint_digest(recorded)})  # fmt: skip
    hashed = []
    real = lineage.sha256_file
    monkeypatch.setattr(lineage, "sha256_file", lambda p: hashed.append(str(p)) or real(p))
    records = require_intact(logging.getLogger("test"), str(recorded), str(outside))
    assert sorted(hashed) == sorted(str(f) for d in (recorded, outside) for f in d.iterdir())
    monkeypatch.setattr(lineage, "sha256_file", real)
    assert records == describe_inputs([str(recorded), str(outside)])


def test_a_modified_checkpoint_output_is_named_file_by_file(tmp_path, monkeypatch):
    """A folder output of up to FILE_LIST_LIMIT files (a checkpoint) is recorded file by file,
    so the audit, like the check before a job, names the file that changed."""
    monkeypatch.chdir(tmp_path)
    final = Path("results/model/sft/final")
    final.mkdir(parents=True)
    (final / "config.json").write_text('{"a": 1}\n')
    (final / "model.safetensors").write_bytes(b"\0" * 64)
    write_manifest("results/model/sft/manifest.json", rule="sft", config={}, params={},
                   inputs={}, outputs=[final])  # fmt: skip
    record = json.loads(Path("results/model/sft/manifest.json").read_text())["output_dirs"]
    assert set(record[final.as_posix()]["file_sha256"]) == {"config.json", "model.safetensors"}
    (final / "model.safetensors").write_bytes(b"\1" * 64)
    lineage = audit.lineage_tree(final, tmp_path)
    assert lineage["status"] == "MODIFIED"
    assert "(changed: results/model/sft/final/model.safetensors)" in lineage["all_problems"][0]
