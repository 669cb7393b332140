"""Rule coldstart_dataset: the cold-start SFT set, merged from the per-class shards."""

from pathlib import Path

from cmr_rd.jsonl import read_jsonl, write_jsonl
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        shards = [read_jsonl(Path(shard)) for shard in sm.input.shards]
        records = sorted((r for shard in shards for r in shard), key=lambda r: r["id"])
        write_jsonl(records, Path(sm.output.dataset))
        counts = {}
        for record in records:
            counts[record["label"]] = counts.get(record["label"], 0) + 1
        run.log.info("cold-start SFT records: %d %s", len(records), counts)
        run.record(records=len(records), per_class=dict(sorted(counts.items())))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
