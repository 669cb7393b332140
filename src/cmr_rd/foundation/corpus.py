"""The tiny backbone's tokenizer corpus: text of the pretraining pool's own patients, never the
cohort's.

A real backbone's tokenizer was trained long before a site's cohort existed. The tiny one used to
be trained on the cohort's rewritten reports, which made the backbone, and so the whole foundation
stage, wait for synthesis, ingestion, rewriting and QC (the foundation stage ran alone on the
critical path with the second core idle: docs/performance.md, "What makes it this fast"). It now
reads what the pool's patients would have written about them, by the same generator under the
pool's seed: the body of each report (findings and impression, never the header with its
invented identifiers), the reasoning chain the offline rewriter makes of it, the findings captions
alignment uses, and the fixed prompts. So the tokenizer knows the domain's words as MedGemma's
does, and the foundation stage starts with the first job.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from cmr_rd.datasets.alignment import CAPTION_PROMPTS, findings_caption
from cmr_rd.foundation.pool import PoolConfig, pool_jobs
from cmr_rd.prompts import DIAGNOSTIC_QUERY
from cmr_rd.rewrite.offline import offline_rewrite
from cmr_rd.rewrite.templates import parse_reply
from cmr_rd.synth.cohort import plan_patient

# The header (institution, name, identifiers) ends where the clinical text begins; the signature
# block (reporter, date) follows the impression.
_BODY = re.compile(r"^(INDICATION|CLINICAL|HISTORY|TECHNIQUE|FINDINGS)\b", re.I | re.M)
_SIGNATURE = re.compile(r"^(Reported|Electronically|Signed|Verified|Dictated)\b", re.I | re.M)


def report_body(report: str) -> str:
    """A synthetic report's clinical sections only: no identifiers, even invented ones."""
    start = _BODY.search(report)
    if start is None:
        return ""
    body = report[start.start() :]
    end = _SIGNATURE.search(body)
    return (body[: end.start()] if end else body).strip()


def pool_texts(cfg: PoolConfig, seed: int) -> Iterator[str]:
    """Every text line of the pool's patients, in patient order (the same lines on every run)."""
    cfg.validate()
    yield DIAGNOSTIC_QUERY
    yield from CAPTION_PROMPTS
    for job in pool_jobs(cfg, Path(".")):  # plans only: nothing is written
        body = report_body(plan_patient(job).report)
        if not body:
            continue
        yield from (line for line in body.splitlines() if line.strip())
        caption = findings_caption(body)
        if caption:
            yield caption
        template, _ = parse_reply(offline_rewrite(body, None, f"pool-{job.index}", seed))
        if template is not None:
            yield template.think()
