# Evaluation on the test split: any checkpoint (none, s1, a GPPO run's last phase per seed) or a
# zero-shot HF model. Per-sample records, sklearn metrics, per-class likelihood scores for AUC.
# An API-served model (api/NAME) is rule evaluate_api's, below.


rule evaluate:
    input:
        model=eval_checkpoint,
        test=rules.prompt_datasets.output.test,
    output:
        samples=f"{EVAL}/{{model}}/samples.parquet",
        metrics=f"{EVAL}/{{model}}/metrics.json",
        timing=f"{EVAL}/{{model}}/timing.json",
        lineage=f"{EVAL}/{{model}}/manifest.json",
        packages=f"{EVAL}/{{model}}/manifest.packages.txt",
    log:
        f"logs/eval/{{model}}.log",
    benchmark:
        f"logs/benchmarks/eval/{{model}}.tsv"
    wildcard_constraints:
        model=LOCAL_EVAL_KEY,
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=120,
    params:
        model=eval_model_ref,
        # Only the keys the job reads: a new bootstrap count or API model reruns no evaluation.
        evaluate={k: config["evaluate"][k] for k in LOCAL_EVAL_SETTINGS},
    script:
        "../workflow/scripts/evaluate.py"


# An API-served VLM (evaluate.api_models) on the same test split, prompt and parser: chat
# requests with the de-identified PNG, through the LLM client layer. The response cache is not an
# output (Snakemake would delete it before a rerun), so a forced rerun makes zero API calls.
# A local rule (Snakefile): it needs the network, which cluster compute nodes may lack, and no GPU.
rule evaluate_api:
    input:
        test=rules.prompt_datasets.output.test,
        phi_safe_list=phi_safe_list,
    output:
        samples=f"{EVAL}/api/{{name}}/samples.parquet",
        metrics=f"{EVAL}/api/{{name}}/metrics.json",
        timing=f"{EVAL}/api/{{name}}/timing.json",
        ledger=f"{EVAL}/api/{{name}}/ledger.csv",
        ledger_totals=f"{EVAL}/api/{{name}}/ledger.json",
        lineage=f"{EVAL}/api/{{name}}/manifest.json",
        packages=f"{EVAL}/api/{{name}}/manifest.packages.txt",
    log:
        f"logs/eval/api/{{name}}.log",
    benchmark:
        f"logs/benchmarks/eval/api/{{name}}.tsv"
    wildcard_constraints:
        name=API_NAME,
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        api_model=api_model,
        cache_dir=config["evaluate"]["api_cache_dir"],
        limit=config["evaluate"]["limit"],
    script:
        "../workflow/scripts/evaluate_api.py"
