"""The pages a newcomer walks: README.md, CHANGELOG.md and docs/*.md.

Every relative link resolves inside the repository (a `#anchor` against the target page's
headings, as GitHub makes them); every `python -m cmr_rd.X` the pages name answers `--help`;
every `make X` is a Makefile target; every dotted config key is in config/schema.yaml. Right after
a `make demo`, the README's Table 5 and its digests are those of results/, read for the CPU vendor
the demo ran on (that test skips without a demo, or for a vendor the pages have no figures of;
CMR_RD_DOCS_DEMO_ROOT points it at another checkout's finished demo). Fast: no workflow
runs, only the named modules' `--help`, side by side.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest
import yaml

from cmr_rd import numerics

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# A backticked word that ends like a file name is a file, not a config key (`report.md`).
FILE_SUFFIXES = {
    "bin", "csv", "html", "json", "jsonl", "lock", "log", "md", "parquet", "png", "py", "rst",
    "safetensors", "sif", "smk", "tex", "tsv", "txt", "yaml", "yml",
}  # fmt: skip
DIGESTS = re.compile(r"<!-- digests:start -->(.*?)<!-- digests:end -->", re.S)


def doc_files() -> list[Path]:
    return [README, REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]


@cache
def split_code(path: Path) -> tuple[str, str]:
    """(prose, code): the page with fenced blocks blanked out, and the fenced blocks' text."""
    prose, code, fence = [], [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        marker = re.match(r"\s*(`{3,}|~{3,})", line)
        if fence is None and marker:
            fence = marker.group(1)
            prose.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            else:
                code.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), "\n".join(code)


def inline_code(prose: str) -> list[str]:
    """Backtick spans of the prose (a span may wrap onto the next line, never across a blank)."""
    return [span for span in re.findall(r"`([^`]+)`", prose) if "\n\n" not in span]


def without_code(prose: str) -> str:
    return re.sub(r"`[^`]+`", "", prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    prose, _ = split_code(path)
    seen: dict[str, int] = {}
    found = set(re.findall(r"""<a\s+(?:id|name)=["']([^"']+)["']""", prose))
    for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", prose, re.M):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(path: Path) -> list[str]:
    text = without_code(split_code(path)[0])
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    targets += re.findall(r"""<img\s[^>]*src=["']([^"']+)["']""", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I)]


def link_problems(path: Path) -> list[str]:
    problems = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(REPO)}: ({target})"
        if not dest.is_relative_to(REPO):
            problems.append(f"{where} leaves the repository")
        elif not dest.exists():
            problems.append(f"{where} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading #{anchor} in {dest.relative_to(REPO)}")
        elif anchor and dest.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not Markdown")
    return problems


def ignored_by_git(paths: list[Path]) -> set[str]:
    """The paths among these that git ignores (absent from a fresh clone)."""
    if not paths or shutil.which("git") is None or not (REPO / ".git").exists():
        return set()
    result = subprocess.run(
        ["git", "check-ignore", "--stdin"],
        cwd=REPO,
        input="\n".join(str(p.relative_to(REPO)) for p in paths),
        capture_output=True,
        text=True,
    )
    return set(result.stdout.split())


def test_every_relative_link_resolves_inside_the_repository():
    problems = [problem for page in doc_files() for problem in link_problems(page)]
    assert not problems, "broken links:\n  " + "\n  ".join(problems)


def test_no_link_points_at_a_file_a_fresh_clone_lacks():
    targets = set()
    for page in doc_files():
        for target in links(page):
            file_part = target.partition("#")[0]
            dest = (page.parent / file_part).resolve()
            if file_part and dest.is_relative_to(REPO) and dest.exists():
                targets.add(dest)
    ignored = ignored_by_git(sorted(targets))
    assert not ignored, f"links to git-ignored files: {sorted(ignored)}"


def test_link_check_catches_a_broken_link_and_anchor(tmp_path, monkeypatch):
    """The checker itself can fail: a missing file, a missing heading, a path out of the repo."""
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/a.md").write_text("# A page\n\n## The `x.y` key: ours\n")
    page = tmp_path / "docs/b.md"
    page.write_text(
        "[ok](a.md#the-xy-key-ours) [gone](missing.md) [bad](a.md#nowhere) [out](../../x.md)\n"
        "```\n[in code](not-checked.md)\n```\n"
    )
    anchors.cache_clear(), split_code.cache_clear()
    problems = link_problems(page)
    anchors.cache_clear(), split_code.cache_clear()
    assert len(problems) == 3, problems
    assert any("missing.md" in p for p in problems)
    assert any("#nowhere" in p for p in problems)
    assert any("leaves the repository" in p for p in problems)


def named_modules() -> set[str]:
    found = set()
    for page in doc_files():
        text = page.read_text(encoding="utf-8")
        found |= set(re.findall(r"python3?\s+-m\s+(cmr_rd(?:\.[A-Za-z_]\w*)+)", text))
    return found


def _help(module: str) -> tuple[str, bool, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    # A module without a command line would run and exit 0: its help must say how to call it.
    ok = result.returncode == 0 and "usage:" in result.stdout.lower()
    return module, ok, f"exit {result.returncode}: {(result.stderr or result.stdout)[-500:]}"


def test_every_named_module_exists_and_answers_help():
    modules = named_modules()
    assert {"cmr_rd.audit", "cmr_rd.predict"} <= modules, "the module search found too little"
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert not missing, f"the docs name modules that do not exist: {missing}"
    runnable = sorted(modules)
    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = [(module, why) for module, ok, why in pool.map(_help, runnable) if not ok]
    assert not failed, "`python -m MODULE --help` printed no usage:\n" + "\n".join(
        f"  {module} ({why})" for module, why in failed
    )


def makefile_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\- ]+):(?!=)", line)
        if match:
            targets |= set(match.group(1).split())
    return targets - {".PHONY"}


def named_make_targets() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for page in doc_files():
        prose, code = split_code(page)
        for text in [code, *inline_code(prose)]:
            for target in re.findall(r"(?<![\w./-])make\s+([A-Za-z][\w-]*)(?![\w=-])", text):
                found.setdefault(target, set()).add(page.name)
    return found


def test_every_named_make_target_exists():
    named, targets = named_make_targets(), makefile_targets()
    assert {"demo", "test"} <= named.keys(), "the README must name `make demo` and `make test`"
    unknown = {t: sorted(pages) for t, pages in named.items() if t not in targets}
    assert not unknown, f"make targets the Makefile lacks: {unknown}"


@cache
def schema_keys() -> frozenset[str]:
    """Every dotted key of config/schema.yaml, walked as tests/test_config.py walks it."""
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    keys = set()

    def walk(node: dict, prefix: str = "") -> None:
        for key, sub in node.get("properties", {}).items():
            keys.add(prefix + key)
            walk(sub, f"{prefix}{key}.")

    walk(schema)
    return frozenset(keys)


def named_config_keys() -> dict[str, set[str]]:
    """Backticked dotted names whose first part is a top-level config section, alone or as
    `key: value` / `key=value`; file names (`report.md`, `dvc.lock`) are not keys."""
    sections = {key for key in schema_keys() if "." not in key}
    found: dict[str, set[str]] = {}
    for page in doc_files():
        for span in inline_code(split_code(page)[0]):
            match = re.fullmatch(r"([a-z_]+(?:\.[A-Za-z0-9_*]+)+)(?:\s*[:=].*)?", span.strip())
            if not match:
                continue
            key = match.group(1)
            if key.split(".")[0] in sections and key.rsplit(".", 1)[1] not in FILE_SUFFIXES:
                found.setdefault(key, set()).add(page.name)
    return found


def test_every_named_config_key_is_in_the_schema():
    named, keys = named_config_keys(), schema_keys()
    assert {"data.source", "gppo.train.temperature"} <= named.keys(), "key search found too little"
    unknown = {
        key: sorted(pages)
        for key, pages in named.items()
        if not (fnmatch.filter(keys, key) if "*" in key else key in keys)
    }
    assert not unknown, f"config keys the schema lacks: {unknown}"


def test_readme_is_short_and_one_click_from_the_three_questions():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200, "README.md is over 200 lines"
    for target in (
        "docs/usage.md#your-own-data-on-a-slurm-cluster",  # own data on SLURM
        "docs/output.md",  # every output file
        "docs/performance.md",  # today's performance
    ):
        assert f"]({target})" in text, f"README.md does not link {target}"
    assert len(DIGESTS.findall(text)) == 1, "README.md needs one digests:start/end block"


@pytest.fixture
def demo_root() -> Path:
    root = Path(os.environ.get("CMR_RD_DOCS_DEMO_ROOT", REPO))
    if not (root / "results/report/table5.csv").is_file():
        pytest.skip(f"no demo in {root}: results/report/table5.csv is absent (run make demo)")
    return root


# The README's digests come in one block per kind of machine (`<!-- cpu: GenuineIntel -->`), and
# its Table 5 names the kind it was made on: the pinned numerics give the same bytes on one kind
# of CPU, not across vendors (docs/numerics.md). A kind is the CPU vendor, and the numerics mode
# where the mode changes the arithmetic there (`GenuineIntel/portable`: MKL's COMPATIBLE branch
# on an Intel CPU, whose figures docs/numerics.md and docs/evaluation.md hold).
CPU_BLOCK = re.compile(r"<!-- cpu: (\S+) -->\s*```bash\n(.*?)```", re.S)
TABLE5_CPU = re.compile(r"<!-- table5 cpu: (\S+) -->")


def _demo_cpu(root: Path) -> dict:
    """The CPU the demo's report was made on, as its manifest records it."""
    return _demo_numerics(root)["cpu"]


def _demo_numerics(root: Path) -> dict:
    manifest = json.loads((root / "results/report/manifest.json").read_text(encoding="utf-8"))
    recorded = (manifest.get("environment") or {}).get("numerics") or {}
    if not (recorded.get("cpu") or {}).get("vendor"):
        pytest.skip("the demo's report manifest records no CPU (made before cmr_rd.numerics)")
    return recorded


def _demo_kind(root: Path) -> str:
    """`VENDOR` for a demo made under the default pins of its CPU, `VENDOR/portable` under the
    portable ones where they differ (an Intel CPU), from the pins its manifest records."""
    recorded = _demo_numerics(root)
    cpu = recorded["cpu"]
    pins = {k: v for k, v in (recorded.get("pins") or {}).items() if v is not None}
    if recorded.get("mode") == "native" or not pins:
        pytest.skip("the demo ran unpinned (CMR_RD_NUMERICS=native): no published figures")
    if pins == numerics.pins("pinned", cpu):
        return cpu["vendor"]
    if pins == numerics.pins("portable", cpu):
        return f"{cpu['vendor']}/portable"
    pytest.skip(f"the demo ran under pins that no mode sets today: {pins}")


def _page_of(demo_root: Path) -> tuple[str, str]:
    """The page holding the figures of the demo's kind of machine: the README for the kind its
    Table 5 names, else docs/evaluation.md where it has a section for that kind."""
    kind = _demo_kind(demo_root)
    readme = README.read_text(encoding="utf-8")
    if TABLE5_CPU.search(readme).group(1) == kind:
        return "README.md", readme
    page = (REPO / "docs/evaluation.md").read_text(encoding="utf-8")
    if f"<!-- table5 cpu: {kind} -->" not in page:
        pytest.skip(f"no figures of a {kind} machine in README.md or docs/evaluation.md")
    return "docs/evaluation.md", page


def test_readme_table5_is_the_demos(demo_root):
    rendered = (demo_root / "results/report/table5.md").read_text(encoding="utf-8")
    table = "\n".join(line for line in rendered.splitlines() if line.startswith("|"))
    assert table.count("\n") >= 2, "results/report/table5.md holds no table"
    name, page = _page_of(demo_root)
    assert table in page, (
        f"{name}'s Table 5 is not results/report/table5.md's; paste it again:\n" + table
    )


def test_readme_digests_match_the_demos_files(demo_root):
    block = DIGESTS.search(README.read_text(encoding="utf-8")).group(1)
    blocks = dict(CPU_BLOCK.findall(block))
    assert blocks, "no `<!-- cpu: VENDOR -->` sha256sum blocks between the digest markers"
    # Another mode's figures (portable on an Intel CPU) are in docs/numerics.md.
    blocks.update(CPU_BLOCK.findall((REPO / "docs/numerics.md").read_text(encoding="utf-8")))
    kind, cpu = _demo_kind(demo_root), _demo_cpu(demo_root)
    if kind not in blocks:
        pytest.skip(f"README.md lists no digests for a {kind} machine ({cpu['model']})")
    listed = re.findall(r"^([0-9a-f]{64}) [ *](\S+)$", blocks[kind], re.M)
    assert len(listed) >= 12, f"the {kind} block lists {len(listed)} files"
    wrong = []
    for digest, name in listed:
        path = demo_root / name
        if not path.is_file():
            wrong.append(f"{name}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            wrong.append(f"{name}: {hashlib.sha256(path.read_bytes()).hexdigest()}")
    assert not wrong, "README digests that differ from the demo's files:\n  " + "\n  ".join(wrong)


def _targets_block(targets_csv: Path) -> str:
    """The README's summary of the demo's targets: how many are met, and every one that is not,
    with our figure and the required one, as results/report/targets.csv has them."""
    import pandas as pd

    frame = pd.read_csv(targets_csv)
    missed = frame[frame["verdict"] != "met"]

    def number(x) -> str:
        return "–" if pd.isna(x) else f"{x:.3f}"

    lines = [
        f"**The demo's targets** (`results/report/targets.csv`): {len(frame) - len(missed)} of "
        f"{len(frame)} met. Not met:",
        "",
        "| target | ours | required |",
        "|:---|---:|---:|",
        *(f"| {r.target} | {number(r.ours)} | {number(r.required)} |" for r in missed.itertuples()),
    ]
    return "\n".join(lines)


def test_readme_says_which_targets_the_demo_missed(demo_root):
    block = _targets_block(demo_root / "results/report/targets.csv")
    name, page = _page_of(demo_root)
    assert block in page, (
        f"{name}'s targets summary is not results/report/targets.csv's; paste it again:\n" + block
    )
