"""Rule ingest_montage: one QC montage per class, boxes drawn, split written on each tile."""

from pathlib import Path

import pandas as pd

from cmr_rd.ingest.montage import class_montage
from cmr_rd.lineage import describe_inputs, write_manifest
from cmr_rd.stage import setup_logging


def main(sm) -> None:
    log = setup_logging(sm.log[0])
    manifest = pd.read_parquet(sm.input.manifest)
    root = Path(sm.input.manifest).parent
    for path in sm.output.montages:
        label = Path(path).stem.removeprefix("montage_")
        class_montage(manifest, root, label, sm.params.per_class).save(path, format="PNG")
        log.info("wrote %s", path)
    write_manifest(
        Path(sm.output.lineage).parent,
        rule=sm.rule,
        config=sm.config,
        params={"per_class": sm.params.per_class},
        inputs=describe_inputs([sm.input.manifest]),
        outputs=sm.output.montages,
    )


# Guarded: worker pools that spawn re-import this module and must not rerun the stage.
if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
