"""Pinned CPU numerics (cmr_rd.numerics): the same weights whatever kernels the machine would
choose, and different ones without the pins, so the pins are what makes them the same; in both
pinned modes, and MKL's branch chosen by the CPU's vendor."""

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
    env = {k: v for k, v in os.environ.items() if k not in numerics.PIN_KEYS}
    env.update(extra, **{numerics.MODE_ENV: mode}, HF_HUB_OFFLINE="1")
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not numerics.pinnable(numerics.cpu()), reason="nothing is pinned on this CPU (no AVX2 or FMA)"
)
def test_pins_give_the_same_weights_under_other_dispatch_and_native_does_not(tmp_path):
    pinned = probe("pinned", {}, tmp_path)
    pinned_capped = probe("pinned", CAPPED, tmp_path)
    portable = probe("portable", {}, tmp_path)
    portable_capped = probe("portable", CAPPED, tmp_path)
    native = probe("native", {}, tmp_path)
    native_capped = probe("native", CAPPED, tmp_path)

    assert pinned["weights"] == pinned_capped["weights"]
    assert pinned["numpy"] == pinned_capped["numpy"]
    assert portable["weights"] == portable_capped["weights"]
    # Without the pins the capped kernels give other weights: the comparisons above can fail.
    assert native["weights"] != native_capped["weights"]
    # And the pins change this machine's own result (it would choose other kernels unpinned)
    # unless it is an AVX2 machine whose native choice is the pinned one.
    assert pinned["weights"] != native_capped["weights"]
    # The two pinned modes differ in MKL's branch on an Intel CPU only.
    intel = numerics.cpu()["vendor"] == "GenuineIntel"
    assert (pinned["weights"] != portable["weights"]) == intel
    assert pinned["numpy"] == portable["numpy"]  # NumPy does not use MKL

    for result, mode in ((pinned, "pinned"), (pinned_capped, "pinned"),
                         (portable, "portable"), (portable_capped, "portable")):  # fmt: skip
        record = result["record"]
        assert record["mode"] == mode
        in_force = numerics.pins(mode)
        assert record["pins"] == {key: in_force.get(key) for key in numerics.PIN_KEYS}
        assert record["torch"]["cpu_capability"] == "AVX2"
        assert record["torch"]["threads"] == 1
        assert record["torch"]["blas"].startswith("mkl")
    assert pinned["record"]["pins"]["MKL_CBWR"] == ("AVX2" if intel else "COMPATIBLE")
    assert native_capped["record"]["torch"]["cpu_capability"] == "DEFAULT"
    assert native_capped["record"]["mode"] == "native"


INTEL = {"machine": "x86_64", "model": "Xeon", "vendor": "GenuineIntel", "avx2": True, "fma": True}
AMD = {"machine": "x86_64", "model": "EPYC", "vendor": "AuthenticAMD", "avx2": True, "fma": True}
ARM = {"machine": "aarch64", "model": None, "vendor": None, "avx2": False, "fma": False}


def test_mkl_takes_its_avx2_branch_on_intel_cpus_only():
    intel = numerics.pins("pinned", INTEL)
    assert intel["MKL_CBWR"] == "AVX2" and intel["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    for mode, machine in (("pinned", AMD), ("portable", INTEL), ("portable", AMD)):
        chosen = numerics.pins(mode, machine)
        assert chosen == {**numerics.COMMON_PINS, "MKL_CBWR": "COMPATIBLE"}, (mode, machine)
    assert numerics.pins("native", INTEL) == {}


def test_nothing_is_pinned_on_a_cpu_that_cannot_hold_the_pins(monkeypatch):
    """ATen takes ATEN_CPU_CAPABILITY=avx2 without asking the CPU (and OpenBLAS its Haswell
    kernels): on an x86 without AVX2 or FMA (old parts, a VM's generic CPU model) every job would
    die of an illegal instruction, and on ARM the x86 names mean nothing. There the pins are
    none, inherited ones (a SLURM job from a pinned submit host) included, and the record says
    so."""
    for machine in ({**INTEL, "avx2": False}, {**AMD, "fma": False}, ARM):
        assert not numerics.pinnable(machine)
        assert numerics.pins("pinned", machine) == numerics.pins("portable", machine) == {}
    monkeypatch.setattr(numerics, "cpu", lambda: {**INTEL, "avx2": False})
    inherited = {**numerics.pins("pinned", INTEL), "PATH": "/usr/bin"}
    assert numerics.pin_environment(inherited) == {}
    assert inherited == {"PATH": "/usr/bin"}
    entry = {"mode": "pinned", "pins": dict.fromkeys(numerics.PIN_KEYS), "cpu": ARM, "torch": None}
    assert "nothing pinned on this CPU" in numerics.describe(entry)


def test_pin_environment_overrides_the_shell_and_native_leaves_it(monkeypatch):
    env = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "MKL_ENABLE_INSTRUCTIONS": "AVX512"}
    assert numerics.pin_environment(env) == numerics.pins("pinned")
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["MKL_CBWR"] in ("AVX2", "COMPATIBLE")
    # A cap the pins do not set is removed: under COMPATIBLE, as the runs we publish had it.
    portable = {numerics.MODE_ENV: "portable", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}
    assert numerics.pin_environment(portable)["MKL_CBWR"] == "COMPATIBLE"
    assert "MKL_ENABLE_INSTRUCTIONS" not in portable
    # A SLURM job on another vendor's node pins for its own CPU, whatever it inherited.
    monkeypatch.setattr(numerics, "cpu", lambda: AMD)
    inherited = dict(numerics.pins("pinned", INTEL))
    assert numerics.pin_environment(inherited)["MKL_CBWR"] == "COMPATIBLE"
    assert inherited == {**numerics.COMMON_PINS, "MKL_CBWR": "COMPATIBLE"}

    native = {numerics.MODE_ENV: "native", "ATEN_CPU_CAPABILITY": "avx512"}
    assert numerics.pin_environment(native) == {}
    assert native == {numerics.MODE_ENV: "native", "ATEN_CPU_CAPABILITY": "avx512"}


def test_a_bad_mode_names_the_variable():
    with pytest.raises(numerics.NumericsError, match="CMR_RD_NUMERICS='fast'"):
        numerics.pin_environment({numerics.MODE_ENV: "fast"})


def test_this_process_is_pinned():
    """conftest imports cmr_rd first, so the tests and every job they start run pinned."""
    in_force = numerics.pins("pinned")
    for key in numerics.PIN_KEYS:
        assert os.environ.get(key) == in_force.get(key), key


def test_every_manifest_records_the_numerics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results/stage"
    path = write_manifest(out, rule="stage", config={}, params={}, inputs={})
    entry = json.loads(path.read_text())["environment"]["numerics"]
    assert entry["mode"] == "pinned"
    assert entry["pins"] == {key: numerics.pins("pinned").get(key) for key in numerics.PIN_KEYS}
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
    assert (
        done.stderr.strip()
        == "error: CMR_RD_NUMERICS='fast': expected one of pinned, portable, native"
    )


def test_the_benchmarks_modes_reach_their_children():
    """benchmarks/numerics.py measures each mode in a child process: the child's own record shows
    the mode asked for and its pins (the child's `import cmr_rd` sets them), whatever this
    process had in force."""
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
    code = "import cmr_rd, json, torch; from cmr_rd import numerics; print(json.dumps(numerics.record()))"
    for mode in bench.MODES:
        env = bench.child_env(mode)
        assert not set(env) & set(numerics.PIN_KEYS), mode
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                text=True)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        record = json.loads(result.stdout.splitlines()[-1])
        assert record["mode"] == mode
        in_force = numerics.pins(mode)
        assert record["pins"] == {key: in_force.get(key) for key in numerics.PIN_KEYS}
        if numerics.pinnable(numerics.cpu()) and mode != "native":
            assert record["torch"]["cpu_capability"] == "AVX2"
