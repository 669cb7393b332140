"""The rewrite and QC stages: pool selection, scrubbing, the rewriter, QC, the review sheet.

Reports carry PHI: they are read from the user's labels file, scrubbed, checked again, and only
the scrubbed text leaves this module (to the rewriter and to results/rewrite/).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cmr_rd.classes import CLASSES
from cmr_rd.ingest.deid import DeidKey
from cmr_rd.jsonl import read_jsonl, write_jsonl
from cmr_rd.prompts import REWRITE_SYSTEM, TEMPLATE_VERSION, rewrite_prompt
from cmr_rd.rewrite import phi
from cmr_rd.rewrite.client import Request, run_requests
from cmr_rd.rewrite.offline import offline_rewrite
from cmr_rd.rewrite.qc import CHECKS, QCConfig, decide, read_decisions, run_checks
from cmr_rd.rewrite.templates import Template, parse_reply, validate_reply

log = logging.getLogger(__name__)
POOL_SEED_OFFSET = 202
LEDGER_HEADER = "item_id,cache_key,api,model,attempt,status,input_tokens,output_tokens,cost_usd\n"


@dataclass(frozen=True)
class PoolConfig:
    pool_size: int = 120
    min_per_class: int = 8


def _has_box(box) -> bool:
    return box is not None and not (isinstance(box, float) and np.isnan(box)) and len(box) == 4


def representative_slices(manifest: pd.DataFrame) -> pd.DataFrame:
    """One image per patient: the middle of its selected slices (mid-ventricular). An MI
    patient's image is the middle of the slices that show its lesion, since its template must
    quote the annotated lesion box; an MI patient with no boxed slice has no template image."""
    boxed = manifest["box"].map(_has_box) if "box" in manifest else False
    manifest = manifest[(manifest["label"] != "MI") | boxed]
    ordered = manifest.sort_values(["patient", "slice_rank"], kind="stable")
    position = ordered.groupby("patient").cumcount()
    count = ordered.groupby("patient")["patient"].transform("size")
    return ordered[position == (count - 1) // 2].reset_index(drop=True)


def select_pool(manifest: pd.DataFrame, cfg: PoolConfig, seed: int) -> pd.DataFrame:
    """Cold-start pool from training patients: a floor per class, the rest by class share."""
    train = representative_slices(manifest[manifest["split"] == "train"])
    rng = np.random.default_rng([seed, POOL_SEED_OFFSET])
    by_class = {c: train[train["label"] == c].sort_values("patient") for c in CLASSES}
    size = min(cfg.pool_size, len(train))
    quota = {c: min(len(by_class[c]), cfg.min_per_class) for c in CLASSES}
    left = size - sum(quota.values())
    if left > 0:
        spare = {c: len(by_class[c]) - quota[c] for c in CLASSES}
        total_spare = sum(spare.values())
        extra = {c: int(left * spare[c] / total_spare) if total_spare else 0 for c in CLASSES}
        for c in sorted(CLASSES, key=lambda c: -spare[c]):  # largest pools absorb rounding
            if sum(extra.values()) >= left:
                break
            if extra[c] < spare[c]:
                extra[c] += 1
        quota = {c: quota[c] + extra[c] for c in CLASSES}
    chosen = [
        by_class[c].iloc[np.sort(rng.permutation(len(by_class[c]))[: quota[c]])] for c in CLASSES
    ]
    return pd.concat(chosen).sort_values("patient").reset_index(drop=True)


@dataclass
class RewriteInputs:
    scrubbed: dict[str, str] = field(default_factory=dict)  # pseudonym -> gated report
    withheld: dict[str, str] = field(default_factory=dict)  # pseudonym -> reason
    patient_ids: dict[str, str] = field(default_factory=dict)  # pseudonym -> raw id (memory only)
    redacted: dict[str, list[str]] = field(default_factory=dict)  # pseudonym -> what, by shape


def scrub_reports(
    labels_csv: Path, pseudonyms: set[str], key: DeidKey, safe: phi.SafeList | None = None
) -> RewriteInputs:
    """Every report of an ingested patient through the PHI gate (`phi.gate`): scrubbed, what the
    detector still flags redacted, withheld only if the detector or the known list still sees
    something after that."""
    table = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    if "report" not in table.columns:  # reports are optional in the input contract
        table["report"] = ""
    safe = safe or phi.SafeList()
    out = RewriteInputs()
    for row in table.itertuples(index=False):
        pid = row.patient_id.strip()
        pseudo = key.pseudonym(pid)
        if pseudo not in pseudonyms or pseudo in out.scrubbed:
            continue
        out.patient_ids[pseudo] = pid
        if not row.report.strip():
            out.withheld[pseudo] = "no report"
            continue
        gated = phi.gate(row.report, known=[pid], safe=safe)
        out.redacted[pseudo] = [str(f) for f in gated.redacted]
        if gated.text is None:
            out.withheld[pseudo] = gated.reason
        else:
            out.scrubbed[pseudo] = gated.text
    for pseudo in sorted(pseudonyms - set(out.patient_ids)):
        out.withheld[pseudo] = "no label row for this patient"
    return out


def run_rewrite(
    *,
    manifest_path: Path,
    labels_csv: Path,
    key: DeidKey,
    pool_cfg: PoolConfig,
    backend: str,
    llm_cfg,
    out_dir: Path,
    cache_dir: Path,
    seed: int,
    safe: phi.SafeList | None = None,
) -> dict:
    """Gate reports, choose the pool, rewrite each pool report; write templates and ledger."""
    manifest = pd.read_parquet(manifest_path)
    inputs = scrub_reports(labels_csv, set(manifest["patient"]), key, safe)
    write_jsonl(
        [{"patient": p, "report": t} for p, t in sorted(inputs.scrubbed.items())],
        out_dir / "scrubbed_reports.jsonl",
    )
    pool = select_pool(manifest, pool_cfg, seed)
    rows, requests = [], []
    for item in pool.itertuples(index=False):
        box = list(item.box) if item.box is not None else None
        row = {"item_id": item.patient, "label": item.label, "image": item.image, "box": box}
        row["redacted"] = inputs.redacted.get(item.patient, [])
        if item.patient in inputs.withheld:
            row.update(status="refused", reason=inputs.withheld[item.patient], template=None)
        else:
            prompt = rewrite_prompt(inputs.scrubbed[item.patient], box)
            requests.append((row, prompt, inputs.patient_ids[item.patient]))
        rows.append(row)
    if backend == "offline":
        replies = {
            r["item_id"]: offline_rewrite(p, r["box"], r["item_id"], seed) for r, p, _ in requests
        }
        results = {
            r["item_id"]: ("ok", None, replies[r["item_id"]], False) for r, _p, _ in requests
        }
        ledger = {"backend": "offline", "calls": 0, "cost_usd": 0.0, "cache_hits": 0}
        (out_dir / "ledger.csv").write_text(
            "item_id,cache_key,api,model,attempt,status,input_tokens,output_tokens,cost_usd\n"
        )
    else:
        answered = run_requests(
            [Request(r["item_id"], REWRITE_SYSTEM, p, known=(pid,)) for r, p, pid in requests],
            llm_cfg,
            cache_dir,
            out_dir / "ledger.csv",
            validate_reply,
            safe,
        )
        results = {a.item_id: (a.status, a.reason, a.reply, a.cached) for a in answered}
        ledger = json.loads((out_dir / "ledger.json").read_text())
    for row in rows:
        if row["item_id"] in results:
            status, reason, reply, cached = results[row["item_id"]]
            template, problem = parse_reply(reply) if status == "ok" else (None, None)
            row.update(
                status=status if template or status != "ok" else "failed",
                reason=reason or problem,
                template=template.to_dict() if template else None,
            )
    write_jsonl(rows, out_dir / "templates.jsonl")
    summary = {
        "backend": backend,
        "template_version": TEMPLATE_VERSION,
        "pool": len(rows),
        "pool_per_class": {c: int((pool["label"] == c).sum()) for c in CLASSES},
        "status": {s: sum(r["status"] == s for r in rows) for s in ("ok", "failed", "refused")},
        "reports_scrubbed": len(inputs.scrubbed),
        "reports_withheld": len(inputs.withheld),
        "reports_redacted": sum(bool(r) for r in inputs.redacted.values()),
        "redactions": dict(
            sorted(Counter(f.split(" '")[0] for r in inputs.redacted.values() for f in r).items())
        ),
    }
    if backend == "offline":
        (out_dir / "ledger.json").write_text(json.dumps(ledger, indent=2, sort_keys=True) + "\n")
    return summary


def run_qc(
    *,
    templates_path: Path,
    decisions_path: Path | None,
    cfg: QCConfig,
    out_dir: Path,
    safe: phi.SafeList | None = None,
) -> dict:
    """Checks, overrides, accepted set, review sheet and summary."""
    safe = safe or phi.SafeList()

    def find_phi(text: str) -> list[str]:  # what the gate would refuse, with shapes, no text
        return [str(f) for f in phi.check(text, safe=safe)]

    rows = read_jsonl(templates_path)
    decisions = read_decisions(decisions_path, {r["item_id"] for r in rows})
    sheet, accepted = [], []
    for row in rows:
        review = decisions.get(row["item_id"])
        entry = {"item_id": row["item_id"], "label": row["label"], "rewrite": row["status"]}
        if row["status"] != "ok":
            checks = dict.fromkeys(CHECKS, f"rewrite {row['status']}: {row['reason']}")
            outcome, reason = "rejected", f"rewrite {row['status']}: {row['reason']}"
            think = diagnosis = ""
        else:
            template = Template(**row["template"])
            checks = run_checks(template, row["label"], row["box"], cfg, find_phi)
            outcome, reason = decide(checks, review)
            think, diagnosis = template.think(), template.diagnosis
            if outcome == "accepted":
                accepted.append(
                    {
                        "id": row["item_id"],
                        "patient": row["item_id"],
                        "label": row["label"],
                        "image": row["image"],
                        "box": row["box"],
                        "target": template.target(row["box"] or cfg.no_lesion_box),
                    }
                )
        auto, _ = decide(checks, None)
        entry.update({name: checks[name] or "pass" for name in CHECKS})
        entry.update(
            auto=auto if row["status"] == "ok" else "rejected",
            decision=review[0] if review else "",
            comment=review[1] if review else "",
            outcome=outcome,
            reason=reason,
            diagnosis=diagnosis,
            think=think,
        )
        sheet.append(entry)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(accepted, out_dir / "accepted.jsonl")
    pd.DataFrame(sheet).to_csv(out_dir / "review_sheet.csv", index=False)
    counts = (
        pd.DataFrame(sheet)
        .groupby(["label", "outcome", "reason"], sort=True)
        .size()
        .rename("count")
        .reset_index()
    )
    counts.to_csv(out_dir / "qc_summary.csv", index=False)
    per_class = {
        c: {
            "accepted": sum(1 for s in sheet if s["label"] == c and s["outcome"] == "accepted"),
            "rejected": sum(1 for s in sheet if s["label"] == c and s["outcome"] == "rejected"),
        }
        for c in CLASSES
    }
    return {"templates": len(sheet), "accepted": len(accepted), "per_class": per_class}
