"""Rule ingest: DICOM/NIfTI tree -> de-identified PNGs, manifest, splits, quarantine."""

import sys
from pathlib import Path

from cmr_rd.ingest.burned_in import OcrUnavailable
from cmr_rd.ingest.deid import MissingKeyError, load_key
from cmr_rd.ingest.pipeline import IngestConfig, InputError, run_ingest
from cmr_rd.ingest.split import SplitConfig
from cmr_rd.lineage import describe_inputs, write_manifest
from cmr_rd.stage import setup_logging


def main(sm) -> None:
    log = setup_logging(sm.log.main)
    deid = sm.params.deid
    try:
        key = load_key(deid["key_env"], deid["key_file"], synthetic=sm.params.synthetic)
        out_dir = Path(sm.output.manifest).parent
        summary = run_ingest(
            dicom_dir=sm.input.dicom_dir,
            nifti_dir=sm.input.get("nifti_dir"),
            labels_csv=sm.input.labels_csv,
            boxes_csv=sm.input.get("boxes_csv"),
            out_dir=out_dir,
            private_dir=Path(sm.log.file_outcomes).parent,
            key=key,
            cfg=IngestConfig.from_config(sm.params.ingest),
            split_cfg=SplitConfig(**sm.params.split),
            seed=sm.params.seed,
            workers=sm.threads,
        )
    except (InputError, MissingKeyError, OcrUnavailable) as exc:
        log.error("%s", exc)
        sys.exit(1)
    log.info(
        "files %d = ingested %d + skipped %d + quarantined %d; %d images of %d patients",
        summary["files_in"], summary["ingested"], summary["skipped"], summary["quarantined"],
        summary["images"], summary["patients"],
    )  # fmt: skip
    if not summary["reconciled"]:
        log.error("file counts do not reconcile: %s", summary)
        sys.exit(1)
    write_manifest(
        out_dir,
        rule=sm.rule,
        config=sm.config,
        params={"ingest": sm.params.ingest, "split": sm.params.split, "seed": sm.params.seed,
                "deid_key_origin": key.origin},
        inputs=describe_inputs(sm.input),
        outputs=[sm.output.manifest, sm.output.images, sm.output.counts, sm.output.quarantine,
                 sm.output.reconcile],
    )  # fmt: skip


# Guarded: worker pools that spawn re-import this module and must not rerun the stage.
if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
