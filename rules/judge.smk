# Reasoning quality (the paper's Fig. 3): a seeded sample of test cases, every evaluated model's
# chain for each, blinded, rated by the rubric (and GPT-4o, and clinicians' filled sheet).


rule judge:
    input:
        samples=judge_samples,
        test=rules.prompt_datasets.output.test,
        reports=rules.rewrite_reports.output.scrubbed,
        ratings=clinician_ratings,
        phi_safe_list=phi_safe_list,
    output:
        ratings=f"{JUDGE}/ratings.parquet",
        key=f"{JUDGE}/key.csv",
        sheet=f"{JUDGE}/clinician_sheet.csv",
        summary=report(
            f"{JUDGE}/summary.csv",
            caption="../report/judge_summary.rst",
            category="7 Reasoning quality",
        ),
        summary_md=f"{JUDGE}/summary.md",
        claim=f"{JUDGE}/claim.csv",
        claim_md=f"{JUDGE}/claim.md",
        figure=report(
            f"{JUDGE}/ratings.png",
            caption="../report/judge_ratings.rst",
            category="7 Reasoning quality",
        ),
        ledger=f"{JUDGE}/ledger.csv",
        totals=f"{JUDGE}/ledger.json",
        lineage=f"{JUDGE}/manifest.json",
        packages=f"{JUDGE}/manifest.packages.txt",
    log:
        "logs/judge/judge.log",
    benchmark:
        "logs/benchmarks/judge.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        judge=JUDGE_PARAMS,
        seed=JUDGE_SEED,
        showcase=REPORT_CFG["showcase"],
        eval_root=EVAL,
        no_lesion_box=config["rewrite"]["qc"]["no_lesion_box"],
    script:
        "../workflow/scripts/judge.py"
