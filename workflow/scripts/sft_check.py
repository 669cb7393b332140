"""Rule sft_check: greedy decoding of the probe split; valid-format rate and accuracy."""

import json
from pathlib import Path

from cmr_rd.lineage import describe_inputs, write_manifest
from cmr_rd.model.generate import check_checkpoint
from cmr_rd.stage import require_intact, setup_logging


def main(sm) -> None:
    log = setup_logging(sm.log[0])
    checkpoint = require_intact(log, sm.input.model)
    settings = sm.params.check
    report = check_checkpoint(
        Path(sm.input.model),
        Path(sm.input.data),
        limit=settings["limit"],
        batch_size=settings["batch_size"],
        max_new_tokens=settings["max_new_tokens"],
    )
    report.pop("seconds")  # wall time would make a deterministic rerun differ
    Path(sm.output.report).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_manifest(
        sm.output.lineage,
        rule=sm.rule,
        config=sm.config,
        params={"check": settings},
        inputs={**checkpoint, **describe_inputs([sm.input.data])},
        outputs=[sm.output.report],
    )
    log.info(
        "probe: %d prompts, valid format %.3f, accuracy %.3f",
        report["n"], report["valid_format_rate"], report["accuracy"],
    )  # fmt: skip


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
