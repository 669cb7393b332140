"""Rule foundation_data: the pretraining pool (its own patients, under its own seed) and the
general questions about it that the foundation stage trains the tiny backbone on."""

from pathlib import Path

from cmr_rd.foundation.pool import PoolConfig, build_pool
from cmr_rd.foundation.questions import question_records
from cmr_rd.jsonl import write_jsonl
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        out = Path(sm.output.images).parent
        frame = sm.params.frame
        findings = build_pool(
            PoolConfig(**sm.params.pool),
            out,
            image_size=frame["image_size"],
            crop_fov_mm=frame["crop_fov_mm"],
            percentiles=tuple(frame["normalize_percentiles"]),
            workers=sm.threads,
        )
        questions = question_records(
            findings, out.as_posix(), sm.params.questions_per_image, sm.params.pool["seed"],
            renamed_share=sm.params.renamed_share,
        )  # fmt: skip
        write_jsonl(findings, Path(sm.output.findings))
        write_jsonl(questions, Path(sm.output.dataset))
        renamed = sum(q["renamed"] for q in questions)
        run.log.info("foundation pool: %d images, %d questions (%d with renamed options)",
                     len(findings), len(questions), renamed)  # fmt: skip
        run.record(images=len(findings), questions=len(questions), renamed_options=renamed)


# Guarded: worker pools that spawn re-import this module and must not rerun the stage.
if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
