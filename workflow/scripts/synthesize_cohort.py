"""Rule synthesize_cohort: generate the synthetic LGE cohort (DICOM + NIfTI + labels)."""

from pathlib import Path

from cmr_rd.lineage import write_manifest
from cmr_rd.stage import setup_logging
from cmr_rd.synth.cohort import SynthConfig, generate_cohort


def main(sm) -> None:
    log = setup_logging(sm.log[0])
    settings = {k: v for k, v in sm.params.synthetic.items() if k != "out_dir"}
    out_dir = Path(sm.output.labels).parent
    summary = generate_cohort(
        SynthConfig(**settings), out_dir, seed=sm.params.seed, workers=sm.threads
    )
    log.info("synthetic cohort: %s", summary)
    write_manifest(
        out_dir,
        rule=sm.rule,
        config=sm.config,
        params={"synthetic": sm.params.synthetic, "seed": sm.params.seed},
        inputs={},
        outputs=[
            sm.output.dicom,
            sm.output.nifti,
            sm.output.labels,
            sm.output.boxes,
            sm.output.phi,
            sm.output.summary,
        ],
    )


# Guarded: worker pools that spawn re-import this module and must not rerun the stage.
if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
