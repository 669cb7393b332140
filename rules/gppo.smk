# Stage 2, GPPO. Phase t: quotas from posterior t-1 -> GRPO from checkpoint t-1 (KL to the start
# model), then greedy decoding of the probe split by the same process -> posterior t. Each output
# feeds phase t+1, so rerunning phase t reruns t..T and nothing upstream.


rule gppo_quota:
    input:
        prompts=rules.prompt_datasets.output.rl,
        posterior=previous_posterior,
    output:
        quotas=f"{PHASE}/quotas.json",
        dataset=f"{PHASE}/dataset.jsonl",
        lineage=f"{PHASE}/quota.manifest.json",
        packages=f"{PHASE}/quota.manifest.packages.txt",
    log:
        f"logs/gppo/{{run}}/seed{{seed}}/phase{{phase}}/quota.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        gppo=GPPO_CFG,
    script:
        "../workflow/scripts/gppo_quota.py"


rule gppo_train:
    input:
        model=phase_start_model,
        ref=start_model,
        data=rules.gppo_quota.output.dataset,
        probe=rules.prompt_datasets.output.probe,
    output:
        final=directory(f"{PHASE}/model"),
        # The trained checkpoint's greedy answers on the probe split, decoded before the process
        # ends: a job of its own would pay for Python, torch and the model once more.
        probe=f"{PHASE}/probe.json",
        summary=f"{PHASE}/train_summary.json",
        rewards=f"{PHASE}/rewards.csv",
        # RL health per step: rollout shares and TRL's logged metrics (report figure rl_health).
        health=f"{PHASE}/health.csv",
        batches=f"{PHASE}/batches.jsonl",
        loss=f"{PHASE}/loss.csv",
        lineage=f"{PHASE}/train.manifest.json",
        packages=f"{PHASE}/train.manifest.packages.txt",
    log:
        f"logs/gppo/{{run}}/seed{{seed}}/phase{{phase}}/train.log",
    benchmark:
        f"logs/benchmarks/gppo/{{run}}/seed{{seed}}/phase{{phase}}/train.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=48000,
        runtime=720,
    params:
        gppo=GPPO_CFG,
    script:
        "../workflow/scripts/gppo_train.py"


rule gppo_posterior:
    input:
        probe=rules.gppo_train.output.probe,
        prior=previous_posterior,
    output:
        posterior=f"{PHASE}/posterior.json",
        lineage=f"{PHASE}/posterior.manifest.json",
        packages=f"{PHASE}/posterior.manifest.packages.txt",
    log:
        f"logs/gppo/{{run}}/seed{{seed}}/phase{{phase}}/posterior.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        gppo=GPPO_CFG,
    script:
        "../workflow/scripts/gppo_posterior.py"


rule gppo_summary:
    input:
        sft_probe=rules.sft_check.output.report,
        quotas=run_phases("quotas.json"),
        posteriors=run_phases("posterior.json"),
        probes=run_phases("probe.json"),
        rewards=run_phases("rewards.csv"),
        summaries=run_phases("train_summary.json"),
    output:
        probe=report(
            f"{RUN}/summary/probe_accuracy.csv",
            caption="../report/gppo_probe_table.rst",
            **GPPO_REPORT,
        ),
        quotas=f"{RUN}/summary/quotas.csv",
        rewards=f"{RUN}/summary/rewards.csv",
        phases=f"{RUN}/summary/phases.csv",
        quota_plot=report(
            f"{RUN}/summary/quota_shares.png",
            caption="../report/quota_shares.rst",
            **GPPO_REPORT,
        ),
        posterior_plot=report(
            f"{RUN}/summary/posteriors.png",
            caption="../report/posteriors.rst",
            **GPPO_REPORT,
        ),
        reward_plot=report(
            f"{RUN}/summary/reward_curves.png",
            caption="../report/reward_curves.rst",
            **GPPO_REPORT,
        ),
        lineage=f"{RUN}/summary/manifest.json",
        packages=f"{RUN}/summary/manifest.packages.txt",
        probe_plot=report(
            f"{RUN}/summary/probe_accuracy.png",
            caption="../report/probe_accuracy.rst",
            **GPPO_REPORT,
        ),
    log:
        f"logs/gppo/{{run}}/seed{{seed}}/summary.log",
    conda:
        "../envs/pipeline.yaml"
    script:
        "../workflow/scripts/gppo_summary.py"
