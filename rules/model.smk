# Stage 1: the backbone, projector-only alignment (1a), cold-start SFT (1b), a probe check.


rule build_backbone:
    input:
        # The tiny tokenizer reads the foundation pool's text, never the cohort's, as a real
        # backbone's predates the cohort: so the foundation stage starts with the first jobs.
        corpus=[rules.foundation_data.output.dataset] if TINY else [],
    output:
        model=directory(BACKBONE),
        lineage=f"{BACKBONE}.manifest.json",
        packages=f"{BACKBONE}.manifest.packages.txt",
    log:
        "logs/model/build_backbone.log",
    benchmark:
        "logs/benchmarks/build_backbone.tsv"
    # The foundation stage's chain is the critical path: it starts first.
    priority: 50
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=16000,
        runtime=30,
    params:
        # Only what shapes the backbone: editing a training or check setting must not rebuild it.
        model={k: config["model"][k] for k in ("base", "tiny")},
        seed=config["seed"],
        # The pool whose reports and chains the tiny tokenizer also reads.
        pool=FOUNDATION_POOL if TINY else None,
    script:
        "../workflow/scripts/build_backbone.py"


rule align:
    input:
        model=BASE_MODEL,
        data=rules.alignment_dataset.output.dataset,
    output:
        final=directory(f"{MODEL}/align/final"),
        summary=f"{MODEL}/align/train_summary.json",
        loss=report(
            f"{MODEL}/align/loss.csv",
            caption="../report/stage_loss.rst",
            category="3 Stage 1",
            subcategory="align",
        ),
        lineage=f"{MODEL}/align/manifest.json",
        packages=f"{MODEL}/align/manifest.packages.txt",
    log:
        "logs/model/align.log",
    benchmark:
        "logs/benchmarks/align.tsv"
    # The critical path: start stage 1 before the base-model runs and evaluations, which then
    # share the machine with it.
    priority: 50
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=240,
    params:
        stage="align",
        train=config["model"]["align"],
        seed=config["seed"] + 301,
    script:
        "../workflow/scripts/train_stage.py"


rule sft:
    input:
        model=rules.align.output.final,
        data=rules.coldstart_dataset.output.dataset,
    output:
        final=directory(f"{SFT}/final"),
        summary=f"{SFT}/train_summary.json",
        loss=report(
            f"{SFT}/loss.csv",
            caption="../report/stage_loss.rst",
            category="3 Stage 1",
            subcategory="sft seed {seed}",
        ),
        lineage=f"{SFT}/manifest.json",
        packages=f"{SFT}/manifest.packages.txt",
    log:
        "logs/model/sft/seed{seed}.log",
    benchmark:
        "logs/benchmarks/sft/seed{seed}.tsv"
    # The critical path: start stage 1 before the base-model runs and evaluations, which then
    # share the machine with it.
    priority: 50
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=480,
    params:
        stage="sft",
        train=config["model"]["sft"],
        # Each seed is its own cold start: the seeds of a table row vary stage 1 as well.
        seed=lambda wildcards: config["seed"] + 302 + 1000 * (int(wildcards.seed) - 1),
    script:
        "../workflow/scripts/train_stage.py"


rule sft_check:
    input:
        model=rules.sft.output.final,
        data=rules.prompt_datasets.output.probe,
    output:
        report=f"{SFT}/probe_check.json",
        lineage=f"{SFT}/probe_check.manifest.json",
        packages=f"{SFT}/probe_check.manifest.packages.txt",
    log:
        "logs/model/sft_check/seed{seed}.log",
    benchmark:
        "logs/benchmarks/sft_check/seed{seed}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=60,
    params:
        check=config["model"]["check"],
    script:
        "../workflow/scripts/sft_check.py"
