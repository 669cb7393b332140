"""Rule sft_check: greedy decoding of the probe split; valid-format rate and accuracy."""

import json
from pathlib import Path

from cmr_rd.model.generate import check_checkpoint
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
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
        run.log.info(
            "probe: %d prompts, valid format %.3f, accuracy %.3f",
            report["n"], report["valid_format_rate"], report["accuracy"],
        )  # fmt: skip


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
