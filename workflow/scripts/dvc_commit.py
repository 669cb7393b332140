"""Rule dvc_commit: regenerate dvc.yaml, `dvc commit` every stage's hashes, push to dvc.remote."""

from pathlib import Path

from cmr_rd.dvcgen import commit, write_record
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm):  # no lineage manifest: the commit record and dvc.lock are the lineage
        record = commit(".", list(sm.params.configfiles), remote=sm.params.remote)
        write_record(Path(sm.output.record), record)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
