"""CPU numerics pinned, so the same commit gives the same bytes on every machine with the same
kind of x86-64 CPU (measured: not across vendors; docs/numerics.md, "When two machines differ",
and `python -m cmr_rd.fingerprint` to find the library).

torch, oneDNN, MKL, NumPy and OpenBLAS each pick their kernels by the CPU they find, and kernels
of different vector widths round differently. Measured on an AMD EPYC with AVX-512
(docs/numerics.md): eight AdamW steps of the tiny Gemma3 gave different weights under each of
ATen's AVX512/AVX2/DEFAULT kernels, with oneDNN capped at AVX2, and with MKL in its COMPATIBLE
mode; NumPy's exp, log and power differ between its AVX-512 and AVX2 loops; OpenBLAS's
dot differs between its SkylakeX and Haswell kernels. So every pin below changes bytes somewhere.

Three modes (`CMR_RD_NUMERICS`):
- `pinned` (the default): ATen, oneDNN, NumPy and OpenBLAS at AVX2, and MKL in its AVX2 branch on
  an Intel CPU with AVX2 (honoured on every such CPU) and in its COMPATIBLE branch on any other
  (MKL ignores the AVX2 branch there). COMPATIBLE halved SFT's speed on an Intel Xeon, and the
  Intel and AMD machines gave other bytes under it all the same.
- `portable`: MKL in its COMPATIBLE branch on every CPU, the branch Intel documents as the same on
  Intel and AMD CPUs. For comparing two vendors' arithmetic (`cmr_rd.divergence`,
  `cmr_rd.fingerprint`) and for clusters that mix vendors; on a non-Intel CPU it is `pinned`.
- `native`: no pins, each library's own choice (fastest, reproducible on that machine only).

The pinned modes pin only on x86-64 CPUs with AVX2 and FMA (`pinnable`); elsewhere they pin
nothing and remove inherited pins, since ATen and OpenBLAS would run AVX2 code unasked.

The pins are environment variables, which each library reads once, on first use. `import cmr_rd`
sets them (this module runs from the package's `__init__`), before any of those libraries has
done any arithmetic in a normal entry point: `python -m cmr_rd.*`, every rule script, the
Snakemake process (whose environment every job inherits: local, `--sdm conda`, and SLURM, where
sbatch exports the submitting environment; each job pins again for its own CPU) and the tests. A
process that did arithmetic with torch before importing cmr_rd keeps the kernels it chose; the
manifest says so, because it records what torch reports, not what was asked for. Pins override
any value already in the environment, and a pinned mode removes the pin variables it does not
set: a pin that a stray `ATEN_CPU_CAPABILITY` or `MKL_ENABLE_INSTRUCTIONS` in a user's shell
could undo would pin nothing.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import sys

MODE_ENV = "CMR_RD_NUMERICS"
MODES = ("pinned", "portable", "native")

# The same in both pinned modes.
COMMON_PINS = {
    # ATen's vectorised kernels (elementwise, reductions, softmax, norms): the AVX2 build.
    "ATEN_CPU_CAPABILITY": "avx2",
    # oneDNN (convolutions, e.g. the vision tower's patch embedding): at most AVX2 code.
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # NumPy's own SIMD loops (exp, log, power, ...): at most the AVX2 (x86-64-v3) ones.
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    # NumPy's and SciPy's OpenBLAS: the Haswell (AVX2) kernels. (Its threads, like torch's, are
    # the job's: Snakemake sets OPENBLAS_NUM_THREADS and OMP_NUM_THREADS to them.)
    "OPENBLAS_CORETYPE": "Haswell",
}
# MKL (torch's BLAS, every matmul, and the vector math behind some of ATen's elementwise ops),
# by conditional numerical reproducibility. AVX2 is honoured on Intel CPUs only ("on non-Intel
# CPUs the AUTO branch is used instead", oneMKL developer guide; on our AMD EPYC it changed
# nothing). MKL_ENABLE_INSTRUCTIONS=AVX2 beside it, because an instruction cap in the
# environment overrides the branch (measured: SSE4_2 or AVX512 there gave other bytes).
MKL_INTEL = {"MKL_CBWR": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
MKL_PORTABLE = {"MKL_CBWR": "COMPATIBLE"}
PIN_KEYS = (*COMMON_PINS, "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")


class NumericsError(ValueError):
    """CMR_RD_NUMERICS holds something other than pinned, portable or native."""


def mode(environ=None) -> str:
    environ = os.environ if environ is None else environ
    value = environ.get(MODE_ENV, "pinned").strip().lower() or "pinned"
    if value not in MODES:
        raise NumericsError(f"{MODE_ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def pinnable(machine: dict) -> bool:
    """Whether the pins can hold on this CPU: x86-64 with AVX2 and FMA. ATen takes
    ATEN_CPU_CAPABILITY=avx2 without asking the CPU, and OpenBLAS its Haswell kernels, so on a CPU
    without them (an old x86, a VM's generic CPU model) every job would die of an illegal
    instruction; on ARM the x86 names mean nothing (and torch warns in every process)."""
    return (
        machine.get("machine") in ("x86_64", "AMD64")
        and bool(machine.get("avx2"))
        and bool(machine.get("fma"))
    )


def pins(mode_: str | None = None, machine: dict | None = None) -> dict[str, str]:
    """The pins of a mode (default: the environment's) on a CPU (default: this one's); none on a
    CPU that cannot hold them (`pinnable`), whose results are reproducible on that machine only."""
    mode_ = mode() if mode_ is None else mode_
    if mode_ == "native":
        return {}
    machine = cpu() if machine is None else machine
    if not pinnable(machine):
        return {}
    intel_avx2 = machine.get("vendor") == "GenuineIntel" and machine.get("avx2")
    return {**COMMON_PINS, **(MKL_INTEL if mode_ == "pinned" and intel_avx2 else MKL_PORTABLE)}


def pin_environment(environ=None) -> dict[str, str]:
    """Set the pins in `environ` (os.environ by default) unless the mode is native; return them."""
    environ = os.environ if environ is None else environ
    mode_ = mode(environ)
    if mode_ == "native":
        return {}
    # On a CPU that cannot hold the pins this removes them all: a SLURM job inherits the
    # submitting host's, and ATen's AVX2 on a node without AVX2 dies of an illegal instruction.
    in_force = pins(mode_)
    environ.update(in_force)
    for key in PIN_KEYS:
        if key not in in_force:
            environ.pop(key, None)
    return in_force


@functools.cache
def cpu() -> dict:
    """The CPU as Linux describes it: model, vendor, and the vector extensions the pins cap."""
    info = {"machine": platform.machine(), "model": None, "vendor": None}
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and info["model"] is None:
                    info["model"] = value.strip()
                elif key == "vendor_id" and info["vendor"] is None:
                    info["vendor"] = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    info["avx2"] = "avx2" in flags
    info["fma"] = "fma" in flags
    info["avx512f"] = "avx512f" in flags
    return info


def record() -> dict:
    """What made this process's numbers, for every manifest: the mode, the pins in force, the
    CPU, and, where torch is loaded, the kernel level it dispatches to, its BLAS and threads.

    torch is not imported here: a light job (a JSON merge) must not pay for it, and its record
    then says that torch did no arithmetic in the job."""
    entry = {
        "mode": mode(),
        "pins": {key: os.environ.get(key) for key in PIN_KEYS},
        "cpu": cpu(),
    }
    torch = sys.modules.get("torch")
    if torch is None:
        entry["torch"] = None
        return entry
    entry["torch"] = {
        "version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": _torch_blas(torch),
        "threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }
    return entry


def _torch_blas(torch) -> str | None:
    """BLAS name and MKL version from torch's build summary (e.g. 'mkl 2024.2')."""
    shown = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", shown)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", shown)
    parts = [m.group(1) for m in (blas, mkl) if m]
    return " ".join(parts) or None


def describe(entry: dict) -> str:
    """One line for logs and the audit."""
    torch = entry.get("torch")
    kernels = (
        f"torch {torch['cpu_capability']} kernels, BLAS {torch['blas']}, {torch['threads']} "
        "thread(s)"
        if torch
        else "no torch arithmetic"
    )
    machine = entry.get("cpu") or {}
    mode_ = entry.get("mode")
    if mode_ != "native" and not any((entry.get("pins") or {}).values()):
        mode_ = f"{mode_}, nothing pinned on this CPU (not x86-64 with AVX2 and FMA)"
    return f"numerics {mode_} ({kernels}; CPU {machine.get('model')})"
