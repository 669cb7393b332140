"""Rule coldstart_dataset: the cold-start SFT set, merged from the per-class shards."""

from pathlib import Path

from cmr_rd.jsonl import read_jsonl, write_jsonl
from cmr_rd.lineage import describe_inputs, write_manifest
from cmr_rd.stage import setup_logging


def main(sm) -> None:
    log = setup_logging(sm.log[0])
    records = sorted(
        (r for shard in sm.input.shards for r in read_jsonl(Path(shard))), key=lambda r: r["id"]
    )
    write_jsonl(records, Path(sm.output.dataset))
    counts = {}
    for record in records:
        counts[record["label"]] = counts.get(record["label"], 0) + 1
    log.info("cold-start SFT records: %d %s", len(records), counts)
    write_manifest(
        sm.output.lineage,
        rule=sm.rule,
        config=sm.config,
        params={},
        inputs=describe_inputs(sm.input.shards),
        outputs=[sm.output.dataset],
        extra={"records": len(records), "per_class": dict(sorted(counts.items()))},
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
