"""The judge stage: sample, blind, rate (rubric; LLM; clinicians' sheet), join, summarise.

Judges see blinded items only (id, image, reference, chain); the key that maps ids to models is
read when the ratings are joined and nowhere else. Every output is written in a fixed order from
seeded choices, so a rerun on the same inputs is byte-identical.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmr_rd.jsonl import read_jsonl
from cmr_rd.judge import llm
from cmr_rd.judge.findings import reference_text
from cmr_rd.judge.items import (
    JudgeInputError,
    build_items,
    evaluation_key,
    sample_cases,
    shuffled,
)
from cmr_rd.judge.rubric import AXES, ERRORS, NO_LESION_BOX, rate, read_chain
from cmr_rd.judge.sheet import read_sheet, write_sheet
from cmr_rd.judge.summary import claim_markdown, claim_rows, figure, markdown, summary_table
from cmr_rd.rewrite.client import LEDGER_FIELDS, LLMConfig, Request, run_requests

log = logging.getLogger(__name__)
RUBRIC, CLINICIAN = "rubric", "clinician"
RATING_COLUMNS = [
    "id", "model", "evaluation", "case", "label", "judge", *AXES,
    *(f"{axis}_reason" for axis in AXES), *ERRORS, "status",
]  # fmt: skip


@dataclass(frozen=True)
class JudgeConfig:
    backend: str = "offline"
    per_class: int = 5
    seed: int = 0
    bootstrap: int = 1000
    send_image: bool = True
    no_lesion_box: tuple[float, ...] = NO_LESION_BOX


@dataclass(frozen=True)
class Outputs:
    ratings: Path
    key: Path
    sheet: Path
    summary: Path
    summary_md: Path
    claim: Path
    claim_md: Path
    figure: Path
    ledger: Path


def llm_config(settings: dict) -> LLMConfig:
    """judge.openai -> the client's config: the chat API (image input), versioned prompts."""
    return LLMConfig(
        api="chat",
        model=settings["model"],
        base_url=settings.get("base_url"),
        api_key_env=settings["api_key_env"],
        max_concurrency=settings["max_concurrency"],
        timeout_s=settings["timeout_s"],
        max_retries=settings["max_retries"],
        malformed_retries=settings["malformed_retries"],
        reasoning_effort=None,
        temperature=settings["temperature"],
        price_input_per_mtok=settings["price_input_per_mtok"],
        price_output_per_mtok=settings["price_output_per_mtok"],
        template_version=llm.JUDGE_VERSION,
    )


def _rating_row(item: dict, judge: str, scores: dict, reasons: dict, errors: dict, status: str):
    return {
        **{k: item[k] for k in ("id", "model", "evaluation", "case", "label")},
        "judge": judge,
        **{axis: scores.get(axis) for axis in AXES},
        **{f"{axis}_reason": reasons.get(axis, "") for axis in AXES},
        **{name: errors.get(name) for name in ERRORS},
        "status": status,
    }


def rubric_ratings(key: pd.DataFrame, completions, reports, cfg: JudgeConfig) -> list[dict]:
    rows = []
    for ident in shuffled(list(key["id"]), cfg.seed, RUBRIC):
        item = key.loc[ident]
        r = rate(completions[ident], reports[item["patient"]], cfg.no_lesion_box)
        scores = {"accuracy": r.accuracy, "coherence": r.coherence, "readability": r.readability}
        rows.append(_rating_row({**item, "id": ident}, RUBRIC, scores, r.reasons, r.errors, "ok"))
    return rows


def llm_ratings(
    key: pd.DataFrame,
    completions,
    reports,
    cfg: JudgeConfig,
    llm_cfg,
    cache_dir,
    ledger: Path,
    safe=None,
) -> list[dict]:
    """One request per item (empty chains are rated 1 without a call), in the judge's order."""
    from cmr_rd.rewrite.client import image_data_url

    order = shuffled(list(key["id"]), cfg.seed, llm_cfg.model)
    requests, rows = [], {}
    for ident in order:
        item = key.loc[ident]
        completion = completions[ident]
        if not completion.strip():
            reasons = dict.fromkeys(AXES, "empty reply")
            rows[ident] = _rating_row(
                {**item, "id": ident}, llm_cfg.model, dict.fromkeys(AXES, 1), reasons,
                dict.fromkeys(ERRORS, 0), "ok",
            )  # fmt: skip
            continue
        prompt = llm.user_prompt(
            reference_text(reports[item["patient"]]), read_chain(completion).text()
        )
        images = (image_data_url(item["image"]),) if cfg.send_image else ()
        requests.append(Request(ident, llm.SYSTEM, prompt, known=(item["patient"],), images=images))
    answered = run_requests(requests, llm_cfg, Path(cache_dir), ledger, llm.validate, safe)
    for result in answered:
        item = key.loc[result.item_id]
        parsed = llm.parse_rating(result.reply)[0] if result.status == "ok" else None
        if parsed is None:
            reasons = dict.fromkeys(AXES, result.reason or "unusable reply")
            rows[result.item_id] = _rating_row(
                {**item, "id": result.item_id}, llm_cfg.model, {}, reasons, {}, result.status
            )
            continue
        rows[result.item_id] = _rating_row(
            {**item, "id": result.item_id}, llm_cfg.model, parsed.scores, parsed.reasons,
            parsed.errors, "ok",
        )  # fmt: skip
    return [rows[ident] for ident in order]


def clinician_ratings(key: pd.DataFrame, path: Path | None) -> tuple[list[dict], int]:
    if path is None:
        return [], 0
    rated, unrated = read_sheet(path, set(key.index))
    rows = []
    for entry in rated:
        item = key.loc[entry["id"]]
        reasons = dict.fromkeys(AXES, entry["comment"])
        scores = {axis: entry[axis] for axis in AXES}
        rows.append(_rating_row({**item, "id": entry["id"]}, CLINICIAN, scores, reasons, {}, "ok"))
    return rows, unrated


def _ratings_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(rows, columns=RATING_COLUMNS)
    for column in (*AXES, *ERRORS):
        frame[column] = frame[column].astype("Float64").astype(float)
    return frame.sort_values(["judge", "model", "case", "evaluation"]).reset_index(drop=True)


def run_judge(
    *,
    samples_paths: list[Path],
    eval_root: Path,
    test_path: Path,
    reports_path: Path,
    ratings_path: Path | None,
    cfg: JudgeConfig,
    llm_cfg: LLMConfig | None,
    cache_dir: Path,
    showcase: str,
    out: Outputs,
    safe=None,
) -> dict:
    test = pd.DataFrame(read_jsonl(test_path))
    test["image"] = [images[0] for images in test["images"]]
    reports = {r["patient"]: r["report"] for r in read_jsonl(reports_path)}
    cases = sample_cases(test, cfg.per_class, cfg.seed)
    lacking = sorted(set(cases["patient"]) - set(reports))
    if lacking:
        raise JudgeInputError(
            f"{reports_path}: no scrubbed report for {len(lacking)} sampled test patient(s), "
            f"e.g. {lacking[0]} (the rubric and the LLM judge compare chains with the report)"
        )
    samples = {
        evaluation_key(p, eval_root): pd.read_parquet(p, columns=["id", "completion"])
        for p in samples_paths
    }
    items = build_items(cases, samples, cfg.seed)
    key = items.key.set_index("id", drop=False)
    out.key.parent.mkdir(parents=True, exist_ok=True)
    items.key.to_csv(out.key, index=False, lineterminator="\n")

    rows = rubric_ratings(key, items.completions, reports, cfg)
    judges = {RUBRIC: len(rows)}
    if cfg.backend == "openai":
        answered = llm_ratings(
            key, items.completions, reports, cfg, llm_cfg, cache_dir, out.ledger, safe
        )
        judges[llm_cfg.model] = sum(r["status"] == "ok" for r in answered)
        rows += answered
    else:
        out.ledger.write_text(",".join(LEDGER_FIELDS) + "\n")
        totals = {"backend": "offline", "calls": 0, "cache_hits": 0, "cost_usd": 0.0}
        out.ledger.with_suffix(".json").write_text(json.dumps(totals, indent=2) + "\n")
    clinician, unrated = clinician_ratings(key, ratings_path)
    if clinician:
        judges[CLINICIAN] = len(clinician)
    rows += clinician

    sheet_order = shuffled(list(key["id"]), cfg.seed, CLINICIAN)
    write_sheet(
        [
            {
                "id": ident,
                "image": key.at[ident, "image"],
                "chain": read_chain(items.completions[ident]).text(),
            }
            for ident in sheet_order
        ],
        out.sheet,
    )
    ratings = _ratings_frame(rows)
    ratings.to_parquet(out.ratings, index=False)
    case_ids = list(cases["id"])
    summary = summary_table(ratings, case_ids, cfg.bootstrap, cfg.seed)
    summary.to_csv(out.summary, index=False, lineterminator="\n")
    out.summary_md.write_text(markdown(summary))
    claims = claim_rows(ratings, showcase, case_ids, cfg.bootstrap, cfg.seed)
    claims.to_csv(out.claim, index=False, lineterminator="\n")
    out.claim_md.write_text(claim_markdown(claims))
    figure(summary, out.figure)
    return {
        "cases": len(cases),
        "cases_per_class": {
            k: int(v) for k, v in cases["label"].value_counts().sort_index().items()
        },
        "evaluations": sorted(samples),
        "items": len(key),
        "ratings_per_judge": judges,
        "clinician_rows_unrated": unrated,
        "failed": int((ratings["status"] != "ok").sum()),
        "mean_per_judge": {
            judge: round(float(np.nanmean(group[list(AXES)].to_numpy(dtype=float))), 4)
            for judge, group in ratings.groupby("judge")
        },
    }
