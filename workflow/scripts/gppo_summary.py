"""Rule gppo_summary: one GPPO run's tables and figures, from the phase artifacts."""

import json
from pathlib import Path

from cmr_rd.gppo import figures
from cmr_rd.gppo.summary import phase_table, probe_table, quota_table, reward_table
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        probes = probe_table(sm.input.sft_probe, list(sm.input.probes))
        probes.to_csv(sm.output.probe, index=False)
        quota_table(list(sm.input.quotas)).to_csv(sm.output.quotas, index=False)
        rewards = reward_table(list(sm.input.rewards))
        rewards.to_csv(sm.output.rewards, index=False)
        phases = phase_table(
            list(sm.input.summaries), list(sm.input.posteriors), list(sm.input.quotas)
        )
        phases.to_csv(sm.output.phases, index=False)
        records = [json.loads(Path(p).read_text()) for p in sm.input.quotas]
        posteriors = [json.loads(Path(p).read_text()) for p in sm.input.posteriors]
        figures.plot_quota_shares(records, sm.output.quota_plot)
        figures.plot_posteriors(
            [posteriors[0]["prior"]] + [p["posterior"] for p in posteriors],
            sm.output.posterior_plot,
        )
        figures.plot_reward_curves(rewards, sm.output.reward_plot)
        stages = [
            (row["stage"], {c: row[c] for c in probes.columns[1:7]}) for _, row in probes.iterrows()
        ]
        figures.plot_probe_accuracy(stages, sm.output.probe_plot)
        run.log.info("probe accuracy per stage:\n%s", probes.to_string(index=False))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
