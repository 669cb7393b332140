"""Diagnose a new study: a scanner's export folder (or a NIfTI volume) to an explained,
patient-level result, with the pipeline's own code paths.

    python -m cmr_rd.predict STUDY_DIR --model PATH --out DIR

- `study`: the LGE short-axis stack found, de-identified and rendered as ingestion does;
- `model`: the checkpoint loaded as the evaluation loads it, read with its greedy decoding,
  per-class answer likelihoods and patient pooling, and traced to the run that produced it;
- `outputs`: prediction.json and a self-contained one-page summary.html;
- `run`: the three in order, with the log (DIR/predict.log).

Research software, not a medical device.
"""

from cmr_rd.predict.study import PredictInputError

__all__ = ["PredictInputError"]
