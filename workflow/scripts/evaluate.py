"""Rule evaluate: batched greedy decoding of the test split, likelihood scores, metrics."""

import json
from pathlib import Path

import torch

from cmr_rd.evaluate.harness import evaluate_model, write_outputs
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        settings = sm.params.evaluate
        torch.set_num_threads(sm.threads)
        samples, metrics, timing = evaluate_model(
            sm.params.model, sm.input.test, batch_size=settings["batch_size"],
            max_new_tokens=settings["max_new_tokens"],
            score_batch_size=settings["score_batch_size"], limit=settings["limit"],
        )  # fmt: skip
        metrics = {"model": sm.wildcards.model, "checkpoint": sm.params.model, **metrics}
        # samples.parquet and metrics.json
        write_outputs(Path(sm.output.metrics).parent, samples, metrics)
        # Wall times: kept out of the deterministic outputs.
        Path(sm.output.timing).write_text(json.dumps(timing, indent=2, sort_keys=True) + "\n")
        run.log.info(
            "%s: ACC %.3f, macro F1 %.3f, AUC %s, valid format %.3f, per class %s",
            sm.wildcards.model, metrics["accuracy"], metrics["macro_f1"], metrics["auc_macro"],
            metrics["format_valid_rate"], metrics["per_class_accuracy"],
        )  # fmt: skip


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
