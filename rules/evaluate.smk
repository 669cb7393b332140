# Evaluation on the test split: any checkpoint (none, s1, a GPPO run's last phase per seed) or a
# zero-shot HF model. Per-sample records, sklearn metrics, per-class likelihood scores for AUC.


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
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=120,
    params:
        model=eval_model_ref,
        evaluate=config["evaluate"],
    script:
        "../workflow/scripts/evaluate.py"
