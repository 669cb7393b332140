"""The paper's tables from our evaluations: mean ± sample std over seeds, written as CSV/MD/TeX.

Every row is (label, metrics dicts of that row's seeds), so a seeded run and a one-off zero-shot
model go through the same code; the seed count travels with the row so a reader can tell a mean of
three from a single number. The paper's own published numbers are loaded from
report/paper_reference.yaml into separate frames: they are shown beside ours, never mixed in.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import yaml

from cmr_rd.classes import CLASSES

Rows = Sequence[tuple[str, Sequence[dict]]]
Getter = Callable[[dict], float | None]

DECIMALS = 6  # stored precision: well below the 3 decimals shown, so rounding never shows
MISSING = "–"  # en dash for a metric with no value (e.g. AUC of a class absent from the test set)


def summarise(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, sample std with ddof=1, n) over the non-null values.

    std is None for fewer than two values: a single seed has no spread to report, and 0.0 would
    claim one.
    """
    xs = [float(v) for v in values if v is not None and not _isnan(v)]
    n = len(xs)
    if n == 0:
        return None, None, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, None, n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var), n


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _top(key: str) -> Getter:
    return lambda m: m[key]


def _per_class(cls: str) -> Getter:
    # A class missing from a per-class dict counts as "no value", as the evaluator writes None.
    return lambda m: (m["per_class_accuracy"] or {}).get(cls)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, DECIMALS)


def _metric_table(rows: Rows, label: str, metrics: Sequence[tuple[str, Getter]]) -> pd.DataFrame:
    records = []
    for name, seeds in rows:
        if not seeds:
            raise ValueError(f"row {name!r} has no metrics")
        record: dict = {label: name, "seeds": len(seeds)}
        for col, get in metrics:
            try:
                values = [get(m) for m in seeds]
            except KeyError as err:
                raise ValueError(f"row {name!r}: metrics lack key {err.args[0]!r}") from None
            mean, std, _ = summarise(values)
            record[f"{col}_mean"], record[f"{col}_std"] = _round(mean), _round(std)
        records.append(record)
    columns = [label, "seeds"] + [f"{c}_{s}" for c, _ in metrics for s in ("mean", "std")]
    df = pd.DataFrame.from_records(records, columns=columns)
    for c in columns[2:]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    return df


_CLASS_METRICS = [(c, _per_class(c)) for c in CLASSES]


def table1(rows: Rows) -> pd.DataFrame:
    """Table 1: per-class accuracy per model."""
    return _metric_table(rows, "model", _CLASS_METRICS)


def table2(rows: Rows) -> pd.DataFrame:
    """Table 2: per-class and overall accuracy per GPPO sampling strategy."""
    return _metric_table(rows, "strategy", [*_CLASS_METRICS, ("ACC", _top("accuracy"))])


def table4(rows: Rows) -> pd.DataFrame:
    """Table 4: MI localisation (mean IoU, Acc@0.5) and accuracy with and without the IoU reward."""
    metrics = [
        ("mean_IoU", _top("mi_mean_iou")),
        ("Acc@0.5", _top("mi_acc_at_50")),
        ("ACC", _top("accuracy")),
    ]
    return _metric_table(rows, "iou_reward", metrics)


def table5(rows: Rows) -> pd.DataFrame:
    """Table 5: the ablation over stage-1 parts; accuracy, macro F1 and macro AUC."""
    metrics = [("ACC", _top("accuracy")), ("F1", _top("macro_f1")), ("AUC", _top("auc_macro"))]
    return _metric_table(rows, "config", metrics)


# ---- writing -------------------------------------------------------------------------------------


def _metric_names(df: pd.DataFrame) -> list[str]:
    return [c[: -len("_mean")] for c in df.columns if c.endswith("_mean")]


def _cells(df: pd.DataFrame, pm: str, missing: str) -> tuple[list[str], list[list[str]]]:
    """Header and body strings, one column per metric ("mean ± std"), other columns as they are."""
    metrics = set(_metric_names(df))
    header, getters = [], []
    for col in df.columns:
        if col.endswith("_mean") and col[: -len("_mean")] in metrics:
            base = col[: -len("_mean")]
            header.append(base)
            getters.append(
                lambda r, b=base: _pm(r.get(f"{b}_mean"), r.get(f"{b}_std"), pm, missing)
            )
        elif col.endswith("_std") and col[: -len("_std")] in metrics:
            continue
        else:
            header.append(col)
            getters.append(lambda r, c=col: _plain(r[c], missing))
    body = [[g(r) for g in getters] for r in df.to_dict("records")]
    return header, body


def _pm(mean, std, pm: str, missing: str) -> str:
    if mean is None or pd.isna(mean):
        return missing
    if std is None or pd.isna(std):
        return f"{mean:.3f}"
    return f"{mean:.3f}{pm}{std:.3f}"


def _plain(value, missing: str) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return missing
    if isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{value:.3f}"
    return str(value)


def _markdown(df: pd.DataFrame, title: str, note: str) -> str:
    header, body = _cells(df, " ± ", MISSING)

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [f"### {title}", ""]
    if note:
        out += [note, ""]
    out.append(line(header))
    out.append("|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|")
    out += [line(r) for r in body]
    return "\n".join(out) + "\n"


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "–": "--",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters so labels like `mean_IoU` or `100%` typeset literally."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex(df: pd.DataFrame, title: str, note: str) -> str:
    header, body = _cells(df, " ± ", MISSING)  # tex_escape turns these into $\pm$ and --

    def line(cells):
        return " & ".join(tex_escape(c) for c in cells) + r" \\"

    out = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(title)}}}",
        r"\begin{tabular}{" + "l" + "r" * (len(header) - 1) + "}",
        r"\toprule",
        line(header),
        r"\midrule",
        *[line(r) for r in body],
        r"\bottomrule",
        r"\end{tabular}",
    ]
    if note:
        out.append(r"\par\smallskip{\footnotesize " + tex_escape(note) + "}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def write_table(df: pd.DataFrame, stem: Path, title: str, note: str = "") -> list[Path]:
    """Write stem.csv (numbers as computed), stem.md and stem.tex (mean ± std, 3 decimals).

    Output bytes depend only on the inputs (no dates, "\\n" line ends), so a rerun that changes
    nothing leaves the files identical for DVC and diffs.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex")]
    texts = [
        df.to_csv(index=False, lineterminator="\n"),
        _markdown(df, title, note),
        _latex(df, title, note),
    ]
    for path, text in zip(paths, texts, strict=True):
        path.write_bytes(text.encode("utf-8"))
    return paths


# ---- the paper's published numbers ---------------------------------------------------------------

PAPER_TABLES = {
    # name in the yaml: (label column, metric columns in order)
    "table1": ("model", list(CLASSES)),
    "table5": ("config", ["ACC", "F1", "AUC"]),
}


def load_paper_reference(path) -> dict:
    """Read and check report/paper_reference.yaml; a ValueError names the file and the bad key.

    Checked strictly because a typo here (a missing class, "0.6l") would otherwise show up as a
    wrong published number in the report with nothing to flag it.
    """
    path = Path(path)

    def fail(key: str, why: str):
        raise ValueError(f"{path}: {key}: {why}")

    try:
        ref = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(ref, dict):
        fail("<top>", "expected a mapping")
    source = ref.get("source")
    if not isinstance(source, dict):
        fail("source", "missing or not a mapping")
    for key in ("title", "venue"):
        if not isinstance(source.get(key), str) or not source[key].strip():
            fail(f"source.{key}", "missing or not a string")
    for name, (label, metrics) in PAPER_TABLES.items():
        table = ref.get(name)
        if not isinstance(table, dict):
            fail(name, "missing or not a mapping")
        rows = table.get("rows")
        if not isinstance(rows, list) or not rows:
            fail(f"{name}.rows", "missing or not a non-empty list")
        seen = set()
        for i, row in enumerate(rows):
            where = f"{name}.rows[{i}]"
            if not isinstance(row, dict):
                fail(where, "not a mapping")
            if not isinstance(row.get(label), str) or not row[label]:
                fail(f"{where}.{label}", "missing or not a string")
            if row[label] in seen:
                fail(f"{where}.{label}", f"duplicate row {row[label]!r}")
            seen.add(row[label])
            where = f"{name}.rows[{i}] ({row[label]})"
            extra = set(row) - {label, *metrics}
            if extra:
                fail(f"{where}.{sorted(extra)[0]}", f"unknown key; expected {metrics}")
            for m in metrics:
                if m not in row:
                    fail(f"{where}.{m}", "missing")
                v = row[m]
                if isinstance(v, bool) or not isinstance(v, numbers.Real):
                    fail(f"{where}.{m}", f"not a number: {v!r}")
                if not 0.0 <= float(v) <= 1.0:
                    fail(f"{where}.{m}", f"{v} is outside [0, 1]")
    qualitative = ref.get("qualitative", [])
    if not isinstance(qualitative, list) or not all(isinstance(q, str) for q in qualitative):
        fail("qualitative", "not a list of strings")
    return ref


def paper_tables(reference: dict) -> dict[str, pd.DataFrame]:
    """The paper's Tables 1 and 5 as frames with our columns; std is None and seeds unknown (NA),
    as the paper publishes single numbers."""
    out = {}
    for name, (label, metrics) in PAPER_TABLES.items():
        records = []
        for row in reference[name]["rows"]:
            record: dict = {label: row[label], "seeds": pd.NA}
            for m in metrics:
                record[f"{m}_mean"], record[f"{m}_std"] = _round(float(row[m])), None
            records.append(record)
        columns = [label, "seeds"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
        df = pd.DataFrame.from_records(records, columns=columns)
        df["seeds"] = df["seeds"].astype("Int64")
        for c in columns[2:]:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
        out[f"paper_{name}"] = df
    return out
