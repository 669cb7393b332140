"""Checkpoint rewrite_qc: automatic checks, the clinician's overrides, the accepted set."""

from pathlib import Path

from cmr_rd.rewrite.phi import SafeList
from cmr_rd.rewrite.qc import QCConfig
from cmr_rd.rewrite.stage import run_qc
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        qc = sm.params.qc
        cfg = QCConfig(
            qc["min_words"], qc["max_words"], qc["min_box_iou"], tuple(qc["no_lesion_box"])
        )
        decisions = sm.input.decisions[0] if sm.input.decisions else None
        summary = run_qc(
            templates_path=Path(sm.input.templates),
            decisions_path=Path(decisions) if decisions else None,
            cfg=cfg,
            out_dir=Path(sm.output.accepted).parent,
            safe=SafeList.load(next(iter(sm.input.phi_safe_list), None)),
        )
        run.log.info("QC: %s", summary)
        run.record(summary=summary)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
