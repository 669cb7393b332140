"""Rule judge: blinded ratings of the evaluated models' reasoning chains, per model and judge."""

from pathlib import Path

from cmr_rd.judge.stage import JudgeConfig, Outputs, llm_config, run_judge
from cmr_rd.rewrite.phi import SafeList
from cmr_rd.stage import RuleRun


def main(sm) -> None:
    with RuleRun(sm) as run:
        settings = sm.params.judge
        cfg = JudgeConfig(
            backend=settings["backend"],
            per_class=settings["per_class"],
            seed=sm.params.seed,
            bootstrap=settings["bootstrap"],
            send_image=settings["send_image"],
            no_lesion_box=tuple(sm.params.no_lesion_box),
        )
        out = sm.output
        summary = run_judge(
            samples_paths=[Path(p) for p in sm.input.samples],
            eval_root=Path(sm.params.eval_root),
            test_path=Path(sm.input.test),
            reports_path=Path(sm.input.reports),
            ratings_path=Path(sm.input.ratings[0]) if sm.input.ratings else None,
            cfg=cfg,
            llm_cfg=llm_config(settings["openai"]) if cfg.backend == "openai" else None,
            cache_dir=Path(settings["cache_dir"]),
            showcase=sm.params.showcase,
            safe=SafeList.load(next(iter(sm.input.phi_safe_list), None)),
            out=Outputs(
                ratings=Path(out.ratings),
                key=Path(out.key),
                sheet=Path(out.sheet),
                summary=Path(out.summary),
                summary_md=Path(out.summary_md),
                claim=Path(out.claim),
                claim_md=Path(out.claim_md),
                figure=Path(out.figure),
                ledger=Path(out.ledger),
            ),
        )
        run.log.info("judge: %s", summary)
        run.record(seed=cfg.seed, summary=summary)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
