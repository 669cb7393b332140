"""Rule gppo_train: GRPO on one phase dataset, from the previous phase's checkpoint, with the
start model as KL reference, then the trained checkpoint's greedy answers on the probe split
(probe.json, which gppo_posterior turns into the Beta posteriors). Checkpoints live in a
fingerprinted run folder, so a preempted job resumes on rerun and a changed input starts
afresh."""

import shutil
from pathlib import Path

from cmr_rd.gppo.runs import RunName
from cmr_rd.model.runtime import fingerprint, train_in_run_folder, worker_numerics
from cmr_rd.stage import RuleRun

SEED_OFFSET = 401  # the trainer's seed (sampling of rollouts) = run seed + offset + phase


def main(sm) -> None:
    with RuleRun(sm) as run:
        gppo, phase, seed = sm.params.gppo, int(sm.wildcards.phase), int(sm.wildcards.seed)
        settings = {
            "train": {**gppo["train"], "batch_prompts": gppo["batch_prompts"],
                      "seed": seed + SEED_OFFSET + phase, "threads": sm.threads},
            "rewards": {**gppo["rewards"], "use_iou": RunName.parse(sm.wildcards.run).use_iou},
            "probe": {**gppo["probe"], "data": str(sm.input.probe)},
        }  # fmt: skip
        run_id = fingerprint(
            {"phase": phase, "settings": settings, "model": run.digest(sm.input.model),
             "ref": run.digest(sm.input.ref), "data": run.digest(sm.input.data),
             "probe": run.digest(sm.input.probe)}
        )  # fmt: skip
        cli = ["-m", "cmr_rd.gppo.cli", "train", "--phase", str(phase), "--model",
               str(sm.input.model), "--ref", str(sm.input.ref),
               "--data", str(sm.input.data)]  # fmt: skip
        trained = train_in_run_folder(cli, settings, run_id, sm.output.final,
                                      int(sm.resources.get("gpu", 0) or 0), sm.log[0],
                                      run.log)  # fmt: skip
        for name in ("summary", "rewards", "health", "batches", "loss", "probe"):
            shutil.copy(trained / Path(sm.output[name]).name, sm.output[name])
        run.record(run_folder=run_id, settings=settings, worker_numerics=worker_numerics(trained))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
