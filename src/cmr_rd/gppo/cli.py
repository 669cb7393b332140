"""Command line of one GPPO phase's training (the part that runs under accelerate).

    python -m cmr_rd.gppo.cli train --phase T --model START --ref SFT --data PHASE.jsonl \
        --out DIR --config SETTINGS.json

SETTINGS.json holds {"train": GPPOConfig keys, "rewards": RewardConfig keys} and, optionally,
"probe": {"data": PROBE.jsonl, "limit", "batch_size", "max_new_tokens"}: the trained checkpoint's
greedy answers on the probe split, written as DIR/probe.json. Exit codes match
the stage-1 CLI: 0 done, 2 bad input (one line, no traceback), 143 preempted after a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from cmr_rd.model.cli import EXIT_BAD_INPUT, EXIT_PREEMPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cmr_rd.gppo.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="GRPO on one phase dataset")
    tr.add_argument("--phase", type=int, required=True)
    tr.add_argument("--model", required=True, help="the phase's starting checkpoint")
    tr.add_argument("--ref", required=True, help="KL reference checkpoint (the SFT model)")
    tr.add_argument("--data", required=True, help="the ordered phase dataset (JSONL)")
    tr.add_argument("--out", required=True)
    tr.add_argument("--config", required=True, help='JSON {"train": {...}, "rewards": {...}}')
    return parser


def probe_final(out: Path, probe: dict) -> None:
    """The trained checkpoint's greedy answers on the probe split, as `out/probe.json`: decoded
    by the process that trained it (one process, the main one), from the saved final/, so they
    are what a separate decoding job would get."""
    from accelerate import PartialState

    from cmr_rd.model.generate import check_checkpoint

    if not PartialState().is_main_process:
        return
    report = check_checkpoint(
        out / "final", Path(probe["data"]), limit=probe.get("limit"),
        batch_size=probe["batch_size"], max_new_tokens=probe["max_new_tokens"],
    )  # fmt: skip
    report.pop("seconds")  # wall time would make a deterministic rerun differ
    (out / "probe.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from cmr_rd.gppo.rewards import RewardConfig
    from cmr_rd.gppo.settings import GPPOConfig, check_phase_inputs
    from cmr_rd.model.runtime import Preempted, TrainInputError, missing_backbone

    try:
        try:
            settings = json.loads(Path(args.config).read_text(encoding="utf-8"))
            cfg = GPPOConfig.from_mapping(settings.get("train", {}))
            rewards = RewardConfig.from_mapping(settings.get("rewards", {}))
        except (OSError, ValueError) as exc:
            if isinstance(exc, TrainInputError):
                raise
            raise TrainInputError(f"GPPO settings {args.config}: {exc}") from exc
        # Checked before torch, TRL and transformers load (seconds); train_phase checks again.
        if missing := missing_backbone(args.model):
            raise TrainInputError(missing)
        check_phase_inputs(Path(args.ref), Path(args.data), cfg, args.phase)
        from cmr_rd.gppo.train import train_phase

        summary = train_phase(
            Path(args.model), Path(args.ref), Path(args.data), Path(args.out), cfg, rewards,
            args.phase,
        )  # fmt: skip
        if settings.get("probe"):
            probe_final(Path(args.out), settings["probe"])
    except TrainInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Preempted as exc:
        print(f"{exc}; rerun to resume", file=sys.stderr)
        return EXIT_PREEMPTED
    if summary.get("reward_summary") is not None:
        print(
            f"phase {args.phase}: {summary['steps']} steps, "
            f"{summary['rollouts_per_second']} rollouts/s, split {summary['time_split_seconds']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
