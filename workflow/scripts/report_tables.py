"""Rule report_tables: Tables 1, 2, 4, 5 (mean +- std over seeds, 95% bootstrap intervals over
patients) and their patient-level companions, the paper's claims checked against them (with
paired bootstrap p-values), the paper's published tables beside them, and the report's figures.
Every number is read from the evaluations' metrics and samples, the GPPO runs' quota records
and RL-health logs (`health.csv`, `rewards.csv`: the rl_health table and figure, and the
rollout target), and the judge's ratings of the reasoning."""

import json
import shutil
import time
from pathlib import Path

import pandas as pd

from cmr_rd.evaluate.bootstrap import evaluation_draws
from cmr_rd.jsonl import read_jsonl
from cmr_rd.judge import summary as judge_summary
from cmr_rd.report import claims, figures, health, tables
from cmr_rd.stage import RuleRun

TITLES = {
    **tables.TITLES,
    "paper_table1": "Paper, Table 1 (published, reference only): per-class accuracy",
    "paper_table5": "Paper, Table 5 (published, reference only): ablation",
}
PAPER_NOTE = (
    "CMR-RD (CVPR 2026), as published; not produced by this pipeline, never mixed into our rows."
)


def _json(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def samples_of(metrics_path) -> Path:
    """An evaluation's samples.parquet, beside its metrics.json (as report_samples lists them)."""
    return Path(metrics_path).with_name("samples.parquet")


def main(sm) -> None:
    with RuleRun(sm) as run:
        config_rows, notes = sm.params.rows["tables"], sm.params.rows["notes"]
        rows = {
            table: [(label, [_json(p) for p in paths]) for label, paths in entries]
            for table, entries in config_rows.items()
        }
        parts = [
            "# CMR-RD report\n",
            "Produced by the pipeline from results/eval/*/metrics.json and samples.parquet.\n",
        ]
        started = time.perf_counter()
        boot = evaluation_draws(
            {p: pd.read_parquet(samples_of(p)) for p in sm.input.metrics},
            sm.params.bootstrap["iterations"], sm.params.bootstrap["seed"],
        )  # fmt: skip
        run.log.info("bootstrap: %d resamples of %d patients, %d evaluations, in %.2f s",
                     boot.iterations, boot.n_patients, len(boot.slice),
                     time.perf_counter() - started)  # fmt: skip
        built = {}
        for table in tables.TABLE_SPECS:
            base, patient = table.removesuffix("_patient"), table.endswith("_patient")
            draws = tables.row_draws(config_rows[base], boot.patient if patient else boot.slice)
            built[table] = tables.build(table, rows[base], draws)
            note = tables.table_note(table, rows[base], notes[base], boot)
            stem = Path(sm.output[f"{table}_csv"]).with_suffix("")
            tables.write_table(built[table], stem, TITLES[table], note)
            parts.append(Path(sm.output[f"{table}_md"]).read_text(encoding="utf-8"))
        shares = {
            row: [claims.batch_share(pd.read_csv(path)) for path in paths]
            for row, paths in sm.params.claims_quotas.items()
        }
        paired = {t: tables.row_draws(config_rows[t], boot.slice) for t in config_rows}
        checked = claims.claims_table(built, shares, paired, rows)
        # The paper's Fig. 3 claim, from the judge's ratings (its own verdict rule).
        judged = judge_summary.claims_table_rows(pd.read_csv(sm.input.judge_claim))
        checked = pd.concat([checked, judged], ignore_index=True)
        checked.to_csv(sm.output.claims_csv, index=False, float_format="%.6f")
        claims_md = claims.markdown(
            checked, "Claims of the paper, checked against our tables", boot,
            judged=len(judged) > 0,
        )  # fmt: skip
        rl_health = health.load_health(sm.input.health)
        rollouts = health.overall_format_valid(
            rl_health, [r for r in sm.params.runs if r.startswith("sft-")]
        )
        targets = claims.targets_table(rows, checked, rollouts)
        targets.to_csv(sm.output.targets_csv, index=False, float_format="%.6f")
        targets_md = claims.targets_markdown(targets, "The demo's targets")
        Path(sm.output.claims_md).write_text(claims_md + "\n" + targets_md, encoding="utf-8")
        parts.extend([claims_md, targets_md])
        parts.append(
            "### Reasoning quality (the judge; the paper's Fig. 3)\n\n"
            + judge_summary.SUMMARY_NOTE + "\n\n"
            + Path(sm.input.judge_summary).read_text(encoding="utf-8")
        )  # fmt: skip
        rl_table = health.health_table(rl_health, health.class_shares(sm.input.health_rewards))
        rl_table.to_csv(sm.output.rl_health_csv, index=False, float_format="%.6f")
        health.plot_health(rl_health, sm.output.rl_health)
        parts.append("### RL health (per GPPO run and phase, mean over seeds and steps)\n\n"
                     + health.markdown(rl_table))  # fmt: skip
        paper = tables.paper_tables(tables.load_paper_reference(sm.input.paper))
        for table, frame in paper.items():
            stem = Path(sm.output[f"{table}_csv"]).with_suffix("")
            tables.write_table(frame, stem, TITLES[table], PAPER_NOTE)
            parts.append(Path(sm.output[f"{table}_md"]).read_text(encoding="utf-8"))
        Path(sm.output.summary).write_text("\n".join(parts), encoding="utf-8")

        figures.plot_confusion_matrices(
            [(label, [m["confusion"] for m in metrics]) for label, metrics in rows["table1"]],
            sm.output.confusion,
        )
        seed = sm.params.seeds[0]
        figures.plot_gallery(pd.read_parquet(sm.input.gallery), sm.output.gallery,
                             f"Test cases, {sm.params.showcase} seed {seed}",
                             per_class=sm.params.gallery_per_class)  # fmt: skip
        figures.plot_training_curves(
            {
                "align": pd.read_csv(sm.input.stage_losses[0]),
                "sft": pd.read_csv(sm.input.stage_losses[1]),
            },
            [pd.read_csv(p) for p in sm.input.gppo_losses],
            pd.read_csv(sm.input.gppo_rewards),
            sm.output.training_curves,
        )
        from transformers import AutoImageProcessor

        figures.plot_model_inputs(
            read_jsonl(sm.input.test),
            AutoImageProcessor.from_pretrained(sm.input.processor),
            sm.output.model_inputs,
        )
        # Drawn by gppo_summary; copied so results/report is whole.
        for source in sm.input.gppo_figures:
            shutil.copyfile(source, sm.output[Path(source).stem])
        run.log.info("report written: %s", sm.output.summary)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
