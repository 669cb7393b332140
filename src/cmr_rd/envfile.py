"""The conda environment for `--software-deployment-method conda`, generated from the lock.

Snakemake does not create a rule's environment from the repository: it copies the YAML into its
conda prefix (`.snakemake/conda/<hash>_.yaml`, `create_env` in snakemake/deployment/conda.py,
9.27.1) and hashes the YAML's bytes (plus the post-deploy script's, `_get_hash`), and conda runs
pip with that copy's folder as working directory (conda/env/installers/pip.py,
`pip_workdir = dirname(abspath(file))`). A pip entry that names a repository file (`-r
../requirements.txt`, `-e ..`) therefore points into `.snakemake/` and fails, and a change to the
file it names would not change the hash either. Snakemake copying `-r` files along is an open pull
request (snakemake/snakemake#3940). The post-deploy script is copied the same way (to
`<prefix>/<hash>_.post-deploy.sh`) and runs from the working directory, so it cannot name a
repository file either.

So both files are self-contained: `envs/pipeline.yaml` lists every pin of requirements.lock, and
`envs/pipeline.post-deploy.sh` installs those of requirements-nodeps.txt by name. Neither installs
this package: the Snakefile puts the checkout's src/ on the path of Snakemake and of every job (see
`SRC_HOOK`). `make lock` regenerates both after the lock; `--check` says whether they are stale.

    python -m cmr_rd.envfile [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = "3.11"
# A pin as `pip freeze` writes it; anything else (an option, a path, a URL) has no place in a
# file that Snakemake copies away from the repository.
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")
# Snakemake removes PYTHONPATH from the environment of a conda job (shell.py,
# `conda_block_conflicting_envvars`, unless --conda-not-block-search-path-envvars), and the
# training stages start `python -m cmr_rd...` children. This line, a `.pth` file in the
# environment's site-packages, puts the folders in CMR_RD_SRC (the Snakefile sets it to the
# checkout's src/) first on sys.path of every interpreter of the environment; unset, it does
# nothing. Python runs a `.pth` line that starts with `import` at start-up (the site module).
SRC_HOOK = (
    "import os, sys; "
    "sys.path[:0] = [p for p in os.environ.get('CMR_RD_SRC', '').split(os.pathsep)"
    " if p and p not in sys.path]"
)


def read_pins(path: Path) -> list[str]:
    """The `name==version` lines of a requirements file, in order; an error on any other line."""
    pins = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not PIN.match(line):
            raise ValueError(f"{path}:{number}: not a name==version pin: {raw!r}")
        pins.append(line)
    return pins


def conda_env(lock: list[str]) -> str:
    """envs/pipeline.yaml: Python from conda-forge, everything else the lock's pins, via pip."""
    head = f"""\
# GENERATED from requirements.lock by `make lock` (python -m cmr_rd.envfile): do not edit.
# The rules' environment under --software-deployment-method conda (docs/usage.md, "Software on
# a cluster"). Snakemake creates it from a copy of this file in its conda prefix, where a pip entry
# naming a repository file (-r ../requirements.txt, -e ..) would not resolve: every pin is listed
# here. The torch pin, from PyPI, is the CUDA build on Linux x86_64 (pip adds its nvidia-* wheels,
# which the lock, frozen on a CPU machine, does not list). rapidocr-onnxruntime
# (requirements-nodeps.txt) goes in without its dependencies in pipeline.post-deploy.sh. This
# package is not installed: the Snakefile puts the checkout's src/ on the path.
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python={PYTHON}
  - pip
  - pip:
"""
    return head + "".join(f"      - {pin}\n" for pin in lock)


def post_deploy(nodeps: list[str]) -> str:
    """envs/pipeline.post-deploy.sh: the no-deps pins, and the hook that finds src/."""
    pins = " ".join(nodeps)
    return f"""\
#!/usr/bin/env bash
# GENERATED from requirements-nodeps.txt by `make lock` (python -m cmr_rd.envfile): do not edit.
# Snakemake runs this once in the new environment of envs/pipeline.yaml, from a copy in its conda
# prefix and in the working directory, so it names no repository file. The Dockerfile runs it too.
set -euo pipefail
# rapidocr-onnxruntime without its declared opencv-python (the GUI build needs libGL);
# requirements.lock pins the headless build it runs on.
pip install --no-deps {pins}
# Snakemake drops PYTHONPATH in conda jobs; this .pth puts $CMR_RD_SRC (set by the Snakefile to
# the checkout's src/) first on sys.path instead, for the jobs and the processes they start.
site=$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
cat > "$site/cmr_rd_src.pth" <<'EOF'
{SRC_HOOK}
EOF
"""


def generated(repo: Path = REPO) -> dict[Path, str]:
    """Each generated file and the text it should hold."""
    lock = read_pins(repo / "requirements.lock")
    nodeps = read_pins(repo / "requirements-nodeps.txt")
    return {
        repo / "envs/pipeline.yaml": conda_env(lock),
        repo / "envs/pipeline.post-deploy.sh": post_deploy(nodeps),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.relative_to(REPO).as_posix())
        if not args.check:
            path.write_text(text)
            if path.suffix == ".sh":
                path.chmod(0o755)
    if args.check and stale:
        print("stale, run `make lock`: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
