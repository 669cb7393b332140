"""Rule synthesize_cohort: generate the synthetic LGE cohort (DICOM + NIfTI + labels)."""

from pathlib import Path

from cmr_rd.stage import RuleRun
from cmr_rd.synth.cohort import SynthConfig, generate_cohort


def main(sm) -> None:
    with RuleRun(sm) as run:
        settings = {k: v for k, v in sm.params.synthetic.items() if k != "out_dir"}
        summary = generate_cohort(
            SynthConfig(**settings), Path(sm.output.labels).parent, seed=sm.params.seed,
            workers=sm.threads,
        )  # fmt: skip
        run.log.info("synthetic cohort: %s", summary)


# Guarded: worker pools that spawn re-import this module and must not rerun the stage.
if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
