"""Pinned CPU numerics (cmr_rd.numerics): the same weights whatever kernels the machine would
choose, and different ones without the pins, so the pins are what makes them the same."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmr_rd import numerics
from cmr_rd.lineage import write_manifest

# Eight AdamW steps of a tiny Gemma3 (vision tower with its convolution, attention, norms) and
# NumPy's transcendental loops (cmr_rd.fingerprint's pieces), in a fresh process that imports
# cmr_rd first, as every entry point does. Prints their digests and the numerics record.
PROBE = r"""
import json
import cmr_rd
import numpy as np
import torch
from cmr_rd import numerics
from cmr_rd.fingerprint import numpy_loops, tiny_gemma3

torch.set_num_threads(1)
print(json.dumps({"weights": tiny_gemma3(torch), "numpy": numpy_loops(np),
                  "record": numerics.record()}))
"""

# Another machine's choice, as far as one machine can play it: every library capped below what
# it would pick here (ATen's scalar kernels, oneDNN at SSE4.1, MKL at SSE4.2 and its own
# automatic branch, NumPy without AVX2).
CAPPED = {
    "ATEN_CPU_CAPABILITY": "default",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    "MKL_CBWR": "AUTO",
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Prescott",
}


def probe(mode: str, extra: dict[str, str], tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINS}
    env.update(extra, **{numerics.MODE_ENV: mode}, HF_HUB_OFFLINE="1")
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not numerics.cpu()["avx2"], reason="the pins select AVX2 kernels; this CPU has no AVX2"
)
def test_pins_give_the_same_weights_under_other_dispatch_and_native_does_not(tmp_path):
    pinned = probe("pinned", {}, tmp_path)
    pinned_capped = probe("pinned", CAPPED, tmp_path)
    native = probe("native", {}, tmp_path)
    native_capped = probe("native", CAPPED, tmp_path)

    assert pinned["weights"] == pinned_capped["weights"]
    assert pinned["numpy"] == pinned_capped["numpy"]
    # Without the pins the capped kernels give other weights: the comparison above can fail.
    assert native["weights"] != native_capped["weights"]
    # And the pins change this machine's own result (it would choose other kernels unpinned)
    # unless it is an AVX2 machine whose native choice is the pinned one.
    assert pinned["weights"] != native_capped["weights"]

    for result in (pinned, pinned_capped):
        record = result["record"]
        assert record["mode"] == "pinned"
        assert record["pins"] == numerics.PINS
        assert record["torch"]["cpu_capability"] == "AVX2"
        assert record["torch"]["threads"] == 1
        assert record["torch"]["blas"].startswith("mkl")
    assert native_capped["record"]["torch"]["cpu_capability"] == "DEFAULT"
    assert native_capped["record"]["mode"] == "native"


def test_pin_environment_overrides_the_shell_and_native_leaves_it():
    env = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO"}
    assert numerics.pin_environment(env) == numerics.PINS
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_CBWR"] == "COMPATIBLE"

    native = {numerics.MODE_ENV: "native", "ATEN_CPU_CAPABILITY": "avx512"}
    assert numerics.pin_environment(native) == {}
    assert native == {numerics.MODE_ENV: "native", "ATEN_CPU_CAPABILITY": "avx512"}


def test_a_bad_mode_names_the_variable():
    with pytest.raises(numerics.NumericsError, match="CMR_RD_NUMERICS='fast'"):
        numerics.pin_environment({numerics.MODE_ENV: "fast"})


def test_this_process_is_pinned():
    """conftest imports cmr_rd first, so the tests and every job they start run pinned."""
    for key, value in numerics.PINS.items():
        assert os.environ.get(key) == value, key


def test_every_manifest_records_the_numerics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results/stage"
    path = write_manifest(out, rule="stage", config={}, params={}, inputs={})
    entry = json.loads(path.read_text())["environment"]["numerics"]
    assert entry["mode"] == "pinned"
    assert entry["pins"] == numerics.PINS
    assert entry["cpu"]["machine"] == numerics.cpu()["machine"]
    # torch is loaded in this process (other tests), so its kernel level is recorded too; a
    # light job that never imports torch records None instead of paying for the import.
    if "torch" in sys.modules:
        assert entry["torch"]["cpu_capability"] == "AVX2"
    assert "numerics pinned" in numerics.describe(entry)


def test_a_bad_mode_stops_a_cli_with_one_line():
    env = dict(os.environ, **{numerics.MODE_ENV: "fast"})
    done = subprocess.run([sys.executable, "-m", "cmr_rd.audit", "results/x"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip() == "error: CMR_RD_NUMERICS='fast': expected one of pinned, native"


def test_the_benchmarks_third_mode_pins_everything_but_mkl():
    """benchmarks/numerics.py attributes the pins' cost by running with every pin but MKL_CBWR:
    in native mode, so `import cmr_rd` leaves the environment alone, and the child's own record
    shows ATen at AVX2 and MKL unpinned."""
    benchmarks = str(Path(__file__).parents[1] / "benchmarks")
    path = list(sys.path)
    try:  # the script puts its folder on sys.path for train_step; leave no trace of it here
        spec = importlib.util.spec_from_file_location(
            "numerics_benchmark", f"{benchmarks}/numerics.py"
        )
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
    finally:
        sys.path[:] = path
        sys.modules.pop("train_step", None)
    WITHOUT_MKL, child_env = bench.WITHOUT_MKL, bench.child_env
    code = "import cmr_rd, json, torch; from cmr_rd import numerics; print(json.dumps(numerics.record()))"
    result = subprocess.run(
        [sys.executable, "-c", code], env=child_env(WITHOUT_MKL), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(result.stdout.splitlines()[-1])
    assert record["mode"] == "native"
    assert record["pins"] == {**numerics.PINS, "MKL_CBWR": None}
    if numerics.cpu()["avx2"]:
        assert record["torch"]["cpu_capability"] == "AVX2"
    assert child_env("pinned")[numerics.MODE_ENV] == "pinned"
    assert "MKL_CBWR" not in child_env("pinned")  # the child's own import sets every pin
