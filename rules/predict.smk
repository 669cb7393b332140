# Diagnose one new study (predict.study: a scanner's DICOM export folder or a NIfTI volume) with
# a trained model (predict.model; default: the showcase run's first seed, last phase): the LGE
# stack found and de-identified as ingestion does, read as the evaluation reads a test patient.
# In the default target only when a study is configured; otherwise `snakemake predict --config
# predict='{study: PATH}'`. The job's manifest names the study folder (an export's folder names
# carry names and dates), so it is kept with the private logs, not in the output folder.
rule predict:
    input:
        study=predict_study,
        model=predict_model,
    output:
        prediction=f"{PREDICT['out_dir']}/prediction.json",
        summary=f"{PREDICT['out_dir']}/summary.html",
        images=directory(f"{PREDICT['out_dir']}/images"),
        record=f"{PREDICT['out_dir']}/predict.log",
        lineage="logs/predict/manifest.json",
        packages="logs/predict/manifest.packages.txt",
    log:
        "logs/predict/predict.log",
    benchmark:
        "logs/benchmarks/predict.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=32000,
        runtime=30,
    params:
        model=predict_model_ref,
        ingest=config["ingest"],
        deid=config["deid"],
        synthetic=SYNTHETIC,
        evaluate={k: config["evaluate"][k] for k in LOCAL_EVAL_SETTINGS if k != "limit"},
    script:
        "../workflow/scripts/predict.py"
