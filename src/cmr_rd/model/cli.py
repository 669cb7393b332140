"""Command line of the model stages: `train` (stage 1a/1b) and `check` (greedy format check).

    python -m cmr_rd.model.cli train --stage sft --model PATH --data JSONL --out DIR [--config F]
    python -m cmr_rd.model.cli check --model PATH --data JSONL --out JSON [--limit N]

It also runs under `accelerate launch ... -m cmr_rd.model.cli train ...`. Exit codes are what
Snakemake and SLURM act on: 0 done, 2 bad input (one line on stderr, no traceback; rerunning
will not help), 143 preempted by SIGTERM after a checkpoint (rerunning resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a shell reports for a job ended by SIGTERM


def _read_config(path: str | None) -> dict[str, Any]:
    from cmr_rd.model.runtime import TrainInputError

    if path is None:
        return {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TrainInputError(f"cannot read training config {path}: {exc.strerror}") from exc
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except (ValueError, ImportError) as exc:
        raise TrainInputError(f"training config {path} is not valid: {exc}") from exc
    if not isinstance(values, dict):
        raise TrainInputError(f"training config {path} must be a mapping")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cmr_rd.model.cli", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train the foundation stage, 1a (align) or 1b (sft)")
    tr.add_argument("--stage", choices=["foundation", "align", "sft"], required=True)
    tr.add_argument("--model", required=True, help="backbone folder or cached hub id")
    tr.add_argument("--data", required=True, help="conversational VLM JSONL")
    tr.add_argument("--out", required=True, help="stage output folder")
    tr.add_argument("--config", help="JSON/YAML mapping of TrainConfig keys")
    ck = sub.add_parser("check", help="greedy decoding: valid-format rate and accuracy")
    ck.add_argument("--model", required=True)
    ck.add_argument("--data", required=True, help="prompts JSONL (user turn + image + label)")
    ck.add_argument("--out", required=True, help="JSON report")
    ck.add_argument("--limit", type=int)
    ck.add_argument("--batch-size", type=int, default=16)
    ck.add_argument("--max-new-tokens", type=int, default=256)
    return parser


def _train(args: argparse.Namespace) -> int:
    from cmr_rd.model.runtime import TrainInputError, load_records, missing_backbone
    from cmr_rd.model.settings import TrainConfig

    # Everything that can be checked without torch is checked before it loads (seconds here):
    # the config, the model's path, and every record and image of the dataset.
    values = _read_config(args.config)
    values["stage"] = args.stage
    cfg = TrainConfig.from_mapping(values)
    if missing := missing_backbone(args.model):
        raise TrainInputError(missing)
    load_records(Path(args.data))
    from cmr_rd.model.train import train

    summary = train(Path(args.model), Path(args.data), Path(args.out), cfg)
    if summary.get("world_size", 1) == 1 or summary.get("final_loss") is not None:
        print(
            f"{cfg.stage}: {summary['steps']} steps (resumed from {summary['resumed_from_step']}), "
            f"loss {summary['final_loss']}, {summary['samples_per_second']} samples/s"
        )
    return 0


def _check(args: argparse.Namespace) -> int:
    from cmr_rd.model.runtime import TrainInputError, load_records, missing_backbone

    if missing := missing_backbone(args.model):
        raise TrainInputError(missing)
    load_records(Path(args.data), need_assistant=False)
    from cmr_rd.model.generate import check_checkpoint

    report = check_checkpoint(
        Path(args.model),
        Path(args.data),
        limit=args.limit,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"check: n={report['n']} valid_format={report['valid_format_rate']:.3f} "
        f"accuracy={report['accuracy']:.3f} ({report['seconds']} s)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; map the two expected failures to their exit codes and one line."""
    args = _parser().parse_args(argv)
    # Progress bars are noise in a Snakemake/SLURM log and would make an error more than one line
    # (transformers and huggingface_hub read this when they are imported).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from cmr_rd.model.runtime import Preempted, TrainInputError

    try:
        return _train(args) if args.command == "train" else _check(args)
    except TrainInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Preempted as exc:
        print(f"{exc}; rerun to resume", file=sys.stderr)
        return EXIT_PREEMPTED


if __name__ == "__main__":
    sys.exit(main())
