# Stage 0: the synthetic cohort (default source), then DICOM/NIfTI ingestion with de-id.


if SYNTHETIC:

    rule synthesize_cohort:
        output:
            dicom=directory(f"{DATA['synthetic']['out_dir']}/dicom"),
            nifti=directory(f"{DATA['synthetic']['out_dir']}/nifti"),
            labels=f"{DATA['synthetic']['out_dir']}/labels.csv",
            boxes=f"{DATA['synthetic']['out_dir']}/boxes.csv",
            phi=f"{DATA['synthetic']['out_dir']}/phi_strings.json",
            summary=f"{DATA['synthetic']['out_dir']}/cohort.json",
            lineage=f"{DATA['synthetic']['out_dir']}/manifest.json",
            packages=f"{DATA['synthetic']['out_dir']}/manifest.packages.txt",
        log:
            "logs/synthesize_cohort.log",
        benchmark:
            "logs/benchmarks/synthesize_cohort.tsv"
        conda:
            "../envs/pipeline.yaml"
        threads: 8
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            synthetic=DATA["synthetic"],
            seed=config["seed"],
        script:
            "../workflow/scripts/synthesize_cohort.py"


rule ingest:
    input:
        unpack(ingest_inputs),
    output:
        manifest=f"{INGEST}/manifest.parquet",
        images=directory(f"{INGEST}/images"),
        counts=report(
            f"{INGEST}/counts.csv",
            caption="../report/ingest_counts.rst",
            category="1 Ingestion",
        ),
        quarantine=f"{INGEST}/quarantine.csv",
        reconcile=f"{INGEST}/reconcile.json",
        lineage=f"{INGEST}/manifest.json",
        packages=f"{INGEST}/manifest.packages.txt",
    log:
        main="logs/ingest/ingest.log",
        file_outcomes="logs/ingest/file_outcomes.csv",
        findings="logs/ingest/findings.csv",
    benchmark:
        "logs/benchmarks/ingest.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 8
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        ingest=config["ingest"],
        split=config["split"],
        deid=config["deid"],
        seed=config["seed"],
        synthetic=SYNTHETIC,
    script:
        "../workflow/scripts/ingest.py"


rule ingest_montage:
    input:
        manifest=rules.ingest.output.manifest,
        images=rules.ingest.output.images,
    output:
        montages=[
            report(path, caption="../report/montage.rst", category="1 Ingestion")
            for path in expand(f"{INGEST}/qc/montage_{{label}}.png", label=CLASSES)
        ],
        lineage=f"{INGEST}/qc/manifest.json",
        packages=f"{INGEST}/qc/manifest.packages.txt",
    log:
        "logs/ingest/montage.log",
    benchmark:
        "logs/benchmarks/ingest_montage.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        per_class=config["ingest"]["montage_per_class"],
    script:
        "../workflow/scripts/ingest_montage.py"
