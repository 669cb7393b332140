"""Rule alignment_dataset: CMR image-caption pairs (+ PMC-VQA when configured), mixed."""

import json
from pathlib import Path

import pandas as pd

from cmr_rd.datasets.alignment import cmr_caption_records, mix_alignment
from cmr_rd.datasets.build import image_root_of, image_rows
from cmr_rd.datasets.pmcvqa import load_pmcvqa
from cmr_rd.jsonl import read_jsonl, write_jsonl
from cmr_rd.stage import RuleRun, StageError


def main(sm) -> None:
    with RuleRun(sm) as run:
        settings, seed = sm.params.datasets, sm.params.seed
        manifest = pd.read_parquet(sm.input.manifest)
        reports = {r["patient"]: r["report"] for r in read_jsonl(Path(sm.input.scrubbed))}
        images = image_rows(manifest, "train", image_root_of(sm.input.manifest))
        cmr, cmr_problems = cmr_caption_records(images, reports, seed)
        pmc, pmc_problems = [], []
        if settings["pmcvqa_dir"]:
            try:
                pmc, pmc_problems = load_pmcvqa(
                    Path(settings["pmcvqa_dir"]), "train", settings["pmcvqa_limit"], seed
                )
            except FileNotFoundError as exc:
                raise StageError(f"datasets.pmcvqa_dir: {exc}") from None
        else:
            run.log.info("no PMC-VQA path configured (datasets.pmcvqa_dir): CMR pairs only")
        records, summary = mix_alignment(
            cmr, pmc, settings["alignment_pmc_fraction"], settings["alignment_total"], seed
        )
        write_jsonl(records, Path(sm.output.dataset))
        for problem in cmr_problems + pmc_problems:
            run.log.warning("alignment data problem: %s", json.dumps(problem, sort_keys=True))
        run.log.info("alignment mixture: %s", summary)
        run.record(summary=summary, problems=len(cmr_problems) + len(pmc_problems))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
