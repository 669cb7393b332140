"""python -m cmr_rd.predict STUDY_DIR --model PATH --out DIR [--configfile FILE ...]

Settings come from the pipeline's config, as a Snakemake run reads it: config/config.yaml of
this checkout with each --configfile merged over it (ingest, deid, data.source, evaluate). Exit
status 0 with the diagnosis on stdout; 2 with one line on stderr for a study, model or setting
that cannot be used (no LGE series, not a DICOM folder, not a supported VLM, no pseudonym key).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from cmr_rd.predict.study import PredictInputError
from cmr_rd.stage import known_error

# Torch's OpenMP threads sleep when idle instead of spinning (set before torch is imported, which
# _predict does): with two other busy processes on the 2-core machine, one study took 4.2 s with
# spinning threads and 0.46 s with sleeping ones; on an idle machine 0.36 s and 0.40 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = REPO / "config/config.yaml"
SCHEMA = REPO / "config/schema.yaml"
EXIT_BAD_INPUT = 2


def merge(base: dict, override: dict) -> dict:
    """`override` over `base`, nested mappings merged key by key (Snakemake's --configfile)."""
    out = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge(out[key], value) if nested else value
    return out


def load_settings(configfiles: list[str]) -> dict:
    """The embedded default config with the given files over it, checked against the schema."""
    from cmr_rd.config import config_errors

    if not DEFAULT_CONFIG.is_file():
        raise PredictInputError(f"no pipeline config at {DEFAULT_CONFIG}")
    config = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")) or {}
    for name in configfiles:
        path = Path(name)
        if not path.is_file():
            raise PredictInputError(f"--configfile {name}: no such file")
        try:
            config = merge(config, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
        except yaml.YAMLError as exc:
            raise PredictInputError(
                f"--configfile {name}: not YAML ({type(exc).__name__})"
            ) from None
    problems = config_errors(config, SCHEMA)
    if problems:
        raise PredictInputError("; ".join(problems))
    return config


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cmr_rd.predict",
        description="Diagnose one LGE cardiac MRI study (DICOM folder or NIfTI volume) with a "
        "trained model: DIR/prediction.json, DIR/summary.html, DIR/predict.log. Research "
        "software, not a medical device.",
    )
    parser.add_argument(
        "study",
        help="the study: a folder of DICOM files (every series of the exam) or a .nii/.nii.gz "
        "LGE volume (or a folder holding one)",
    )
    parser.add_argument(
        "--model", required=True, help="a checkpoint folder the pipeline wrote, or an HF VLM id"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--configfile",
        action="append",
        default=[],
        help="pipeline config merged over config/config.yaml (repeatable)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--verbose", action="store_true", help="progress on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("cmr_rd").addHandler(console)
    try:
        prediction = _predict(args)
    except Exception as exc:
        if not known_error(exc):
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        logging.getLogger("cmr_rd").removeHandler(console)
    dx = prediction["diagnosis"]
    p = dx["probabilities"].get(dx["answer"]) or float("nan")
    print(
        f"diagnosis: {dx['answer']} ({dx['name']}), probability {p:.3f}, pooled over "
        f"{dx['slices']} slice(s) of patient {prediction['patient']}"
    )
    out = Path(args.out)
    print(f"wrote {out / 'prediction.json'}, {out / 'summary.html'}, {out / 'predict.log'}")
    print(prediction["disclaimer"])
    if prediction["settings"]["deid_key_origin"] == "demo":
        print(
            "warning: the pseudonym was made with the public demo key (data.source synthetic); "
            "real data needs data.source local and a key ($CMR_RD_DEID_KEY or deid.key_file) "
            "in a --configfile",
            file=sys.stderr,
        )
    return 0


def _predict(args: argparse.Namespace) -> dict:
    config = load_settings(args.configfile)
    import torch
    from transformers.utils import logging as hf_logging

    from cmr_rd.predict.run import predict_study

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    return predict_study(
        args.study, args.model, args.out,
        ingest=config["ingest"], deid=config["deid"],
        synthetic=config["data"]["source"] == "synthetic", evaluate=config["evaluate"],
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
