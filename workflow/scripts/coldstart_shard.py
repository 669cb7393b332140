"""Rule coldstart_shard: one class's accepted templates as SFT records."""

from pathlib import Path

from cmr_rd.datasets.build import coldstart_records, image_root_of
from cmr_rd.jsonl import read_jsonl, write_jsonl
from cmr_rd.lineage import describe_inputs, write_manifest


def main(sm) -> None:
    accepted = [a for a in read_jsonl(Path(sm.input.accepted)) if a["label"] == sm.params.label]
    records = coldstart_records(accepted, image_root_of(sm.input.manifest))
    write_jsonl(records, Path(sm.output.shard))
    write_manifest(
        sm.output.lineage,
        rule=sm.rule,
        config=sm.config,
        params={"label": sm.params.label, "records": len(records)},
        inputs=describe_inputs([sm.input.accepted, sm.input.manifest]),
        outputs=[sm.output.shard],
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
