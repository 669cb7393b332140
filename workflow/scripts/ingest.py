"""Rule ingest: DICOM/NIfTI tree -> de-identified PNGs, manifest, splits, quarantine."""

from pathlib import Path

from cmr_rd.ingest.deid import load_key
from cmr_rd.ingest.pipeline import IngestConfig, run_ingest
from cmr_rd.ingest.split import SplitConfig
from cmr_rd.stage import RuleRun, StageError


def main(sm) -> None:
    with RuleRun(sm) as run:
        deid = sm.params.deid
        key = load_key(deid["key_env"], deid["key_file"], synthetic=sm.params.synthetic)
        summary = run_ingest(
            dicom_dir=sm.input.dicom_dir,
            nifti_dir=sm.input.get("nifti_dir"),
            labels_csv=sm.input.labels_csv,
            boxes_csv=sm.input.get("boxes_csv"),
            out_dir=Path(sm.output.manifest).parent,
            private_dir=Path(sm.log.file_outcomes).parent,
            key=key,
            cfg=IngestConfig.from_config(sm.params.ingest),
            split_cfg=SplitConfig(**sm.params.split),
            seed=sm.params.seed,
            workers=sm.threads,
        )
        run.log.info(
            "files %d = ingested %d + skipped %d + quarantined %d; %d images of %d patients",
            summary["files_in"], summary["ingested"], summary["skipped"], summary["quarantined"],
            summary["images"], summary["patients"],
        )  # fmt: skip
        if not summary["reconciled"]:
            raise StageError(f"file counts do not reconcile: {summary}")
        run.record(deid_key_origin=key.origin)


# Guarded: worker pools that spawn re-import this module and must not rerun the stage.
if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
