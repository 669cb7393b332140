"""Checkpoint rewrite_qc: automatic checks, the clinician's overrides, the accepted set."""

import sys
from pathlib import Path

from cmr_rd.lineage import describe_inputs, write_manifest
from cmr_rd.rewrite.qc import QCConfig, ReviewError
from cmr_rd.rewrite.stage import run_qc
from cmr_rd.stage import setup_logging


def main(sm) -> None:
    log = setup_logging(sm.log[0])
    qc = sm.params.qc
    cfg = QCConfig(qc["min_words"], qc["max_words"], qc["min_box_iou"], tuple(qc["no_lesion_box"]))
    decisions = sm.input.decisions[0] if sm.input.decisions else None
    try:
        summary = run_qc(
            templates_path=Path(sm.input.templates),
            decisions_path=Path(decisions) if decisions else None,
            cfg=cfg,
            out_dir=Path(sm.output.accepted).parent,
        )
    except ReviewError as exc:
        log.error("review decisions: %s", exc)
        sys.exit(1)
    log.info("QC: %s", summary)
    write_manifest(
        Path(sm.output.lineage).parent,
        rule=sm.rule,
        config=sm.config,
        params={"qc": qc},
        inputs=describe_inputs([sm.input.templates, *sm.input.decisions]),
        outputs=[sm.output.accepted, sm.output.sheet, sm.output.summary],
        extra={"summary": summary},
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
