# The tiny backbone's foundation stage: a pretraining pool of its own (other patients, another
# seed) and general questions about it, so that the paper's stages start from a model that sees
# the image and answers in the format, as MedGemma-4B does. A real backbone skips both rules.


if TINY:

    rule foundation_data:
        output:
            images=directory(f"{FOUNDATION}/images"),
            findings=f"{FOUNDATION}/findings.jsonl",
            dataset=f"{FOUNDATION}/questions.jsonl",
            lineage=f"{FOUNDATION}/manifest.json",
            packages=f"{FOUNDATION}/manifest.packages.txt",
        log:
            "logs/foundation/data.log",
        benchmark:
            "logs/benchmarks/foundation_data.tsv"
        # The foundation chain (pool, backbone, pretraining) is the critical path: first.
        priority: 50
        conda:
            "../envs/pipeline.yaml"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            pool=FOUNDATION_POOL,
            # Ingestion's own pixel path, so pool images look exactly like the cohort's.
            frame={
                k: config["ingest"][k]
                for k in ("image_size", "crop_fov_mm", "normalize_percentiles")
            },
            questions_per_image=FOUNDATION_CFG["questions_per_image"],
            renamed_share=FOUNDATION_CFG["renamed_share"],
        script:
            "../workflow/scripts/foundation_data.py"

    rule foundation:
        input:
            model=f"{MODEL}/init",
            findings=rules.foundation_data.output.findings,
            data=rules.foundation_data.output.dataset,
        output:
            final=directory(BASE_MODEL),
            summary=f"{MODEL}/foundation/train_summary.json",
            vision=f"{MODEL}/foundation/vision_summary.json",
            loss=report(
                f"{MODEL}/foundation/loss.csv",
                caption="../report/stage_loss.rst",
                category="3 Stage 1",
                subcategory="foundation",
            ),
            lineage=f"{MODEL}/foundation/manifest.json",
            packages=f"{MODEL}/foundation/manifest.packages.txt",
        log:
            "logs/model/foundation.log",
        benchmark:
            "logs/benchmarks/foundation.tsv"
        priority: 50
        conda:
            "../envs/pipeline.yaml"
        threads: 2
        resources:
            gpu=1,
            mem_mb=16000,
            runtime=120,
        params:
            vision=FOUNDATION_CFG["vision"],
            train=FOUNDATION_CFG["train"],
            seed=config["seed"] + 300,
        script:
            "../workflow/scripts/foundation.py"
