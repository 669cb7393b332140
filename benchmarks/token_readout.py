"""What the image tokens carry against what the model answers, per class, on the probe split.

For a finished run (`make demo`, or --workdir): a logistic regression reads the diagnosis from the
image tokens the language model reads (tower, pooling and projector; fitted on the RL prompts'
slices, the train split, scored on the probe split; the test split is never touched), from the
mean token and from all tokens, for the foundation model and each cold start. Beside it, each
cold start's greedy answers on the same probe slices (max 192 new tokens, as `sft_check`), as a
confusion count: what a class is answered as. A class the tokens carry and the answers miss is
a language-side gap, not a vision one.

Writes results/benchmarks/token_readout.{json,md}; without a finished run it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from cmr_rd.classes import CLASSES
from cmr_rd.devtools import REPO
from cmr_rd.format import parse_completion
from cmr_rd.foundation.vision import image_tokens, load_pixels
from cmr_rd.jsonl import read_jsonl
from cmr_rd.model.backbone import load_backbone
from cmr_rd.model.generate import greedy_completions
from cmr_rd.model.runtime import load_records

INVALID = "invalid"  # a completion outside the format: no answer is read from it


def _tokens(model, processor, work: Path, records: list[dict]) -> torch.Tensor:
    paths = [str(work / r["images"][0]) for r in records]  # dataset paths are workdir-relative
    pixels = load_pixels(processor.image_processor, paths)
    with torch.no_grad():
        return torch.cat([image_tokens(model, pixels[s : s + 256])
                          for s in range(0, len(pixels), 256)])  # fmt: skip


def readout(model, processor, work: Path, train: list[dict], probe: list[dict]) -> dict:
    """Per-class probe recall of a class-balanced logistic regression on the image tokens."""
    y_train = np.array([r["label"] for r in train])
    y_probe = np.array([r["label"] for r in probe])
    t_train = _tokens(model, processor, work, train)
    t_probe = _tokens(model, processor, work, probe)
    result = {}
    for name, x_train, x_probe in (
        ("mean_token", t_train.mean(1), t_probe.mean(1)),
        ("all_tokens", t_train.flatten(1), t_probe.flatten(1)),
    ):
        x_train, x_probe = x_train.numpy(), x_probe.numpy()
        mean, std = x_train.mean(0), x_train.std(0) + 1e-6
        clf = LogisticRegression(max_iter=3000, class_weight="balanced")
        clf.fit((x_train - mean) / std, y_train)
        predicted = clf.predict((x_probe - mean) / std)
        result[name] = {c: round(float((predicted[y_probe == c] == c).mean()), 3)
                        for c in CLASSES if (y_probe == c).any()}  # fmt: skip
    return result


def answers(model, processor, probe: list[dict]) -> dict[str, dict[str, int]]:
    """For each true class, how often the greedy answer names each class (or breaks the format)."""
    present = {r["label"] for r in probe}
    counts: dict[str, Counter] = {c: Counter() for c in CLASSES if c in present}
    completions = greedy_completions(model, processor, probe, 32, 192)
    for record, text in zip(probe, completions, strict=True):
        parsed = parse_completion(text)
        counts[record["label"]][(parsed.label or "none") if parsed.valid else INVALID] += 1
    return {c: dict(sorted(n.items())) for c, n in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO, help="a finished run (make demo)")
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks")
    args = parser.parse_args()
    work = args.workdir.resolve()
    datasets, models = work / "results/datasets", work / "results/model"
    needed = [datasets / "rl_prompts.jsonl", datasets / "probe.jsonl", models / "base"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        print(f"token_readout: no finished run in {work} ({missing[0]} is missing): run make demo"
              " first, or pass --workdir")  # fmt: skip
        sys.exit(0)
    os.chdir(work)  # the datasets' image paths are relative to the run's folder
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = read_jsonl(datasets / "rl_prompts.jsonl")
    probe = load_records(datasets / "probe.jsonl", need_assistant=False)
    checkpoints = [("foundation", models / "base")] + [
        (f"cold start {p.parent.name}", p) for p in sorted(models.glob("sft/seed*/final"))
    ]
    rows = []
    for name, path in checkpoints:
        model, processor = load_backbone(str(path))
        model.eval()
        row = {"checkpoint": name, "path": str(path.relative_to(work)),
               "readout": readout(model, processor, work, train, probe)}  # fmt: skip
        if name != "foundation":  # the foundation never saw the diagnostic format
            row["answers"] = answers(model, processor, probe)
        rows.append(row)
        print(name, json.dumps(row["readout"]["all_tokens"]), flush=True)
    report = {"workdir": str(work), "train_slices": len(train), "probe_slices": len(probe),
              "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "token_readout.json").write_text(json.dumps(report, indent=2) + "\n")
    classes = list(rows[0]["readout"]["all_tokens"])
    lines = ["Probe split: linear read-out of the class from the image tokens (mean token / all "
             "tokens), and the share of greedy answers that name it.", "",
             "| checkpoint | " + " | ".join(classes) + " |",
             "|---|" + "---:|" * len(classes)]  # fmt: skip
    for row in rows:
        cells = []
        for c in classes:
            cell = f"{row['readout']['mean_token'][c]:.2f} / {row['readout']['all_tokens'][c]:.2f}"
            if "answers" in row:
                got = row["answers"][c]
                cell += f", answered {got.get(c, 0) / sum(got.values()):.2f}"
            cells.append(cell)
        lines.append(f"| {row['checkpoint']} | " + " | ".join(cells) + " |")
    lines += ["", "What each class is answered as (greedy, per cold start):", ""]
    for row in rows[1:]:
        lines.append(f"- {row['checkpoint']}: " + "; ".join(
            f"{c} -> " + ", ".join(f"{k} {v}" for k, v in row["answers"][c].items())
            for c in classes))  # fmt: skip
    (args.out / "token_readout.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
