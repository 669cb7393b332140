"""Rule prompt_datasets: GPPO prompts (train), probe and test prompts, with labels and boxes."""

from pathlib import Path

import pandas as pd

from cmr_rd.datasets.build import image_root_of, prompt_records
from cmr_rd.jsonl import write_jsonl
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        manifest = pd.read_parquet(sm.input.manifest)
        root = image_root_of(sm.input.manifest)
        counts = {}
        for split, path, per_patient in (
            ("train", sm.output.rl, None),
            ("probe", sm.output.probe, None),
            ("test", sm.output.test, sm.params.test_slices_per_patient),
        ):
            records = prompt_records(manifest, split, root, per_patient)
            write_jsonl(records, Path(path))
            counts[split] = len(records)
        run.log.info("prompt records: %s", counts)
        run.record(records=counts)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
