"""The conda environment and the container image: self-contained, and equal to the lock.

Conda and Docker cannot run here (no conda channels, no Docker daemon), so these tests check what
decides whether they work: the YAML Snakemake copies away names no repository file and pins exactly
the lock; the post-deploy script, run from a copy in a fresh environment, installs the no-deps pins
and makes the checkout importable; and the Snakefile hands the checkout's src/ to every job, so a
job imports the library where it is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import yaml

from cmr_rd import envfile
from cmr_rd.devtools import copy_workflow

IMPORT = "import cmr_rd; print(cmr_rd.__file__)"
# Only the target may run (a mistake falls back to the default target: the whole pipeline).
SNAKEMAKE_ARGS = "--allowed-rules import_check --cores 1 --workflow-profile profiles/local".split()


def _lock_lines(path: Path) -> list[str]:
    """The lock as written (not through envfile.read_pins): every line but comments and blanks."""
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that could make cmr_rd importable."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "CMR_RD_SRC"}}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def test_conda_env_pins_exactly_the_lock(repo):
    env = yaml.safe_load((repo / "envs/pipeline.yaml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    *conda, pip_section = env["dependencies"]
    assert conda == [f"python={envfile.PYTHON}", "pip"]
    pins = pip_section["pip"]
    lock = _lock_lines(repo / "requirements.lock")
    assert pins == lock
    assert len(pins) == len(set(pins)) > 100
    # Nothing a copy in .snakemake/conda/ could not resolve: no -r/-e, no path, no URL.
    for pin in pins:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+", pin), pin
    lines = (repo / "envs/pipeline.yaml").read_text().splitlines()
    entries = [line for line in lines if not line.lstrip().startswith("#")]
    assert not [line for line in entries if re.search(r"-\s*-[re]\b|\.\./|\./|file:|://", line)]
    names = {pin.split("==")[0].lower() for pin in pins}
    assert {"torch", "snakemake", "transformers", "opencv-python-headless"} <= names
    # The no-deps packages are not in the pip list (pip would pull their declared dependencies).
    nodeps = {line.split("==")[0].lower() for line in _lock_lines(repo / "requirements-nodeps.txt")}
    assert nodeps and not nodeps & names


def test_generated_files_are_current(repo):
    for path, text in envfile.generated(repo).items():
        assert path.read_bytes() == text.encode(), f"{path.name} is stale: run `make lock`"
    assert envfile.main(["--check"]) == 0
    assert os.access(repo / "envs/pipeline.post-deploy.sh", os.X_OK)
    assert "python -m cmr_rd.envfile" in (repo / "Makefile").read_text()


def test_a_lock_change_reaches_the_env(tmp_path):
    (tmp_path / "envs").mkdir()
    (tmp_path / "requirements.lock").write_text("# comment\nfoo==1.0\nbar-baz==2.0.post1\n")
    (tmp_path / "requirements-nodeps.txt").write_text("# comment\nqux==3.0\n")
    files = envfile.generated(tmp_path)
    env = yaml.safe_load(files[tmp_path / "envs/pipeline.yaml"])
    assert env["dependencies"][-1]["pip"] == ["foo==1.0", "bar-baz==2.0.post1"]
    assert "pip install --no-deps qux==3.0\n" in files[tmp_path / "envs/pipeline.post-deploy.sh"]
    for bad in ("-r requirements.txt", "-e .", "foo>=1.0", "foo @ file:///x.whl", "./pkg"):
        (tmp_path / "requirements.lock").write_text(f"foo==1.0\n{bad}\n")
        with pytest.raises(ValueError, match="requirements.lock:2"):
            envfile.generated(tmp_path)


def _bare_python(path: Path, site_dirs: list[str] = ()) -> Path:
    """A fresh venv without pip; site_dirs are added by a .pth of plain paths, whose own .pth files
    (the editable install of cmr_rd among them) Python does not read."""
    venv.EnvBuilder(with_pip=False).create(path)
    python = path / "bin/python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
        env=_clean_env(),
    ).stdout.strip()
    if site_dirs:
        (Path(purelib) / "deps.pth").write_text("\n".join(site_dirs) + "\n")
    return python


@pytest.fixture(scope="module")
def hooked(tmp_path_factory, repo):
    """A fresh environment after the post-deploy script, run as Snakemake runs it: from a copy
    outside the repository, in another working directory, with the environment's bin on PATH.
    pip is a stub that records its arguments (no network in the tests)."""
    root = tmp_path_factory.mktemp("hooked")
    python = _bare_python(root / "env")
    stub = root / "stub"
    stub.mkdir()
    (stub / "pip").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {root / "pip_args.txt"}\n')
    (stub / "pip").chmod(0o755)
    copy = root / "conda/0123abcd_.post-deploy.sh"
    copy.parent.mkdir()
    shutil.copy(repo / "envs/pipeline.post-deploy.sh", copy)
    path = os.pathsep.join([str(stub), str(python.parent), os.environ["PATH"]])
    subprocess.run(["bash", str(copy)], cwd=root, env=_clean_env(PATH=path), check=True, timeout=60)
    return root, python


def test_post_deploy_installs_nodeps_and_finds_src(hooked, repo):
    root, python = hooked
    args = (root / "pip_args.txt").read_text().split()
    assert args == ["install", "--no-deps", *_lock_lines(repo / "requirements-nodeps.txt")]
    bare = subprocess.run([python, "-c", IMPORT], capture_output=True, text=True, env=_clean_env())
    assert bare.returncode != 0 and "No module named 'cmr_rd'" in bare.stderr
    src = repo / "src"
    found = subprocess.run(
        [python, "-c", IMPORT], capture_output=True, text=True, env=_clean_env(CMR_RD_SRC=str(src))
    )
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == src / "cmr_rd/__init__.py"


def test_jobs_import_the_checkout_without_an_install(tmp_path, hooked, repo):
    """Snakemake and its jobs run on an interpreter that has every dependency but not cmr_rd (the
    .venv's site-packages without its .pth files): the Snakefile must give the checkout's src/ to
    Snakemake itself (rules/common.smk imports cmr_rd), to a job (PYTHONPATH), and to a conda job,
    whose PYTHONPATH Snakemake removes (CMR_RD_SRC, read by the post-deploy script's hook). Then
    the same job under --sdm apptainer, with a stand-in apptainer that runs the command on the host
    and records the image: the `container:` directive, and CMR_RD_IMAGE, reach the job."""
    work = copy_workflow(tmp_path / "wf", repo)
    shutil.copytree(
        repo / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    runner = _bare_python(tmp_path / "runner", [sysconfig.get_path("purelib")])
    _, conda_python = hooked
    env = _clean_env(PATH=os.pathsep.join([str(runner.parent), os.environ["PATH"]]))
    env.pop("CMR_RD_IMAGE", None)
    missing = subprocess.run(
        [runner, "-c", "import snakemake, torch; " + IMPORT],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode != 0 and "No module named 'cmr_rd'" in missing.stderr
    check = IMPORT.replace("print(", "print(__import__('os').environ.get('PYTHONPATH'), ")
    with (work / "Snakefile").open("a") as snakefile:
        snakefile.write(
            "\n\nrule import_check:\n"
            "    output:\n        job='job.txt',\n        conda='conda.txt',\n"
            f'    shell:\n        "python -c \\"{check}\\" > {{output.job}} && '
            f'env -u PYTHONPATH {conda_python} -c \\"{IMPORT}\\" > {{output.conda}}"\n'
        )

    def run(*args: str, **extra: str) -> None:
        result = subprocess.run(
            [runner, "-m", "snakemake", "import_check", *SNAKEMAKE_ARGS, *args],
            cwd=work,
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        init = work / "src/cmr_rd/__init__.py"
        pythonpath, job_file = (work / "job.txt").read_text().split()
        assert pythonpath.split(os.pathsep)[0] == str(work / "src")
        assert Path(job_file) == init
        assert Path((work / "conda.txt").read_text().strip()) == init

    run()
    fake = tmp_path / "fake"
    fake.mkdir()
    images = tmp_path / "images.txt"
    (fake / "apptainer").write_text(
        f"#!{sys.executable}\nimport os, sys\nargs = sys.argv[1:]\n"
        "if args == ['--version']:\n    print('apptainer version 1.3.4'); sys.exit()\n"
        "i = args.index('-c')  # exec ... IMAGE SHELL -c CMD\n"
        f"open({str(images)!r}, 'a').write(args[i - 2] + '\\n')\n"
        "os.execvp(args[i - 1], [args[i - 1], '-c', args[i + 1]])\n"
    )
    (fake / "apptainer").chmod(0o755)
    image = tmp_path / "cmr-rd.sif"
    image.touch()
    env["PATH"] = os.pathsep.join([env["PATH"], str(fake)])
    run("--sdm", "apptainer", "--force", CMR_RD_IMAGE=str(image))
    assert images.read_text().split() == [str(image)]


def test_dockerfile_installs_the_lock_and_post_deploy(repo):
    text = (repo / "Dockerfile").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert re.search(rf"^FROM python:{re.escape(envfile.PYTHON)}-slim\b", code, re.M)
    assert (
        "pip install --no-cache-dir --disable-pip-version-check -r /tmp/cmr-rd/requirements.lock"
        in code
    )
    assert "bash /tmp/cmr-rd/pipeline.post-deploy.sh" in code
    # One source of pins: the image names none of its own, and installs no copy of the library.
    assert "==" not in code and "pip install ." not in code and "src/" not in code
    (copy,) = re.findall(r"^COPY (.+)$", code, re.M)
    *sources, dest = copy.split()
    assert dest == "/tmp/cmr-rd/" and sources == [
        "requirements.lock",
        "envs/pipeline.post-deploy.sh",
    ]
    # The build context is exactly what COPY takes (not .venv, data or results).
    ignore = [
        line
        for line in (repo / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignore == ["*", *(f"!{source}" for source in sources)]
