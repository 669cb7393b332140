"""Config checks with messages that name the offending key, before Snakemake's own validation."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def config_errors(config: dict, schema_path: str | Path) -> list[str]:
    """Every schema violation in `config`, one line each, naming the key (dotted path)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    messages = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path))):
        where = _key_path(error.absolute_path)
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            extra = sorted(set(error.instance) - set(allowed))
            for key in extra:
                full = key if where == "<top level>" else f"{where}.{key}"
                messages.append(f"unknown config key '{full}' (allowed here: {', '.join(allowed)})")
        else:
            messages.append(f"config key '{where}': {error.message}")
    return messages


def load_config(config_path: str | Path, schema_path: str | Path) -> dict:
    """Load a YAML config for use outside Snakemake (benchmarks, notebooks); errors raise."""
    config = yaml.safe_load(Path(config_path).read_text()) or {}
    problems = config_errors(config, schema_path)
    if problems:
        raise ValueError(f"{config_path}: " + "; ".join(problems))
    return config


def load_validated(config_path: str | Path, schema_path: str | Path) -> dict:
    """load_config plus the schema's defaults filled in, as the workflow sees it."""
    from snakemake.utils import validate

    config = load_config(config_path, schema_path)
    validate(config, str(schema_path), set_default=True)
    return config
