# Datasets for the training stages: alignment (1a), cold start (1b), prompts (GPPO, probe, test).


rule coldstart_shard:
    input:
        accepted=rules.rewrite_qc.output.accepted,
        manifest=rules.ingest.output.manifest,
    output:
        shard=f"{DATASETS}/coldstart/{{label}}.jsonl",
        lineage=f"{DATASETS}/coldstart/{{label}}.manifest.json",
        packages=f"{DATASETS}/coldstart/{{label}}.manifest.packages.txt",
    log:
        "logs/datasets/coldstart_{label}.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        label="{label}",
    script:
        "../workflow/scripts/coldstart_shard.py"


rule coldstart_dataset:
    input:
        shards=coldstart_shards,
    output:
        dataset=f"{DATASETS}/coldstart.jsonl",
        lineage=f"{DATASETS}/coldstart.manifest.json",
        packages=f"{DATASETS}/coldstart.manifest.packages.txt",
    log:
        "logs/datasets/coldstart.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow/scripts/coldstart_dataset.py"


rule alignment_dataset:
    input:
        manifest=rules.ingest.output.manifest,
        scrubbed=rules.rewrite_reports.output.scrubbed,
    output:
        dataset=f"{DATASETS}/alignment.jsonl",
        lineage=f"{DATASETS}/alignment.manifest.json",
        packages=f"{DATASETS}/alignment.manifest.packages.txt",
    log:
        "logs/datasets/alignment.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        datasets=config["datasets"],
        seed=config["seed"],
    script:
        "../workflow/scripts/alignment_dataset.py"


rule prompt_datasets:
    input:
        manifest=rules.ingest.output.manifest,
    output:
        rl=f"{DATASETS}/rl_prompts.jsonl",
        probe=f"{DATASETS}/probe.jsonl",
        test=f"{DATASETS}/test.jsonl",
        lineage=f"{DATASETS}/prompts.manifest.json",
        packages=f"{DATASETS}/prompts.manifest.packages.txt",
    log:
        "logs/datasets/prompts.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        test_slices_per_patient=config["datasets"]["test_slices_per_patient"],
    script:
        "../workflow/scripts/prompt_datasets.py"
