"""Rule evaluate_api: an API-served VLM on the test split (cache, ledger, PHI gate), metrics."""

import json
from pathlib import Path

from cmr_rd.evaluate.api import evaluate_api
from cmr_rd.evaluate.harness import write_outputs
from cmr_rd.rewrite.phi import SafeList
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        entry = sm.params.api_model
        samples, metrics, timing = evaluate_api(
            entry, sm.input.test, cache_dir=sm.params.cache_dir, ledger_path=sm.output.ledger,
            limit=sm.params.limit, safe=SafeList.load(next(iter(sm.input.phi_safe_list), None)),
        )  # fmt: skip
        metrics = {"model": f"api/{sm.wildcards.name}", "checkpoint": entry["model"], **metrics}
        write_outputs(Path(sm.output.metrics).parent, samples, metrics)  # samples + metrics
        # This run's calls, cache hits and cost: kept out of the deterministic outputs.
        Path(sm.output.timing).write_text(json.dumps(timing, indent=2, sort_keys=True) + "\n")
        api = metrics["api"]
        run.log.info(
            "api/%s: ACC %.3f, macro F1 %.3f, AUC %s (%s); ok %d, failed %d, refused %d; "
            "this run %s call(s), %s cache hit(s), $%s",
            sm.wildcards.name, metrics["accuracy"], metrics["macro_f1"], metrics["auc_macro"],
            metrics["auc_note"] or "from log-probabilities", api["ok"], api["failed"],
            api["refused"], timing["calls"], timing["cache_hits"], timing["cost_usd"],
        )  # fmt: skip
        run.record(api_summary=api, this_run=timing)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
