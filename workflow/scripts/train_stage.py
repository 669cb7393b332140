"""Rules align and sft: launch the training entry point (accelerate for several GPUs), then
publish its final checkpoint.

Checkpoints live in a run folder named by a fingerprint of the inputs and settings, so a rerun
after preemption resumes, while a changed input or setting starts afresh instead of resuming
someone else's run.
"""

import shutil
from pathlib import Path

from cmr_rd.lineage import checkpoint_digest, describe_inputs, sha256_file, write_manifest
from cmr_rd.stage import fingerprint, require_intact, setup_logging, train_in_run_folder


def main(sm) -> None:
    log = setup_logging(sm.log[0])
    parent = require_intact(log, sm.input.model)[str(sm.input.model)]
    settings = {**sm.params.train, "seed": sm.params.seed, "threads": sm.threads}
    run_id = fingerprint(
        {"stage": sm.params.stage, "train": settings, "model": parent["sha256"],
         "data": sha256_file(sm.input.data)}
    )  # fmt: skip
    cli = ["-m", "cmr_rd.model.cli", "train", "--stage", sm.params.stage, "--model",
           str(sm.input.model), "--data", str(sm.input.data)]  # fmt: skip
    # Run folders sit beside the stage's summary (results/model/<stage>/runs/), also for the
    # foundation stage, whose final checkpoint is published as results/model/base.
    run = train_in_run_folder(cli, settings, run_id, sm.output.final,
                              int(sm.resources.get("gpu", 0) or 0), sm.log[0], log,
                              runs=Path(sm.output.summary).parent / "runs")  # fmt: skip
    if (run / "loss.csv").is_file():
        shutil.copy(run / "loss.csv", sm.output.loss)
    else:  # a run shorter than logging_steps logs no step
        Path(sm.output.loss).write_text("step,epoch,loss,learning_rate\n")
    shutil.copy(run / "train_summary.json", sm.output.summary)
    write_manifest(
        sm.output.lineage,
        rule=sm.rule,
        config=sm.config,
        params={"stage": sm.params.stage, "train": settings, "run": run_id},
        inputs={"parent_checkpoint": parent, **describe_inputs([sm.input.data])},
        outputs=[sm.output.summary, sm.output.loss],
        extra={"final_sha256": checkpoint_digest(sm.output.final)},
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
