"""Rule prompt_datasets: GPPO prompts (train), probe and test prompts, with labels and boxes."""

from pathlib import Path

import pandas as pd

from cmr_rd.datasets.build import image_root_of, prompt_records
from cmr_rd.jsonl import write_jsonl
from cmr_rd.lineage import describe_inputs, write_manifest
from cmr_rd.stage import setup_logging


def main(sm) -> None:
    log = setup_logging(sm.log[0])
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
    log.info("prompt records: %s", counts)
    write_manifest(
        sm.output.lineage,
        rule=sm.rule,
        config=sm.config,
        params={"test_slices_per_patient": sm.params.test_slices_per_patient},
        inputs=describe_inputs([sm.input.manifest]),
        outputs=[sm.output.rl, sm.output.probe, sm.output.test],
        extra={"records": counts},
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
