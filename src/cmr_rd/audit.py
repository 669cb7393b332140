"""Lineage audit: which rule, code, config and environment made an artifact, and from what.

`python -m cmr_rd.audit results/report/table5.csv` finds the manifest that lists the artifact,
checks that its bytes still match, then walks the manifests' inputs back to data that no stage
produced (the roots), so a number in a table can be traced to the exact cohort and code. Along
the way it flags an artifact changed since its manifest was written ("MODIFIED") and an input
whose producer has rerun since its consumer read it ("stale").

Exit status: 0 clean, 1 when anything is flagged, 2 when no manifest produced the path.

Each manifest's inputs are expanded once: a second artifact of an already expanded manifest,
in the text tree and in the JSON alike, carries `see_above: true` and no inputs of its own, so
the report stays linear in the number of stages instead of growing with every shared ancestor.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cmr_rd import numerics
from cmr_rd.checkpoints import folder_changes
from cmr_rd.lineage import Index, build_index, canonical_json

SEVERITY = ("missing", "MODIFIED", "stale", "unresolved")  # worst first
PARAMS_WIDTH = 110


class AuditError(Exception):
    """The path cannot be audited (absent, outside the root, or produced by no manifest)."""


@dataclass
class Producer:
    """The manifest behind an artifact and the digest it recorded for it. `within` names the
    directory output holding a file, whose folder digest is then the one to compare."""

    manifest: str
    data: dict
    recorded: str | None
    within: str | None = None


def _locate(index: Index, path: str) -> Producer | None:
    """The producer of `path`: a listed output, a directory output, a manifest or its package
    list, or (for a file inside a directory output) that directory's manifest."""

    def pick(claims: list[Producer], checked: str) -> Producer:
        # Several manifests claiming one path (a moved manifest left behind): trust the one
        # whose record matches what is on disk, else the first in path order.
        current = index.digest(checked)["sha256"]
        return next((c for c in claims if c.recorded == current), claims[0])

    if path in index.outputs:
        claims = [
            Producer(m, index.manifests[m], _output_sha(index, m, path))
            for m in index.outputs[path]
        ]
        return pick(claims, path)
    if path in index.dirs:
        claims = [Producer(m, index.manifests[m], sha) for m, sha in index.dirs[path]]
        return pick(claims, path)
    if path in index.manifests:
        return Producer(path, index.manifests[path], None)
    if path in index.packages:
        manifest = index.packages[path]
        data = index.manifests[manifest]
        return Producer(manifest, data, (data.get("environment") or {}).get("packages_sha256"))
    for parent in PurePosixPath(path).parents:
        folder = parent.as_posix()
        if folder in index.dirs:
            found = _locate(index, folder)
            return Producer(found.manifest, found.data, found.recorded, within=folder)
    return None


def _output_sha(index: Index, manifest: str, path: str) -> str | None:
    outputs = index.manifests[manifest].get("outputs") or {}
    return next((sha for out, sha in outputs.items() if index.norm(out) == path), None)


def _relative(path: str | Path, root: Path) -> str:
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(root.resolve())
        except ValueError:
            raise AuditError(f"{path} is not under {root}") from None
    return posixpath.normpath(p.as_posix())


def find_producer(
    path: str | Path, root: str | Path = ".", index: Index | None = None
) -> tuple[str, dict] | None:
    """(manifest path, manifest) of the stage that produced `path` (relative to `root`)."""
    index = index or build_index(root)
    found = _locate(index, _relative(path, index.root))
    return (found.manifest, found.data) if found else None


class _Walk:
    """One traversal: expands each manifest's inputs once, collects roots and problems."""

    def __init__(self, index: Index):
        self.index = index
        self.expanded: set[str] = set()
        self.roots: dict[str, dict] = {}
        self.problems: list[str] = []

    def node(self, label: str, consumed: dict | None = None, consumer: str | None = None) -> dict:
        path = self._input_path(label, consumed)
        node: dict = {"path": path or label}
        if path not in (None, label):
            node["input"] = label
        if consumed is not None:
            node["consumed_sha256"] = consumed.get("sha256")
        if path is None:
            kind = consumed.get("kind") if consumed else None
            unresolved = (
                f"unresolved: {consumer} records input {label!r} "
                f"({_short(node['consumed_sha256'])}) by name only, and no manifest records a "
                "folder with that digest"
            )
            return self._finish(node, {"sha256": None, "kind": kind}, None, [unresolved])
        current = self.index.digest(path)
        producer = _locate(self.index, path)
        problems = []
        if current["sha256"] is None:
            problems.append(f"missing: {path} no longer exists")
        if producer is None:
            recorded = consumed.get("sha256") if consumed else None
            if current["sha256"] and recorded and current["sha256"] != recorded:
                problems.append(
                    f"MODIFIED: {path} is {_short(current['sha256'])} now, {consumer} read "
                    f"{_short(recorded)}"
                )
            self.roots.setdefault(path, {"path": path, **current})
            node["recorded_sha256"] = recorded
            return self._finish(node, current, None, problems)
        node["recorded_sha256"] = producer.recorded
        checked = producer.within or path
        if producer.within:
            node["within"] = producer.within
        now = self.index.digest(checked)["sha256"]
        rule = producer.data.get("rule")
        if producer.recorded and now and now != producer.recorded:
            problems.append(
                f"MODIFIED: {checked} is {_short(now)} now, {rule} recorded "
                f"{_short(producer.recorded)}{self._folder_detail(checked)}"
            )
        consumed_sha = consumed.get("sha256") if consumed else None
        # A file inside a folder output has no digest of its own in the producer's manifest.
        comparable = consumed and producer.recorded and not producer.within
        if comparable and consumed_sha != producer.recorded:
            problems.append(
                f"stale: input changed since {consumer} read it: {path} was "
                f"{_short(consumed_sha)}, {rule} now records {_short(producer.recorded)}"
            )
        problems += self._environment_problems(producer)
        return self._finish(node, current, producer, problems)

    def _folder_detail(self, path: str) -> str:
        """For a folder output, the files that changed, as the checkpoint check names them."""
        if path not in self.index.dirs:
            return ""
        return f" ({folder_changes(self.index, path)})"

    def _input_path(self, label: str, consumed: dict | None) -> str | None:
        """An input's path: recorded, or its key, or (for a role name such as
        'parent_checkpoint' in older manifests) the folder output with the same digest."""
        if consumed and consumed.get("path"):
            return self.index.norm(consumed["path"])
        path = self.index.norm(label)
        known = path in self.index.outputs or path in self.index.dirs
        if known or "/" in path or (self.index.root / path).exists() or not consumed:
            return path
        folders = self.index.by_hash.get(consumed.get("sha256") or "", [])
        return sorted(folders)[0] if folders else None

    def _environment_problems(self, producer: Producer) -> list[str]:
        env = producer.data.get("environment")
        if not env or producer.manifest in self.expanded:
            return []
        listed = self.index.norm(env.get("packages_file") or "")
        now = self.index.digest(listed)["sha256"]
        if now != env.get("packages_sha256"):
            state = "missing" if now is None else "does not match packages_sha256"
            return [f"MODIFIED: package list {listed} of {producer.manifest} {state}"]
        return []

    def _finish(self, node, current, producer: Producer | None, problems) -> dict:
        node.update(sha256=current["sha256"], kind=current["kind"])
        if "files" in current:
            node["files"] = current["files"]
        if producer is None:
            node.update(manifest=None, rule=None)
            status = "root"
        else:
            data = producer.data
            node.update(
                manifest=producer.manifest,
                rule=data.get("rule"),
                git=data.get("git"),
                config_sha256=data.get("config_sha256"),
                params=data.get("params"),
                slurm_job_id=data.get("slurm_job_id"),
                environment=data.get("environment"),
                worker_numerics=data.get("worker_numerics"),
            )
            status = "ok"
        flags = {p.split(":", 1)[0] for p in problems}
        node["status"] = next((s for s in SEVERITY if s in flags), status)
        node["problems"] = problems
        self.problems += problems
        node["inputs"] = []
        if producer is not None:
            if producer.manifest in self.expanded:
                node["see_above"] = True
            else:
                self.expanded.add(producer.manifest)
                inputs = producer.data.get("inputs") or {}
                node["inputs"] = [
                    self.node(key, value, producer.data.get("rule"))
                    for key, value in sorted(inputs.items())
                ]
        return node


def lineage_tree(path: str | Path, root: str | Path = ".") -> dict:
    """The artifact's lineage as nested dicts, down to the roots; the top node also carries
    `roots` (unique, with digests) and `all_problems` (every flag raised anywhere in the tree).
    Raises AuditError when the path does not exist or no manifest produced it."""
    index = build_index(root)
    rel = _relative(path, index.root)
    if not (index.root / rel).exists():
        raise AuditError(f"no such file or directory: {rel}")
    if _locate(index, rel) is None:
        raise AuditError(f"no manifest produced {rel}{_nearest_hint(index, rel)}")
    walk = _Walk(index)
    tree = walk.node(rel)
    tree["roots"] = [walk.roots[p] for p in sorted(walk.roots)]
    tree["all_problems"] = walk.problems
    return tree


def _nearest_hint(index: Index, path: str) -> str:
    """Name the manifest of the artifact's own folder, if any: the likely producer that did
    not list it (a directory output recorded nowhere, or a log)."""
    for parent in PurePosixPath(path).parents:
        folder = parent.as_posix()
        near = [m for m in index.manifests if posixpath.dirname(m) == folder]
        if near:
            return f" (not listed by {', '.join(near)})"
    return ""


def _short(sha: str | None, full: bool = False) -> str:
    if sha is None:
        return "none"
    return sha if full else sha[:12]


def render_tree(tree: dict) -> str:
    """The lineage as an indented tree ('<-' reads 'made from'), then the roots and problems."""
    lines: list[str] = []
    _render(tree, 0, lines)
    lines.append("")
    lines.append("roots (produced by no manifest):")
    for root in tree.get("roots", []):
        files = f", {root['files']} files" if "files" in root else ""
        lines.append(f"  {root['path']}  {root['kind']}{files}  {_short(root['sha256'], True)}")
    problems = tree.get("all_problems", [])
    lines.append("")
    lines.append(f"{len(problems)} problem(s)" + (":" if problems else ""))
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines) + "\n"


def _render(node: dict, depth: int, lines: list[str]) -> None:
    top = depth == 0
    pad = "   " * depth
    arrow = "" if top else "<- "
    name = node["path"] + (f" ({node['input']})" if "input" in node else "")
    within = f" in {node['within']}" if "within" in node else ""
    digest = _short(node["sha256"], top)
    if node["sha256"] is None and node.get("consumed_sha256"):
        digest = f"(read as {_short(node['consumed_sha256'])})"
    origin = "root"
    if node["rule"]:
        origin = f"rule {node['rule']}"
    elif node["status"] == "unresolved":
        origin = "producer unknown"
    status = "" if node["status"] == origin else f"  {node['status']}"
    head = f"{pad}{arrow}{name}  {node['kind']} {digest}  {origin}{within}{status}"
    if node.get("see_above"):
        head += "  (see above)"
    lines.append(head)
    detail = pad + ("  " if top else "     ")
    lines += [f"{detail}!! {p}" for p in node["problems"]]
    if node["manifest"] is None or node.get("see_above"):
        return
    git = node.get("git") or {}
    dirty = {True: " dirty", False: " clean"}.get(git.get("dirty"), "")
    lines.append(
        f"{detail}manifest {node['manifest']} | git {_short(git.get('commit'), top)}{dirty}"
        f" | config {_short(node['config_sha256'], top)} | slurm {node['slurm_job_id'] or 'local'}"
    )
    env = node.get("environment")
    if env:
        lines.append(
            f"{detail}env python {env.get('python')} | packages "
            f"{_short(env.get('packages_sha256'), top)} {env.get('packages_file')}"
        )
    else:
        lines.append(f"{detail}env not recorded (manifest predates environment capture)")
    # The kernels behind the numbers: the worker's where the job ran its arithmetic in a child
    # process (a training run, a warm interpreter's fork), else the job's own.
    if node.get("worker_numerics"):
        lines.append(f"{detail}worker {numerics.describe(node['worker_numerics'])}")
    elif (env or {}).get("numerics"):
        lines.append(f"{detail}{numerics.describe(env['numerics'])}")
    params = canonical_json(node.get("params"))
    if len(params) > PARAMS_WIDTH:
        params = params[: PARAMS_WIDTH - 3] + "..."
    lines.append(f"{detail}params {params}")
    for child in node["inputs"]:
        _render(child, depth + 1, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmr_rd.audit",
        description="Trace an artifact under results/ back through the lineage manifests.",
    )
    parser.add_argument("path", help="a file or directory output, relative to --root")
    parser.add_argument("--json", action="store_true", help="nested JSON instead of a tree")
    parser.add_argument("--root", default=".", help="the workflow's working directory")
    args = parser.parse_args(argv)
    try:
        tree = lineage_tree(args.path, args.root)
    except AuditError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(
        json.dumps(tree, indent=2, sort_keys=True) + "\n" if args.json else render_tree(tree)
    )
    return 1 if tree["all_problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
