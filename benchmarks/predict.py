"""Diagnose a new study: folder-to-result time for one study, start-up reported apart.

The study is one exam as the synthetic scanner exports it (every series: localizer, cine, TI
scout, LGE PSIR and magnitude, LGE long axis; the demo's matrix and slice count), written to a
temporary folder. Start-up is what a `python -m cmr_rd.predict` process pays once: the imports,
the model load with its lineage (the checkpoint hashed and checked against its manifest) and
the burned-in-text OCR engine's load. Folder to result is `predict_study` after that: indexing
and classifying every file, rendering and screening the LGE slices, greedy decoding, the
per-class likelihoods, pooling, prediction.json and summary.html. The first study of the process
is reported, and the median of the warm ones after it. Target: under 10 s after start-up.

Model: --model, else the demo's showcase checkpoint (results/gppo/sft-ts-iou/seed1/phase2/model,
`make demo`), else a tiny random backbone built here (it decodes to the token limit, so its
time is an upper bound for the tiny shape). Writes results/benchmarks/predict.{json,md}.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import os  # noqa: E402

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `python -m cmr_rd.predict` sets it

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from cmr_rd.classes import CLASSES  # noqa: E402
from cmr_rd.devtools import REPO  # noqa: E402
from cmr_rd.ingest.burned_in import require_ocr  # noqa: E402
from cmr_rd.predict.model import DecodeSettings, Predictor  # noqa: E402
from cmr_rd.predict.run import predict_study  # noqa: E402

IMPORTED = time.perf_counter()

DEMO_MODEL = "results/gppo/sft-ts-iou/seed1/phase2/model"
TARGET_SECONDS = 10.0


def config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def export_study(root: Path, synthetic: dict) -> Path:
    """One DICOM exam with every series, at the demo cohort's matrix and slice count."""
    from cmr_rd.synth.cohort import SynthConfig, build_patient, patient_jobs

    cfg = SynthConfig(
        scale=0.0, min_patients_per_class=1, lge_slices=synthetic["lge_slices"],
        matrix=synthetic["matrix"], cine_phases=synthetic["cine_phases"], nifti_share=0.0,
        lax_share=1.0,
    )  # fmt: skip
    build_patient(patient_jobs(cfg, seed=2024, out_dir=root)[CLASSES.index("MI")])
    (study,) = (root / "dicom").glob("*/*")
    return study


def tiny_model(root: Path) -> Path:
    from cmr_rd.format import render_target
    from cmr_rd.model.backbone import TinyConfig, build_tiny
    from cmr_rd.prompts import DIAGNOSTIC_QUERY

    corpus = [DIAGNOSTIC_QUERY] + [
        render_target(f"The pattern suggests {c}.", (10, 20, 200, 220), c) for c in CLASSES
    ]
    return build_tiny(root / "model", corpus, TinyConfig())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help=f"checkpoint folder (default: {DEMO_MODEL} if present)")
    parser.add_argument("--rounds", type=int, default=4, help="studies read in one process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    os.chdir(REPO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    cfg = config()
    settings = {"ingest": cfg["ingest"], "deid": cfg["deid"], "synthetic": True,
                "evaluate": cfg["evaluate"]}  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = export_study(tmp / "export", cfg["data"]["synthetic"])
        files = sum(1 for p in study.rglob("*") if p.is_file())
        if args.model:
            model_ref, source = args.model, "--model"
        elif Path(DEMO_MODEL).is_dir():
            model_ref, source = DEMO_MODEL, "demo showcase checkpoint"
        else:
            model_ref, source = str(tiny_model(tmp)), "tiny random backbone (no demo checkpoint)"

        started = time.perf_counter()
        predictor = Predictor(model_ref, DecodeSettings.from_config(cfg["evaluate"]))
        loaded = time.perf_counter()
        require_ocr()
        ocr = time.perf_counter()

        rounds = []
        for r in range(args.rounds):
            timings: dict[str, float] = {}
            begun = time.perf_counter()
            prediction = predict_study(
                study, model_ref, tmp / f"out{r}", predictor=predictor, timings=timings,
                **settings,
            )  # fmt: skip
            wall = time.perf_counter() - begun
            rounds.append({"wall": round(wall, 3), **{k: round(v, 3) for k, v in timings.items()}})
            print(
                f"study {r}: {wall:.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in timings.items())})"
            )

    first, warm = rounds[0], rounds[1:]
    warm_median = statistics.median(r["wall"] for r in warm) if warm else None
    result = {
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({args.threads} threads)",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cores": os.cpu_count(),
        "model": model_ref,
        "model_source": source,
        "study_files": files,
        "slices_read": len(prediction["slices"]),
        "max_new_tokens": predictor.settings.max_new_tokens,
        "startup_seconds": {
            "imports": round(IMPORTED - STARTED, 3),
            "model_load_and_lineage": round(loaded - started, 3),
            "ocr_engine": round(ocr - loaded, 3),
        },
        "first_study_seconds": first["wall"],
        "warm_median_seconds": None if warm_median is None else round(warm_median, 3),
        "rounds": rounds,
        "target_seconds": TARGET_SECONDS,
        "meets_target": first["wall"] < TARGET_SECONDS,
        "diagnosis": prediction["diagnosis"]["answer"],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predict.json").write_text(json.dumps(result, indent=2) + "\n")
    s = result["startup_seconds"]
    step_names = ("study", "decode", "score")
    lines = [
        "# Diagnose a new study: folder to result",
        "",
        f"One synthetic exam ({files} DICOM files, every series), {result['slices_read']} LGE "
        f"slices read; model: {source} ({model_ref}), max_new_tokens "
        f"{result['max_new_tokens']}; {result['device']}, OMP_WAIT_POLICY "
        f"{result['omp_wait_policy']}.",
        "",
        f"Start-up (once per process): imports {s['imports']:.2f} s, model load and lineage "
        f"{s['model_load_and_lineage']:.2f} s, OCR engine {s['ocr_engine']:.2f} s.",
        "",
        "| study | folder to result (s) | " + " | ".join(f"{k} (s)" for k in step_names) + " |",
        "|---|---|" + "---|" * len(step_names),
    ]
    for i, r in enumerate(rounds):
        name = "first" if i == 0 else f"warm {i}"
        lines.append(f"| {name} | {r['wall']:.2f} | " + " | ".join(
            f"{r[k]:.2f}" for k in step_names) + " |")  # fmt: skip
    lines += [
        "",
        f"First study after start-up: {first['wall']:.2f} s"
        + (f", warm median {warm_median:.2f} s" if warm_median is not None else "")
        + f" (target < {TARGET_SECONDS:.0f} s: {'met' if result['meets_target'] else 'NOT met'}).",
        "",
    ]
    (out / "predict.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
