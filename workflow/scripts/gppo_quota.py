"""Rule gppo_quota: Thompson-sample the class quotas from the previous posterior and write the
ordered phase dataset (whole batches of B prompts, each following the quotas)."""

import json
import math
from pathlib import Path

from cmr_rd.gppo.posterior import load_prior
from cmr_rd.gppo.quotas import plan_phase
from cmr_rd.gppo.runs import RunName
from cmr_rd.jsonl import read_jsonl, write_jsonl
from cmr_rd.stage import RuleRun, optional_paths


def main(sm) -> None:
    with RuleRun(sm) as run:
        gppo, phase, seed = sm.params.gppo, int(sm.wildcards.phase), int(sm.wildcards.seed)
        strategy = RunName.parse(sm.wildcards.run).sampling
        records = read_jsonl(sm.input.prompts)
        # Phase 1: Beta(1, 1), or updated with the start model's probe check.
        prior = load_prior(optional_paths(sm.input.posterior))
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
        run.log.info("phase %d (%s): quotas %s over %d batches of %d", phase, strategy,
                     record["quotas"], n_batches, batch)  # fmt: skip


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
