"""Rule ingest_montage: one QC montage per class, boxes drawn, split written on each tile."""

from pathlib import Path

import pandas as pd

from cmr_rd.ingest.montage import class_montage
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        manifest = pd.read_parquet(sm.input.manifest)
        root = Path(sm.input.manifest).parent
        for path in sm.output.montages:
            label = Path(path).stem.removeprefix("montage_")
            class_montage(manifest, root, label, sm.params.per_class).save(path, format="PNG")
            run.log.info("wrote %s", path)


# Guarded: worker pools that spawn re-import this module and must not rerun the stage.
if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
