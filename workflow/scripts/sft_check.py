"""Rule sft_check: greedy decoding of the probe split; valid-format rate and accuracy (in a fork
of the local run's warm interpreter where there is one: cmr_rd.warm)."""

from cmr_rd import warm
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        settings = sm.params.check
        with open(sm.log[0], "a") as log:
            result = warm.call(
                "cmr_rd.model.generate:check_job",
                {"model": str(sm.input.model), "data": str(sm.input.data),
                 "report_path": str(sm.output.report), "threads": sm.threads,
                 "limit": settings["limit"], "batch_size": settings["batch_size"],
                 "max_new_tokens": settings["max_new_tokens"]},
                log.fileno(),
            )  # fmt: skip
        report = result["report"]
        run.log.info(
            "probe: %d prompts, valid format %.3f, accuracy %.3f",
            report["n"], report["valid_format_rate"], report["accuracy"],
        )  # fmt: skip
        run.record(worker_numerics=result["numerics"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
