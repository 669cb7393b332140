"""Rule rewrite_reports: scrub reports, pick the cold-start pool, rewrite behind the PHI gate."""

from pathlib import Path

from cmr_rd.ingest.deid import load_key
from cmr_rd.prompts import TEMPLATE_VERSION
from cmr_rd.rewrite.client import LLMConfig
from cmr_rd.rewrite.phi import SafeList
from cmr_rd.rewrite.stage import PoolConfig, run_rewrite
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        settings = sm.params.rewrite
        key = load_key(
            sm.params.deid["key_env"], sm.params.deid["key_file"], synthetic=sm.params.synthetic
        )
        summary = run_rewrite(
            manifest_path=Path(sm.input.manifest),
            labels_csv=Path(sm.input.labels),
            key=key,
            pool_cfg=PoolConfig(settings["pool_size"], settings["min_per_class"]),
            backend=settings["backend"],
            llm_cfg=LLMConfig(**settings["openai"], template_version=TEMPLATE_VERSION),
            out_dir=Path(sm.output.templates).parent,
            cache_dir=Path(settings["cache_dir"]),
            seed=sm.params.seed,
            safe=SafeList.load(next(iter(sm.input.phi_safe_list), None)),
        )
        run.log.info("rewrite: %s", summary)
        run.record(template_version=TEMPLATE_VERSION, summary=summary)


# Guarded: worker pools that spawn re-import this module and must not rerun the stage.
if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
