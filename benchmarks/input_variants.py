"""What each input variant lets the tiny model see, per CPU second, on the probe split.

For each variant (field of view, model input size, patch size) the pipeline ingests the default
cohort and renders the foundation pool with it, then the foundation's vision phase trains a tiny
tower on the pool's findings (never the diagnosis). The measure is a linear read-out of the
diagnosis from the image tokens the language model reads (mean over tokens, logistic
regression fitted on the train split, scored as macro accuracy on the probe split; the test
split is never touched), against the CPU seconds of the vision phase.

Writes results/benchmarks/input_variants.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from cmr_rd.devtools import REPO, copy_workflow, snakemake
from cmr_rd.foundation.vision import VisionConfig, image_tokens, load_pixels, pretrain_tower
from cmr_rd.jsonl import read_jsonl
from cmr_rd.model.backbone import TinyConfig, build_tiny, load_backbone

VARIANTS = [  # (name, crop_fov_mm, image_size, patch_size, mm_tokens)
    ("whole FOV, 64 px", None, 64, 8, 16),
    ("crop 160 mm, 64 px", 160, 64, 8, 16),
    ("crop 120 mm, 64 px (default)", 120, 64, 8, 16),
    ("crop 120 mm, 96 px, patch 12", 120, 96, 12, 16),
]


def _features(model, processor, work: Path, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    paths = [str(work / r["images"][0]) for r in records]  # dataset paths are workdir-relative
    pixels = load_pixels(processor.image_processor, paths)
    with torch.no_grad():
        feats = torch.cat([image_tokens(model, pixels[s : s + 256]).mean(1)
                           for s in range(0, len(pixels), 256)])  # fmt: skip
    return feats.numpy(), np.array([r["label"] for r in records])


def measure(work: Path, variant: tuple, steps: int) -> dict:
    name, crop, size, patch, tokens = variant
    (work / "config/variant.yaml").write_text(
        f"ingest:\n  crop_fov_mm: {'null' if crop is None else crop}\n"
    )  # merged over config.yaml, key by key
    result = snakemake(work, "results/datasets/probe.jsonl", "results/foundation/findings.jsonl",
                       "--cores", "2", "--configfile", "config/variant.yaml")  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    findings = read_jsonl(work / "results/foundation/findings.jsonl")
    corpus = [r["messages"][0]["content"][1]["text"]
              for r in read_jsonl(work / "results/foundation/questions.jsonl")]  # fmt: skip
    shape = TinyConfig(image_size=size, patch_size=patch, mm_tokens_per_image=tokens)
    init = build_tiny(work / f"init_{size}_{patch}", corpus, shape)
    model, processor = load_backbone(str(init))
    started = time.process_time()
    summary = pretrain_tower(model, processor, findings, str(work / "results/foundation"),
                             VisionConfig(steps=steps, threads=1))  # fmt: skip
    cpu = time.process_time() - started
    datasets = work / "results/datasets"
    x_train, y_train = _features(model, processor, work, read_jsonl(datasets / "rl_prompts.jsonl"))
    x_probe, y_probe = _features(model, processor, work, read_jsonl(datasets / "probe.jsonl"))
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000, class_weight="balanced")
    clf.fit((x_train - mean) / std, y_train)
    predicted = clf.predict((x_probe - mean) / std)
    per_class = {c: float((predicted[y_probe == c] == c).mean()) for c in sorted(set(y_probe))}
    macro = float(np.mean(list(per_class.values())))
    return {
        "variant": name,
        "vision_cpu_seconds": round(cpu, 1),
        "probe_macro_accuracy": round(macro, 3),
        "probe_per_class": {k: round(v, 3) for k, v in per_class.items()},
        "accuracy_per_cpu_minute": round(60 * macro / cpu, 4),
        "pool_findings_accuracy": summary["heldout_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "results/benchmarks")
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = copy_workflow(Path(tmp))
        rows = [measure(work, variant, args.steps) for variant in VARIANTS]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "input_variants.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| input | vision phase CPU s | probe macro acc (linear read-out) | per CPU minute |",
             "|---|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {r['variant']} | {r['vision_cpu_seconds']} | {r['probe_macro_accuracy']:.3f} | "
              f"{r['accuracy_per_cpu_minute']:.3f} |" for r in rows]  # fmt: skip
    (args.out / "input_variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
