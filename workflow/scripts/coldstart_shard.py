"""Rule coldstart_shard: one class's accepted templates as SFT records."""

from pathlib import Path

from cmr_rd.datasets.build import coldstart_records, image_root_of
from cmr_rd.jsonl import read_jsonl, write_jsonl
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        label = sm.params.label
        accepted = [a for a in read_jsonl(Path(sm.input.accepted)) if a["label"] == label]
        records = coldstart_records(accepted, image_root_of(sm.input.manifest))
        write_jsonl(records, Path(sm.output.shard))
        run.record(records=len(records))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
