"""Rule gppo_train: GRPO on one phase dataset, from the previous phase's checkpoint, with the
start model as KL reference. Checkpoints live in a fingerprinted run folder, so a preempted job
resumes on rerun and a changed input starts afresh."""

import shutil
from pathlib import Path

from cmr_rd.lineage import checkpoint_digest, describe_inputs, sha256_file, write_manifest
from cmr_rd.stage import fingerprint, require_intact, setup_logging, train_in_run_folder

SEED_OFFSET = 401  # the trainer's seed (sampling of rollouts) = run seed + offset + phase


def main(sm) -> None:
    log = setup_logging(sm.log[0])
    parents = require_intact(log, sm.input.model, sm.input.ref)
    gppo, phase, seed = sm.params.gppo, int(sm.wildcards.phase), int(sm.wildcards.seed)
    settings = {
        "train": {**gppo["train"], "batch_prompts": gppo["batch_prompts"],
                  "seed": seed + SEED_OFFSET + phase, "threads": sm.threads},
        "rewards": {**gppo["rewards"], "use_iou": sm.wildcards.run.endswith("-iou")},
    }  # fmt: skip
    run_id = fingerprint(
        {"phase": phase, "settings": settings, "model": parents[str(sm.input.model)]["sha256"],
         "ref": parents[str(sm.input.ref)]["sha256"], "data": sha256_file(sm.input.data)}
    )  # fmt: skip
    cli = ["-m", "cmr_rd.gppo.cli", "train", "--phase", str(phase), "--model",
           str(sm.input.model), "--ref", str(sm.input.ref),
           "--data", str(sm.input.data)]  # fmt: skip
    run = train_in_run_folder(cli, settings, run_id, sm.output.final,
                              int(sm.resources.get("gpu", 0) or 0), sm.log[0], log)  # fmt: skip
    for name in ("summary", "rewards", "batches", "loss"):
        source = run / Path(getattr(sm.output, name)).name
        shutil.copy(source, getattr(sm.output, name))
    write_manifest(
        sm.output.lineage,
        rule=sm.rule,
        config=sm.config,
        params={"phase": phase, "run": sm.wildcards.run, "seed": seed, **settings,
                "run_folder": run_id},  # fmt: skip
        inputs={"parent_checkpoint": parents[str(sm.input.model)],
                "kl_reference": parents[str(sm.input.ref)], **describe_inputs([sm.input.data])},
        outputs=[sm.output.summary, sm.output.rewards, sm.output.batches, sm.output.loss],
        extra={"final_sha256": checkpoint_digest(sm.output.final)},
    )  # fmt: skip


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
