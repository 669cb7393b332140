"""Rules align and sft: launch the training entry point (accelerate for several GPUs), then
publish its final checkpoint.

Checkpoints live in a run folder named by a fingerprint of the inputs and settings, so a rerun
after preemption resumes, while a changed input or setting starts afresh instead of resuming
someone else's run.
"""

import shutil
from pathlib import Path

from cmr_rd.model.runtime import fingerprint, train_in_run_folder, worker_numerics
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        settings = {**sm.params.train, "seed": sm.params.seed, "threads": sm.threads}
        run_id = fingerprint(
            {"stage": sm.params.stage, "train": settings, "model": run.digest(sm.input.model),
             "data": run.digest(sm.input.data)}
        )  # fmt: skip
        cli = ["-m", "cmr_rd.model.cli", "train", "--stage", sm.params.stage, "--model",
               str(sm.input.model), "--data", str(sm.input.data)]  # fmt: skip
        # Run folders sit beside the stage's summary (results/model/<stage>/runs/).
        trained = train_in_run_folder(cli, settings, run_id, sm.output.final,
                                      int(sm.resources.get("gpu", 0) or 0), sm.log[0], run.log,
                                      runs=Path(sm.output.summary).parent / "runs")  # fmt: skip
        shutil.copy(trained / "loss.csv", sm.output.loss)
        shutil.copy(trained / "train_summary.json", sm.output.summary)
        run.record(run_folder=run_id, settings=settings, worker_numerics=worker_numerics(trained))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
