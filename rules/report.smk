# The report: Tables 1, 2, 4 and 5 (mean +- std over seeds, 95% bootstrap intervals over test
# patients) and their patient-level companions beside the paper's published numbers, the paper's
# claims checked against them (paired bootstrap p-values), and the figures, all from the
# evaluations and run artifacts. `snakemake --report` renders them.


rule report_tables:
    input:
        metrics=report_metrics,
        samples=report_samples,  # the bootstrap resamples patients from these
        paper="report/paper_reference.yaml",
        gallery=f"{EVAL}/{REPORT_CFG['showcase']}/seed{GPPO_CFG['seeds'][0]}/samples.parquet",
        # The processor the model reads images through, for the model-input figure.
        processor=BASE_MODEL,
        test=rules.prompt_datasets.output.test,
        stage_losses=[
            rules.align.output.loss,
            rules.sft.output.loss.format(seed=GPPO_CFG["seeds"][0]),
        ],
        gppo_losses=expand(
            showcase("phase{t}/loss.csv"), t=range(1, GPPO_CFG["phases"] + 1)
        ),
        gppo_rewards=showcase("summary/rewards.csv"),
        # RL health of every run, seed and phase (figure and table rl_health).
        health=every_phase("health.csv"),
        health_rewards=every_phase("rewards.csv"),
        gppo_figures=[showcase(f"summary/{name}.png") for name in REPORT_COPIES],
        quotas=[path for paths in claims_quotas().values() for path in paths],
        # The reasoning-quality table and its claim (rule judge).
        judge_summary=rules.judge.output.summary_md,
        judge_claim=rules.judge.output.claim,
    output:
        **report_outputs(),
    log:
        "logs/report/report_tables.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        rows=report_rows(),
        # Resamples of the test patients; their stream is seeded from the top-level seed.
        bootstrap={
            "iterations": config["evaluate"]["bootstrap"],
            "seed": config["seed"],
        },
        claims_quotas=claims_quotas(),
        showcase=REPORT_CFG["showcase"],
        seeds=GPPO_CFG["seeds"],
        runs=GPPO_CFG["runs"],
        gallery_per_class=REPORT_CFG["gallery_per_class"],
    script:
        "../workflow/scripts/report_tables.py"
