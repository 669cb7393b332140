# Stage 1b data: reports -> PHI gate -> o3 (or offline) templates -> QC checkpoint.


rule rewrite_reports:
    input:
        manifest=rules.ingest.output.manifest,
        labels=ingest_inputs()["labels_csv"],
        phi_safe_list=phi_safe_list,
    output:
        templates=f"{REWRITE}/templates.jsonl",
        scrubbed=f"{REWRITE}/scrubbed_reports.jsonl",
        ledger=f"{REWRITE}/ledger.csv",
        totals=f"{REWRITE}/ledger.json",
        lineage=f"{REWRITE}/manifest.json",
        packages=f"{REWRITE}/manifest.packages.txt",
    log:
        "logs/rewrite/rewrite_reports.log",
    benchmark:
        "logs/benchmarks/rewrite_reports.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=240,
    params:
        rewrite=config["rewrite"],
        deid=config["deid"],
        seed=config["seed"],
        synthetic=SYNTHETIC,
    script:
        "../workflow/scripts/rewrite_reports.py"


checkpoint rewrite_qc:
    input:
        templates=rules.rewrite_reports.output.templates,
        decisions=review_decisions,
        phi_safe_list=phi_safe_list,
    output:
        accepted=f"{REWRITE}/qc/accepted.jsonl",
        sheet=f"{REWRITE}/qc/review_sheet.csv",
        summary=report(
            f"{REWRITE}/qc/qc_summary.csv",
            caption="../report/qc_summary.rst",
            category="2 Rewriting QC",
        ),
        lineage=f"{REWRITE}/qc/manifest.json",
        packages=f"{REWRITE}/qc/manifest.packages.txt",
    log:
        "logs/rewrite/rewrite_qc.log",
    benchmark:
        "logs/benchmarks/rewrite_qc.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        qc=config["rewrite"]["qc"],
    script:
        "../workflow/scripts/rewrite_qc.py"
