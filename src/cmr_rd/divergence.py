"""Where two runs of the workflow part ways: the first jobs that computed other bytes from the
same inputs.

A run is deterministic on one machine; across machines it is meant to be too (cmr_rd.numerics),
and when two machines' tables differ, the question is which job first computed something else.
Every job's manifest records the digests of what it read and wrote, so two runs can be compared
job by job without the other machine:

- `python -m cmr_rd.divergence export --out digests.json` writes, for every manifest under the
  root, its rule, wildcards, params, the digests of its inputs and outputs (and of each file of
  a folder output) and the machine and numerics that made it.
- `python -m cmr_rd.divergence compare digests.json` compares this run with such a file. A job
  whose outputs differ although its inputs and params are the same is where the runs part ways
  (`first difference`); a job whose inputs already differed only inherits it (`downstream`).
  Jobs are listed in the order of the DAG.

Exit status: 0 when every job both runs have agrees, 1 when any differs, 2 when the reference
cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cmr_rd import numerics
from cmr_rd.lineage import CORE_KEYS, build_index, is_dir_digest, is_wall_clock, sha256_json

FORMAT = "cmr-rd-digests/1"
# Digests are kept to 16 hex digits (64 bits): enough to tell two runs' bytes apart, and a
# demo's export stays near 150 kB.
DIGITS = 16


def _short(sha: str | None) -> str | None:
    return sha[:DIGITS] if isinstance(sha, str) else None


class ReferenceError(Exception):
    """The reference file cannot be read as an export of this module."""


def _job(index, rel: str, data: dict) -> dict:
    recorded = data.get("inputs") or {}
    inputs = {index.norm(p): _short((v or {}).get("sha256")) for p, v in recorded.items()}
    outputs = {index.norm(p): _short(sha) for p, sha in (data.get("outputs") or {}).items()}
    files = {}
    folders = [(k, v) for k, v in data.items() if k not in CORE_KEYS and is_dir_digest(v)]
    folders += list((data.get("output_dirs") or {}).items())
    for key, value in folders:
        if not is_dir_digest(value):
            continue
        folder = index.norm(value.get("path") or key)
        outputs[folder] = _short(value["sha256"])
        listed = value.get("file_sha256") or {}
        if listed:
            files[folder] = {name: _short(sha) for name, sha in sorted(listed.items())}
    env = data.get("environment") or {}
    made = env.get("numerics") or {}
    worker = data.get("worker_numerics") or {}
    return {
        "rule": data.get("rule"),
        "wildcards": data.get("wildcards") or {},
        "params_sha256": sha256_json(data.get("params")),
        "commit": (data.get("git") or {}).get("commit"),
        "inputs": dict(sorted(inputs.items())),
        "outputs": dict(sorted(outputs.items())),
        "files": files,
        "machine": numerics.describe(worker or made) if (worker or made) else None,
    }


def export(root: str | Path = ".") -> dict:
    """Every manifest's digests under `root`, keyed by the manifest's path."""
    index = build_index(root)
    jobs = {rel: _job(index, rel, data) for rel, data in sorted(index.manifests.items())}
    return {"format": FORMAT, "jobs": jobs}


def dumps(export_: dict) -> str:
    """The export as JSON with one job per line, so two exports diff line by line."""
    rows = [f"{json.dumps(key)}: {json.dumps(job, sort_keys=True, separators=(',', ':'))}"
            for key, job in sorted(export_["jobs"].items())]  # fmt: skip
    head = '{"format": ' + json.dumps(export_["format"]) + ', "jobs": {\n'
    return head + ",\n".join(rows) + "\n}}\n"


def load_reference(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReferenceError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:
        raise ReferenceError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReferenceError(
            f"{path}: not a digest export (expected format {FORMAT!r}; write one with "
            "`python -m cmr_rd.divergence export`)"
        )
    if not isinstance(data.get("jobs"), dict):
        raise ReferenceError(f"{path}: its 'jobs' must map manifest paths to jobs")
    return data


def _dag_order(jobs: dict[str, dict]) -> list[str]:
    """Manifest keys producers first: by the longest chain of jobs above each, then by path."""
    producer = {out: key for key, job in jobs.items() for out in job["outputs"]}
    depth: dict[str, int] = {}

    def level(key: str, seen: frozenset = frozenset()) -> int:
        if key not in depth:
            above = [producer[p] for p in jobs[key]["inputs"] if p in producer]
            depth[key] = 1 + max(
                (level(k, seen | {key}) for k in above if k not in seen | {key}), default=-1
            )
        return depth[key]

    return sorted(jobs, key=lambda k: (level(k), k))


def _differ(a: dict, b: dict) -> list[str]:
    """Paths whose digests differ, leaving out records of wall-clock time."""
    return sorted(p for p in a.keys() | b.keys() if a.get(p) != b.get(p) and not is_wall_clock(p))


def _changed_outputs(a: dict, b: dict) -> dict[str, list[str]]:
    """Each output that differs, with the files that differ when it is a folder whose files
    both runs list (a folder differing only in wall-clock records counts as the same)."""
    changed = {}
    for output in _differ(a["outputs"], b["outputs"]):
        mine, theirs = a["files"].get(output), b["files"].get(output)
        if mine is not None and theirs is not None:
            files = _differ(mine, theirs)
            if files:
                changed[output] = files
        else:
            changed[output] = []
    return changed


def compare(here: dict, reference: dict) -> dict:
    """Job by job: `same`, `first` (other outputs from the same inputs and params), `params`
    (the job's params differ), `downstream` (an input differed already); and the jobs only one
    run has."""
    mine, theirs = here["jobs"], reference["jobs"]
    both = {k: mine[k] for k in mine if k in theirs}
    result = {"same": [], "first": [], "params": [], "downstream": [],
              "only_here": sorted(set(mine) - set(theirs)),
              "only_reference": sorted(set(theirs) - set(mine))}  # fmt: skip
    for key in _dag_order(both):
        a, b = mine[key], theirs[key]
        changed = _changed_outputs(a, b)
        if not changed:
            result["same"].append(key)
            continue
        inputs = _differ(a["inputs"], b["inputs"])
        entry = {"manifest": key, "rule": a["rule"], "wildcards": a["wildcards"],
                 "outputs": changed, "inputs": inputs,
                 "here": a["machine"], "reference": b["machine"]}  # fmt: skip
        kind = "downstream" if inputs else "params"
        if not inputs and a["params_sha256"] == b["params_sha256"]:
            kind = "first"
        result[kind].append(entry)
    return result


def _label(entry: dict) -> str:
    wildcards = ", ".join(f"{k}={v}" for k, v in sorted(entry["wildcards"].items()))
    return f"{entry['rule']}" + (f" ({wildcards})" if wildcards else "")


def render(result: dict, here: dict, reference: dict) -> str:
    commits = {job["commit"] for job in here["jobs"].values()}
    ref_commits = {job["commit"] for job in reference["jobs"].values()}
    compared = len(result["same"]) + sum(len(result[k]) for k in ("first", "params", "downstream"))
    lines = [
        f"{compared} jobs in both runs: {len(result['same'])} the same, "
        f"{len(result['first'])} first differences, {len(result['params'])} with other params, "
        f"{len(result['downstream'])} downstream of a difference"
    ]
    if commits != ref_commits:
        lines.append(
            f"note: the code differs (here {', '.join(sorted(map(str, commits)))[:60]}; "
            f"reference {', '.join(sorted(map(str, ref_commits)))[:60]}): a first difference "
            "may be a change of code"
        )
    if result["first"]:
        lines.append("")
        lines.append("First differences (the same inputs and params, other outputs):")
    for entry in result["first"]:
        lines.append(f"  {_label(entry)}   {entry['manifest']}")
        for output, files in entry["outputs"].items():
            lines.append(f"    {output}" + (f": {', '.join(files)}" if files else ""))
        lines.append(f"    here:      {entry['here']}")
        lines.append(f"    reference: {entry['reference']}")
    if result["params"]:
        lines.append("")
        lines.append("Other params (the config differs for these jobs):")
        lines.extend(f"  {_label(e)}   {e['manifest']}" for e in result["params"])
    if result["downstream"]:
        counts: dict[str, int] = {}
        for entry in result["downstream"]:
            counts[entry["rule"]] = counts.get(entry["rule"], 0) + 1
        lines.append("")
        lines.append(
            "Downstream of a difference: "
            + ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items()))
        )
    alone = (("only_here", "only in this run"), ("only_reference", "only in the reference"))
    for kind, name in alone:
        if result[kind]:
            lines.append(f"{name}: {len(result[kind])} ({', '.join(result[kind][:5])}"
                         + (", ..." if len(result[kind]) > 5 else "") + ")")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmr_rd.divergence", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--root", default=".", help="the workflow's working directory")
    sub = parser.add_subparsers(dest="command", required=True)
    out = sub.add_parser("export", help="write this run's digests")
    out.add_argument("--out", required=True, help="the JSON file to write")
    cmp_ = sub.add_parser("compare", help="compare this run with an exported reference")
    cmp_.add_argument("reference", help="a file written by `export` (on another machine)")
    cmp_.add_argument("--json", action="store_true", help="the comparison as JSON")
    args = parser.parse_args(argv)
    here = export(args.root)
    if not here["jobs"]:
        print(f"error: no manifest under {args.root}/results or data (run the workflow first)",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.command == "export":
        Path(args.out).write_text(dumps(here))
        print(f"{len(here['jobs'])} jobs written to {args.out}")
        return 0
    try:
        reference = load_reference(args.reference)
    except ReferenceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    result = compare(here, reference)
    print(json.dumps(result, indent=1) if args.json else render(result, here, reference))
    differ = any(result[k] for k in ("first", "params", "downstream"))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
