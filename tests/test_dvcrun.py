"""cmr_rd.dvcrun: DVC reads a params file once while it is unchanged, and every caller gets
its own copy; files it cannot vouch for go to DVC's own reader."""

from __future__ import annotations

import os

import pytest
from dvc.dependency import param
from dvc.fs import LocalFileSystem

from cmr_rd import dvcrun


@pytest.fixture
def remembered(monkeypatch):
    monkeypatch.setattr(param, "load_path", param.load_path)  # restored after the test
    calls = []
    original = param.load_path

    def counting(path, fs, **kwargs):
        calls.append(path)
        if not isinstance(fs, LocalFileSystem):  # a revision's tree, as the test builds it
            return {"seed": 3}
        return original(path, fs, **kwargs)

    monkeypatch.setattr(param, "load_path", counting)
    assert dvcrun.remember_params_files()
    return calls


def test_a_params_file_is_parsed_once_and_each_reader_gets_a_copy(remembered, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 0.1\n  steps: [1, 2]\nseed: 3\n")
    fs = LocalFileSystem()
    first = param.read_param_file(fs, str(path), ["train"], flatten=True)
    first["train"]["steps"].append(99)  # a reader that changes its copy changes no other
    second = param.read_param_file(fs, str(path), ["train", "seed"], flatten=True)
    assert second == {"train": {"lr": 0.1, "steps": [1, 2]}, "seed": 3}
    assert remembered == [str(path)]
    # A changed file (size and modification time) is parsed again.
    path.write_text("train:\n  lr: 0.25\n  steps: [1, 2]\nseed: 3\n")
    os.utime(path, ns=(1, 1))
    assert param.read_param_file(fs, str(path), ["train.lr"], flatten=True) == {"train.lr": 0.25}
    assert remembered == [str(path), str(path)]


def test_other_file_systems_are_read_by_dvc_each_time(remembered, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 3\n")
    revision = object.__new__(LocalFileSystem.__bases__[0])  # not the workspace: a git revision
    for _ in range(2):
        assert param.load_path(str(path), revision) == {"seed": 3}
    assert remembered == [str(path), str(path)]
