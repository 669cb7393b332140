"""Rule build_backbone: the tiny Gemma3 (tokenizer trained on the foundation pool's text: its
questions, and the reports, chains and captions of its patients; random weights, which the
foundation stage pretrains), or a copy of the configured real backbone, saved to a path the next
stage loads from."""

import itertools
import json
from pathlib import Path

from cmr_rd.foundation.corpus import pool_texts
from cmr_rd.foundation.pool import PoolConfig
from cmr_rd.model.backbone import TinyConfig, build_tiny, load_backbone
from cmr_rd.stage import RuleRun


def corpus_lines(paths):
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            for message in record["messages"]:
                for part in message["content"]:
                    if part.get("type") == "text":
                        yield part["text"]


def main(sm) -> None:
    with RuleRun(sm) as run:
        settings = sm.params.model
        out = Path(sm.output.model)
        if settings["base"] == "tiny":
            cfg = TinyConfig(**settings["tiny"], seed=sm.params.seed)
            pool = PoolConfig(**sm.params.pool)
            corpus = itertools.chain(corpus_lines(sm.input.corpus), pool_texts(pool, pool.seed))
            build_tiny(out, corpus, cfg)
        else:
            model, processor = load_backbone(settings["base"])
            model.save_pretrained(out)
            processor.save_pretrained(out)
        params = sum(p.numel() for p in load_backbone(str(out))[0].parameters())
        run.log.info("backbone %s: %d parameters", settings["base"], params)
        run.record(parameters=params)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
