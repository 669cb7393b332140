"""Rule coldstart_shard: one class's accepted templates as SFT records."""

from pathlib import Path

from cmr_rd.datasets.build import coldstart_records, image_root_of
from cmr_rd.jsonl import read_jsonl, write_jsonl


def main(sm) -> None:
    accepted = [a for a in read_jsonl(Path(sm.input.accepted)) if a["label"] == sm.params.label]
    write_jsonl(coldstart_records(accepted, image_root_of(sm.input.manifest)), Path(sm.output[0]))


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
