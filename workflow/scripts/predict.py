"""Rule predict: one study folder -> prediction.json, summary.html, predict.log."""

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see cmr_rd.predict.__main__
import torch  # noqa: E402

from cmr_rd.predict.run import predict_study  # noqa: E402
from cmr_rd.stage import RuleRun  # noqa: E402


def main(sm) -> None:
    with RuleRun(sm) as run:
        torch.set_num_threads(sm.threads)
        prediction = predict_study(
            sm.input.study, sm.params.model, Path(sm.output.prediction).parent,
            ingest=sm.params.ingest, deid=sm.params.deid, synthetic=sm.params.synthetic,
            evaluate=sm.params.evaluate,
        )  # fmt: skip
        run.record(patient=prediction["patient"], diagnosis=prediction["diagnosis"])


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
