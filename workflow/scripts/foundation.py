"""Rule foundation: pretrain the tiny backbone into a small general VLM, in two phases in one
run folder (so a preempted job resumes where it stopped): the vision tower on the pool's
findings, then projector and language model on the general questions, tower frozen."""

from pathlib import Path

from cmr_rd.foundation.vision import VisionConfig, pretrain_checkpoint
from cmr_rd.jsonl import read_jsonl
from cmr_rd.model.runtime import fingerprint, train_in_run_folder, worker_numerics
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        log = run.log
        vision = {**sm.params.vision, "seed": sm.params.seed, "threads": sm.threads}
        settings = {**sm.params.train, "seed": sm.params.seed + 1, "threads": sm.threads}
        run_id = fingerprint(
            {"stage": "foundation", "vision": vision, "train": settings,
             "model": run.digest(sm.input.model), "findings": run.digest(sm.input.findings),
             "data": run.digest(sm.input.data)}
        )  # fmt: skip
        runs = Path(sm.output.summary).parent / "runs"
        seen = runs / run_id / "vision"
        if (seen / "vision_summary.json").is_file():
            log.info("vision phase already done in %s", seen)
        else:
            summary = pretrain_checkpoint(
                sm.input.model,
                read_jsonl(sm.input.findings),
                str(Path(sm.input.findings).parent),
                str(seen),
                VisionConfig(**vision),
            )
            log.info("vision phase: %s", summary)
        cli = ["-m", "cmr_rd.model.cli", "train", "--stage", "foundation", "--model",
               str(seen), "--data", str(sm.input.data)]  # fmt: skip
        trained = train_in_run_folder(cli, settings, run_id, sm.output.final,
                                      int(sm.resources.get("gpu", 0) or 0), sm.log[0], log,
                                      runs=runs)  # fmt: skip
        Path(sm.output.loss).write_bytes((trained / "loss.csv").read_bytes())
        Path(sm.output.summary).write_bytes((trained / "train_summary.json").read_bytes())
        Path(sm.output.vision).write_bytes((seen / "vision_summary.json").read_bytes())
        run.record(
            run_folder=run_id,
            settings={"vision": vision, "train": settings},
            worker_numerics=worker_numerics(trained),
        )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
