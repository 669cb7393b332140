"""What predict writes: prediction.json (for programs) and summary.html (one page for a reader).

Both are functions of the study and the checkpoint alone (no wall time, no host, no source path),
so rerunning a study gives the same bytes; wall times go to the log. The page is self-contained:
every slice is embedded as a data URI, its predicted box drawn over it in SVG, so the file can be
mailed or archived on its own and opens in any browser with no network.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from cmr_rd.classes import CLASSES, FULL_NAMES
from cmr_rd.evaluate.metrics import POOL_LOGLIK
from cmr_rd.predict.study import Study
from cmr_rd.prompts import DIAGNOSTIC_QUERY, QUERY_VERSION

DISCLAIMER = (
    "Research software, not a medical device. This result comes from a research model that "
    "has not been clinically validated; it must not be used to diagnose, treat or manage any "
    "patient."
)
POOLING = (
    "Each class's patient-level score is the mean over the slices of that class's answer "
    "log-likelihood (read after the model's own reasoning on the slice); the diagnosis is the "
    "class with the highest mean and the probabilities are the softmax of the means. This is the "
    "evaluation's patient-level pooling (cmr_rd.evaluate.metrics.pool_patients)."
)


def _float(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _box(value: Any) -> list[float] | None:
    return None if value is None else [float(v) for v in value]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def prediction_record(
    study: Study,
    samples: pd.DataFrame,
    patient: pd.DataFrame,
    lineage: dict,
    settings: dict,
) -> dict:
    """prediction.json's content: per slice the chain, box, answer and class probabilities; the
    pooled patient-level diagnosis; the model's lineage; the disclaimer."""
    slices = []
    for row, sample in zip(study.rows, samples.to_dict("records"), strict=True):
        slices.append(
            {
                "id": sample["id"],
                "image": row["image"],
                "slice_rank": int(row["slice_rank"]),
                "slice_position_mm": float(row["slice_position_mm"]),
                "answer": _text(sample["predicted"]),
                "box": _box(sample["box_pred"]),
                "think": _text(sample["think"]),
                "completion": sample["completion"],
                "format_valid": bool(sample["format_valid"]),
                "format_reason": _text(sample["format_reason"]),
                "probabilities": {c: _float(sample[f"score_{c}"]) for c in CLASSES},
                "loglik": {c: _float(sample[f"loglik_{c}"]) for c in CLASSES},
            }
        )
    (pooled,) = patient.to_dict("records")
    answer = _text(pooled["predicted"])
    return {
        "disclaimer": DISCLAIMER,
        "patient": study.pseudonym,
        "diagnosis": {
            "answer": answer,
            "name": FULL_NAMES.get(answer) if answer else None,
            "probabilities": {c: _float(pooled[f"score_{c}"]) for c in CLASSES},
            "slices": int(pooled["slices"]),
            "pooling": str(pooled["pooling"]),
            "pooling_rule": POOLING if pooled["pooling"] == POOL_LOGLIK else None,
        },
        "slices": slices,
        "study": {
            "source_kind": study.source_kind,
            "lge_kind": study.lge_kind,
            "stack_positions": study.stack_positions,
            "slices_read": len(study.rows),
            "burned_in_text_lines_masked": study.masked_text_lines,
            "stacks_refused_for_burned_in_text": study.refused_stacks,
        },
        "model": lineage,
        "prompt": {"version": QUERY_VERSION, "query": DIAGNOSTIC_QUERY},
        "settings": settings,
    }


# ------------------------------------------------------------------------------ the page

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;
  max-width:1100px;color:#1d2733;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px}
.warn{background:#fff4d6;border:2px solid #d08a00;padding:10px 14px;border-radius:6px;
  font-weight:600}
.dx{display:flex;gap:28px;align-items:flex-start;flex-wrap:wrap;margin-top:14px}
.answer{font-size:30px;font-weight:700}.answer small{display:block;font-size:15px;
  font-weight:400;color:#445}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left}
.probs{table-layout:fixed;width:540px}.probs td:nth-child(1){width:44px}
.probs td:nth-child(2){width:260px}.probs td:nth-child(3){width:186px}
.bar{background:#2f6db5;height:12px;display:inline-block;vertical-align:middle}
.slice{display:flex;gap:18px;border-top:1px solid #dde;padding:14px 0}
.slice svg{flex:none;width:256px;height:256px;background:#000}
.chain{white-space:pre-wrap;font-size:13px;background:#f5f7fa;padding:8px;border-radius:4px}
.meta{color:#556;font-size:12px}code{font-size:12px;word-break:break-all}
"""


def _bars(probabilities: dict[str, float | None], highlight: str | None) -> str:
    rows = []
    for c in CLASSES:
        p = probabilities.get(c)
        width = 0 if p is None else round(180 * p)
        shown = "n/a" if p is None else f"{p:.3f}"
        weight = " style='font-weight:700'" if c == highlight else ""
        rows.append(
            f"<tr{weight}><td>{c}</td><td>{html.escape(FULL_NAMES[c])}</td>"
            f"<td><span class='bar' style='width:{width}px'></span></td><td>{shown}</td></tr>"
        )
    return "<table class='probs'>" + "".join(rows) + "</table>"


def _figure(png: bytes, size: int, box: list[float] | None) -> str:
    """The slice with its predicted box, in SVG over the embedded PNG."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    rect = ""
    if box:
        x1, y1, x2, y2 = box
        rect = (
            f"<rect x='{x1:g}' y='{y1:g}' width='{x2 - x1:g}' height='{y2 - y1:g}' fill='none' "
            "stroke='#ffd400' stroke-width='2'/>"
        )
    return (
        f"<svg viewBox='0 0 {size} {size}' role='img' aria-label='slice'>"
        f"<image href='{uri}' width='{size}' height='{size}'/>{rect}</svg>"
    )


def _box_text(box: list[float] | None, size: int) -> str:
    if not box:
        return "none"
    text = "[" + ", ".join(f"{v:g}" for v in box) + "]"
    whole = box == [0, 0, size, size]  # the training targets' box for "no focal lesion"
    return text + " (the whole image: no focal lesion)" if whole else text


def _lineage_rows(model: dict) -> str:
    rows = [
        ("model", model["model"]),
        ("kind", model["kind"]),
        ("checkpoint sha256 (folder digest)", model.get("sha256")),
        ("weights sha256 (model.safetensors)", model.get("weights_sha256")),
    ]
    producer = model.get("produced_by")
    if producer:
        wildcards = ", ".join(f"{k} {v}" for k, v in sorted(producer["wildcards"].items()))
        git = producer.get("git") or {}
        rows += [
            ("produced by", f"rule {producer['rule']}" + (f" ({wildcards})" if wildcards else "")),
            ("manifest", producer["manifest"]),
            ("git commit", f"{git.get('commit')}" + (" (dirty)" if git.get("dirty") else "")),
            ("config sha256", producer.get("config_sha256")),
        ]
        training = producer.get("training") or {}
        if training:
            rows.append(("training", ", ".join(f"{k} {v}" for k, v in training.items())))
    else:
        rows.append(("produced by", "no pipeline manifest records this model"))
    return (
        "<table>"
        + "".join(
            f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>"
            for k, v in rows
        )
        + "</table>"
    )


def _stack_kind(study: dict) -> str:
    kind = study["lge_kind"] if study["lge_kind"] != "unknown" else None
    return ", ".join(k for k in (kind, study["source_kind"]) if k)


def summary_html(prediction: dict, out_dir: Path, image_size: int) -> str:
    """The one-page summary: the diagnosis and its probabilities, every slice with its box and
    chain, the model's lineage, and the disclaimer at the top and the bottom."""
    dx = prediction["diagnosis"]
    answer = dx["answer"] or "no answer"
    name = f"<small>{html.escape(dx['name'])}</small>" if dx["name"] else ""
    study = prediction["study"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>CMR-RD research prediction</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<p class='warn' id='disclaimer'>{html.escape(DISCLAIMER)}</p>",
        "<h1>CMR-RD: LGE cardiac MRI, research prediction</h1>",
        f"<p class='meta'>Patient <b>{html.escape(prediction['patient'])}</b> (pseudonym) &middot; "
        f"{study['slices_read']} short-axis slice(s) of a {study['stack_positions']}-position "
        f"LGE stack ({html.escape(_stack_kind(study))})</p>",
        "<div class='dx'><div><div class='meta'>Patient-level diagnosis</div>",
        f"<div class='answer' id='diagnosis'>{html.escape(answer)}{name}</div></div>",
        f"<div>{_bars(dx['probabilities'], dx['answer'])}</div></div>",
        f"<p class='meta'>{html.escape(dx['pooling_rule'] or dx['pooling'])}</p>",
        "<h2>Slices</h2>",
    ]
    for s in prediction["slices"]:
        png = (out_dir / s["image"]).read_bytes()
        chain = s["think"] if s["think"] is not None else s["completion"]
        note = "" if s["format_valid"] else (
            f"<p class='meta'>Not in the answer format ({html.escape(s['format_reason'] or '')}):"
            " the whole completion is shown.</p>"
        )  # fmt: skip
        box = _box_text(s["box"], image_size)
        parts.append(
            f"<div class='slice'>{_figure(png, image_size, s['box'])}<div>"
            f"<b>Slice {s['slice_rank']}</b> <span class='meta'>({s['slice_position_mm']:+.1f} mm "
            f"from the stack centre)</span><br>Answer: <b>{html.escape(s['answer'] or 'none')}"
            f"</b> &middot; box {box}{note}"
            f"<div class='chain'>{html.escape(chain)}</div>"
            f"{_bars(s['probabilities'], s['answer'])}</div></div>"
        )
    parts += [
        "<h2>Model lineage</h2>",
        _lineage_rows(prediction["model"]),
        f"<p class='meta'>Prompt {html.escape(prediction['prompt']['version'])}: "
        f"{html.escape(prediction['prompt']['query'])}</p>",
        f"<p class='warn'>{html.escape(DISCLAIMER)}</p>",
        "</body></html>\n",
    ]
    return "\n".join(parts)


def write_outputs(prediction: dict, out_dir: Path, image_size: int) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / "prediction.json", out_dir / "summary.html"
    json_path.write_text(json.dumps(prediction, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    html_path.write_text(summary_html(prediction, out_dir, image_size), encoding="utf-8")
    return json_path, html_path
