"""Rule gppo_posterior: n+ and n- per class, from the phase checkpoint's greedy answers on the
probe split (decoded by gppo_train), update the Beta posteriors that set the next phase's
quotas."""

import json
from pathlib import Path

from cmr_rd.gppo.posterior import load_prior, update
from cmr_rd.stage import RuleRun, optional_paths


def main(sm) -> None:
    with RuleRun(sm) as run:
        gppo, phase = sm.params.gppo, int(sm.wildcards.phase)
        report = json.loads(Path(sm.input.probe).read_text())
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
        Path(sm.output.posterior).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        run.log.info("phase %d probe: accuracy %.3f, per class %s", phase, report["accuracy"],
                     report["per_class_accuracy"])  # fmt: skip


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
