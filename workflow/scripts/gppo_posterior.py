"""Rule gppo_posterior: greedy decoding of the probe split with the phase's checkpoint; n+ and n-
per class update the Beta posteriors that set the next phase's quotas."""

import json
from pathlib import Path

import torch

from cmr_rd.gppo.posterior import load_prior, update
from cmr_rd.model.generate import check_checkpoint
from cmr_rd.stage import RuleRun, optional_paths


def main(sm) -> None:
    with RuleRun(sm) as run:
        gppo, phase = sm.params.gppo, int(sm.wildcards.phase)
        probe = gppo["probe"]
        torch.set_num_threads(sm.threads)
        report = check_checkpoint(
            Path(sm.input.model), Path(sm.input.probe), limit=probe["limit"],
            batch_size=probe["batch_size"], max_new_tokens=probe["max_new_tokens"],
        )  # fmt: skip
        prior = load_prior(optional_paths(sm.input.prior))
        correct = report["per_class_correct"]
        wrong = {c: report["per_class_n"][c] - correct[c] for c in correct}
        posterior = update(prior, correct, wrong, discount=gppo["discount"])
        result = {
            "phase": phase,
            "run": sm.wildcards.run,
            "discount": gppo["discount"],
            "prior": prior.to_dict(),
            "counts": {"correct": correct, "wrong": wrong},
            "posterior": posterior.to_dict(),
            "posterior_mean": {c: round(v, 6) for c, v in posterior.mean().items()},
            "accuracy": report["accuracy"],
            "valid_format_rate": report["valid_format_rate"],
            "per_class_accuracy": report["per_class_accuracy"],
        }
        report.pop("seconds")  # wall time would make a deterministic rerun differ
        Path(sm.output.probe).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        Path(sm.output.posterior).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        run.log.info("phase %d probe: accuracy %.3f, per class %s", phase, report["accuracy"],
                     report["per_class_accuracy"])  # fmt: skip


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
