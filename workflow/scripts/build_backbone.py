"""Rule build_backbone: the tiny Gemma3 (tokenizer trained on the datasets' text; random weights,
which the foundation stage pretrains), or a copy of the configured real backbone, saved to a path
the next stage loads from."""

import json
import sys
from pathlib import Path

from cmr_rd.lineage import checkpoint_digest, describe_inputs, write_manifest
from cmr_rd.model.backbone import BackboneError, TinyConfig, build_tiny, load_backbone
from cmr_rd.stage import setup_logging


def corpus_lines(paths):
    for path in paths:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            for message in record["messages"]:
                for part in message["content"]:
                    if part.get("type") == "text":
                        yield part["text"]


def main(sm) -> None:
    log = setup_logging(sm.log[0])
    settings = sm.params.model
    out = Path(sm.output.model)
    try:
        if settings["base"] == "tiny":
            cfg = TinyConfig(**settings["tiny"], seed=sm.params.seed)
            build_tiny(out, corpus_lines(sm.input.corpus), cfg)
        else:
            model, processor = load_backbone(settings["base"])
            model.save_pretrained(out)
            processor.save_pretrained(out)
    except BackboneError as exc:
        log.error("model.base: %s", exc)
        sys.exit(2)
    params = sum(p.numel() for p in load_backbone(str(out))[0].parameters())
    log.info("backbone %s: %d parameters", settings["base"], params)
    write_manifest(
        sm.output.lineage,
        rule=sm.rule,
        config=sm.config,
        params={"model": settings, "seed": sm.params.seed},
        inputs=describe_inputs(sm.input.corpus),
        extra={"parameters": params, "model_sha256": checkpoint_digest(out)},
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (injected by Snakemake)
