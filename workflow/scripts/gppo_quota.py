"""Rule gppo_quota: Thompson-sample the class quotas from the previous posterior and write the
ordered phase dataset (whole batches of B prompts, each following the quotas)."""

import json
import math
from pathlib import Path

from cmr_rd.gppo.posterior import load_prior
from cmr_rd.gppo.quotas import plan_phase
from cmr_rd.jsonl import read_jsonl, write_jsonl
from cmr_rd.lineage import describe_inputs, write_manifest
from cmr_rd.stage import optional_paths, setup_logging


def main(sm) -> None:
    log = setup_logging(sm.log[0])
    gppo, phase, seed = sm.params.gppo, int(sm.wildcards.phase), int(sm.wildcards.seed)
    strategy = sm.wildcards.run.split("-")[1]
    records = read_jsonl(sm.input.prompts)
    previous = optional_paths(sm.input.posterior)
    prior = load_prior(previous)  # phase 1: Beta(1, 1), or updated with the start model's probe
    batch = gppo["batch_prompts"]
    n_batches = gppo["batches_per_phase"] or math.ceil(len(records) / batch)
    plan = plan_phase(
        [r["label"] for r in records], prior, strategy=strategy, batch_size=batch,
        n_batches=n_batches, pool_threshold=gppo["pool_threshold"], seed=seed, phase=phase,
        redraw=gppo["redraw"],
    )  # fmt: skip
    rows = [{**records[i], "batch": k} for k, ids in enumerate(plan.batches) for i in ids]
    write_jsonl(rows, Path(sm.output.dataset))
    record = {**plan.record, "run": sm.wildcards.run, "prior": prior.to_dict()}
    Path(sm.output.quotas).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    write_manifest(
        sm.output.lineage,
        rule=sm.rule,
        config=sm.config,
        params={"gppo": gppo, "run": sm.wildcards.run, "seed": seed, "phase": phase},
        inputs=describe_inputs([sm.input.prompts, *previous]),
        outputs=[sm.output.quotas, sm.output.dataset],
    )
    log.info("phase %d (%s): quotas %s over %d batches of %d", phase, strategy,
             record["quotas"], n_batches, batch)  # fmt: skip


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
