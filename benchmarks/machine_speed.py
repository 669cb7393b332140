"""A machine-speed reference that no change to this project's code can move.

`benchmarks/demo.py` also reports the demo's own SFT samples/s, but that is our code: the
collator cache made it 1.08x faster on the same machine, so a demo time x SFT speed compares
machines only between runs of the same commit. This one is a fixed piece of torch arithmetic of
the kind the demo's jobs do (fp32 matmuls through MKL, elementwise kernels, AdamW), a 3-layer
MLP with the tiny backbone's widths, trained on one thread under the pins (`import cmr_rd`) in a
fresh process; it depends only on the machine and the locked torch.

`python benchmarks/machine_speed.py` prints the steps/s of each round and the median, and writes
them to results/benchmarks/machine_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

STEPS, WARMUP, BATCH, WIDTH = 300, 20, 64, 256


def child(steps: int) -> dict:
    import time

    import cmr_rd  # noqa: F401 (the numerics pins, before torch loads)

    # isort: split
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(WIDTH, 4 * WIDTH), torch.nn.GELU(), torch.nn.Linear(4 * WIDTH, WIDTH),
        torch.nn.LayerNorm(WIDTH), torch.nn.Linear(WIDTH, WIDTH),
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # Sixteen batches in turn: the loss stays far from zero (no subnormal floats to slow it).
    inputs, targets = torch.randn(16, BATCH, WIDTH), torch.randn(16, BATCH, WIDTH)

    def step(i: int) -> float:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs[i % 16]), targets[i % 16])
        loss.backward()
        optimizer.step()
        return float(loss)

    for i in range(WARMUP):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        loss = step(i)
    seconds = time.perf_counter() - start
    return {"steps_per_s": round(steps / seconds, 1), "final_loss": loss}


def measure(rounds: int = 3, steps: int = STEPS) -> dict:
    """Steps/s of `rounds` fresh processes, and their median."""
    runs = []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--steps", str(steps)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        "mlp_steps_per_s": statistics.median(r["steps_per_s"] for r in runs),
        "rounds": [r["steps_per_s"] for r in runs],
        "steps": steps, "batch": BATCH, "width": WIDTH, "threads": 1,
        # The same in every round and on every x86-64 machine under the pins: the same arithmetic.
        "final_losses": [r["final_loss"] for r in runs],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "results/benchmarks"
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.steps)))
        return
    text = json.dumps(measure(args.rounds, args.steps), indent=1) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "machine_speed.json").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
