"""Rules align and sft: launch the training entry point (accelerate for several GPUs), then
publish its final checkpoint.

Checkpoints live in a run folder named by a fingerprint of the inputs and settings, so a rerun
after preemption resumes, while a changed input or setting starts afresh instead of resuming
someone else's run.
"""

import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from cmr_rd.lineage import describe_inputs, sha256_file, write_manifest
from cmr_rd.stage import setup_logging


def main(sm) -> None:
    log = setup_logging(sm.log[0])
    settings = {**sm.params.train, "seed": sm.params.seed, "threads": sm.threads}
    parent = describe_inputs([sm.input.model])[str(sm.input.model)]
    fingerprint = hashlib.sha256(
        json.dumps(
            {"stage": sm.params.stage, "train": settings, "model": parent["sha256"],
             "data": sha256_file(sm.input.data)}, sort_keys=True
        ).encode()
    ).hexdigest()[:16]  # fmt: skip
    run = Path(sm.output.final).parent / "runs" / fingerprint
    run.mkdir(parents=True, exist_ok=True)
    (run / "train_config.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
    args = ["-m", "cmr_rd.model.cli", "train", "--stage", sm.params.stage, "--model",
            str(sm.input.model), "--data", str(sm.input.data), "--out", str(run),
            "--config", str(run / "train_config.json")]  # fmt: skip
    gpus = int(sm.resources.get("gpu", 0) or 0)
    if gpus > 1:
        cmd = ["accelerate", "launch", "--config_file", "config/accelerate/ddp.yaml",
               "--num_processes", str(gpus), *args]  # fmt: skip
    else:
        cmd = [sys.executable, *args]
    log.info("run folder %s; launching %s", run, " ".join(cmd))
    with open(sm.log[0], "a") as stream:
        child = subprocess.Popen(cmd, stdout=stream, stderr=subprocess.STDOUT)
        # Preemption sends SIGTERM to us; the trainer checkpoints on it, so pass it on.
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        code = child.wait()
    if code != 0:
        log.error("training exited with code %d (143: preempted, rerun to resume)", code)
        sys.exit(code)
    shutil.copytree(run / "final", sm.output.final)
    if (run / "loss.csv").is_file():
        shutil.copy(run / "loss.csv", sm.output.loss)
    else:  # a run shorter than logging_steps logs no step
        Path(sm.output.loss).write_text("step,epoch,loss,learning_rate\n")
    shutil.copy(run / "train_summary.json", sm.output.summary)
    write_manifest(
        sm.output.lineage,
        rule=sm.rule,
        config=sm.config,
        params={"stage": sm.params.stage, "train": settings, "run": fingerprint},
        inputs={"parent_checkpoint": parent, **describe_inputs([sm.input.data])},
        outputs=[sm.output.summary, sm.output.loss],
        extra={"final_sha256": describe_inputs([sm.output.final])[sm.output.final]},
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
