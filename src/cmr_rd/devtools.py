"""Developer tooling shared by the workflow tests and the benchmarks: a scratch copy of the
workflow (code and config, no data or results) in which Snakemake runs as it would in a clone,
and the key table of config/README.md, generated from config/schema.yaml.

    python -m cmr_rd.devtools [--check]

rewrites the generated table between the markers in config/README.md (run it after editing the
schema); `--check` writes nothing and exits 1 if the table is out of date.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_PARTS = ("Snakefile", "rules", "workflow", "config", "profiles", "envs", "slurm", "report")


def copy_workflow(dst: Path, repo: Path = REPO) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = repo / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dst / part)
    return dst


def snakemake(workdir: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run the venv's Snakemake in workdir; output captured as text. Local runs get the local
    workflow profile (cores, threads), as `make demo` does, unless a profile is named."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    if not {"--profile", "--workflow-profile"} & set(args):
        args = ("--workflow-profile", "profiles/local", *args)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def config_key_table(schema_path: Path = REPO / "config/schema.yaml") -> str:
    """The Markdown table of every config key, generated from the schema (config/README.md)."""
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]

    def walk(node: dict, prefix: str = "") -> None:
        for key, sub in node.get("properties", {}).items():
            name = f"{prefix}{key}"
            kind = sub.get("type", "")
            kind = " or ".join(kind) if isinstance(kind, list) else kind
            if "enum" in sub:
                kind += (
                    " (" + " / ".join("null" if v is None else str(v) for v in sub["enum"]) + ")"
                )
            default = ""
            if sub.get("type") != "object":
                dumped = yaml.safe_dump(sub.get("default"), default_flow_style=True).strip()
                default = f"`{dumped.removesuffix('...').strip()}`"
            meaning = " ".join(sub.get("description", "").split())
            lines.append(f"| `{name}` | {kind} | {default} | {meaning} |")
            walk(sub, name + ".")

    walk(schema)
    return "\n".join(lines) + "\n"


def config_readme_text(
    readme: Path = REPO / "config/README.md", schema_path: Path = REPO / "config/schema.yaml"
) -> str:
    """config/README.md's text with the generated table between its markers regenerated."""
    text = readme.read_text()
    start, end = "<!-- keys:start -->\n", "<!-- keys:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return head + start + config_key_table(schema_path) + end + tail


def update_config_readme(readme: Path = REPO / "config/README.md") -> None:
    """Rewrite the generated table between the markers in config/README.md."""
    readme.write_text(config_readme_text(readme))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmr_rd.devtools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if config/README.md's key table is out of date",
    )
    args = parser.parse_args(argv)
    readme, schema = REPO / "config/README.md", REPO / "config/schema.yaml"
    text = config_readme_text(readme, schema)
    if args.check:
        if readme.read_text() != text:
            print(
                "config/README.md's key table is out of date with config/schema.yaml: "
                "run `python -m cmr_rd.devtools`",
                file=sys.stderr,
            )
            return 1
        return 0
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
