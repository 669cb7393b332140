"""benchmarks/machine_speed.py: the machine reference runs, and computes the same bytes in every
fresh process (it measures the machine, so its arithmetic must not vary)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "machine_speed.py"
    spec = importlib.util.spec_from_file_location("machine_speed_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_measures_the_same_arithmetic_in_each_process():
    result = _module().measure(rounds=2, steps=30)
    assert result["mlp_steps_per_s"] > 0 and len(result["rounds"]) == 2
    first, second = result["final_losses"]
    assert first == second and 0.01 < first < 10  # far from zero: no subnormal floats
