"""Rule evaluate: batched greedy decoding of the test split, likelihood scores, metrics (in a fork
of the local run's warm interpreter where there is one: cmr_rd.warm)."""

from cmr_rd import warm
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        settings = sm.params.evaluate
        with open(sm.log[0], "a") as log:
            result = warm.call(
                "cmr_rd.evaluate.harness:evaluate_job",
                {"name": str(sm.wildcards.model), "model": str(sm.params.model),
                 "test": str(sm.input.test),
                 "metrics_path": str(sm.output.metrics), "timing_path": str(sm.output.timing),
                 "threads": sm.threads, "batch_size": settings["batch_size"],
                 "max_new_tokens": settings["max_new_tokens"],
                 "score_batch_size": settings["score_batch_size"], "limit": settings["limit"]},
                log.fileno(),
            )  # fmt: skip
        metrics = result["metrics"]
        run.log.info(
            "%s: ACC %.3f, macro F1 %.3f, AUC %s, valid format %.3f, per class %s",
            sm.wildcards.model, metrics["accuracy"], metrics["macro_f1"], metrics["auc_macro"],
            metrics["format_valid_rate"], metrics["per_class_accuracy"],
        )  # fmt: skip
        run.record(worker_numerics=result["numerics"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
