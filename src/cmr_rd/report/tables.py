"""The paper's tables from our evaluations: mean ± sample std over seeds, written as CSV/MD/TeX.

Every row is (label, metrics dicts of that row's seeds), so a seeded run and a one-off zero-shot
model go through the same code; the seed count travels with the row so a reader can tell a mean of
three from a single number. The paper's own published numbers are loaded from
report/paper_reference.yaml into separate frames: they are shown beside ours, never mixed in.

Given the bootstrap draws of each evaluation (cmr_rd.evaluate.bootstrap), every metric cell also
gets `<metric>_ci_lo` / `<metric>_ci_hi`: the 95% percentile interval, over resamples of the test
PATIENTS, of the mean over seeds. The `_patient` tables repeat Tables 1, 2 and 5 with each
patient's slices pooled into one answer (metrics.json's `patient` part); Table 4's boxes are per
slice and have no patient-level form.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cmr_rd.classes import CLASSES
from cmr_rd.evaluate.bootstrap import interval

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


def _getter(key: str, level: str = "slice") -> Getter:
    """Read `key` ("accuracy", "per_class_accuracy/CAM") from a metrics.json dict, or from its
    `patient` part. A class missing from a per-class dict counts as "no value", as the evaluator
    writes None; a missing top-level key is a KeyError the table reports by row."""
    top, _, sub = key.partition("/")

    def get(m: dict) -> float | None:
        part = m["patient"] if level == "patient" else m
        value = part[top]
        return (value or {}).get(sub) if sub else value

    return get


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, DECIMALS)


# What a table's cells hold: (column, metrics.json key), the key also naming the bootstrap draws.
Spec = Sequence[tuple[str, str]]
Draws = Mapping[str, Sequence[Mapping[str, np.ndarray]]]  # row label -> per-seed draws


def _metric_table(
    rows: Rows, label: str, metrics: Spec, draws: Draws | None = None, level: str = "slice"
) -> pd.DataFrame:
    stats = ("mean", "std", "ci_lo", "ci_hi") if draws is not None else ("mean", "std")
    records = []
    for name, seeds in rows:
        if not seeds:
            raise ValueError(f"row {name!r} has no metrics")
        record: dict = {label: name, "seeds": len(seeds)}
        for col, key in metrics:
            get = _getter(key, level)
            try:
                values = [get(m) for m in seeds]
            except KeyError as err:
                raise ValueError(f"row {name!r}: metrics lack key {err.args[0]!r}") from None
            mean, std, _ = summarise(values)
            record[f"{col}_mean"], record[f"{col}_std"] = _round(mean), _round(std)
            if draws is not None:
                lo, hi = interval([d[key] for d in draws[name]]) if name in draws else (None, None)
                record[f"{col}_ci_lo"], record[f"{col}_ci_hi"] = _round(lo), _round(hi)
        records.append(record)
    columns = [label, "seeds"] + [f"{c}_{s}" for c, _ in metrics for s in stats]
    df = pd.DataFrame.from_records(records, columns=columns)
    for c in columns[2:]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    return df


_CLASS_METRICS = [(c, f"per_class_accuracy/{c}") for c in CLASSES]
_ACC, _F1, _AUC = ("ACC", "accuracy"), ("F1", "macro_f1"), ("AUC", "auc_macro")
# name: (label column, cells, level). A `_patient` table reads the rows of the table it names.
TABLE_SPECS: dict[str, tuple[str, Spec, str]] = {
    "table1": ("model", _CLASS_METRICS, "slice"),
    "table2": ("strategy", [*_CLASS_METRICS, _ACC], "slice"),
    "table4": (
        "iou_reward",
        [("mean_IoU", "mi_mean_iou"), ("Acc@0.5", "mi_acc_at_50"), _ACC],
        "slice",
    ),
    "table5": ("config", [_ACC, _F1, _AUC], "slice"),
    "table1_patient": ("model", [*_CLASS_METRICS, _ACC, _F1, _AUC], "patient"),
    "table2_patient": ("strategy", [*_CLASS_METRICS, _ACC], "patient"),
    "table5_patient": ("config", [_ACC, _F1, _AUC], "patient"),
}
TITLES = {
    "table1": "Table 1. Per-class accuracy (recall) on the test split",
    "table2": "Table 2. Sampling strategy x per-class accuracy (S1+S2)",
    "table4": "Table 4. IoU reward on / off: MI localisation and accuracy",
    "table5": "Table 5. Ablation: accuracy, macro F1 and one-vs-rest macro AUC",
    "table1_patient": "Table 1, patient level. Per-class accuracy, ACC, macro F1, AUC per patient",
    "table2_patient": "Table 2, patient level. Sampling strategy x per-class accuracy per patient",
    "table5_patient": "Table 5, patient level. Ablation: ACC, macro F1 and AUC per patient",
}


def build(name: str, rows: Rows, draws: Draws | None = None) -> pd.DataFrame:
    """Table `name` of TABLE_SPECS from its rows, with interval columns when draws are given
    (draws at the table's level: slice draws for Tables 1-5, patient draws for `_patient`)."""
    label, metrics, level = TABLE_SPECS[name]
    return _metric_table(rows, label, metrics, draws, level)


def table1(rows: Rows, draws: Draws | None = None) -> pd.DataFrame:
    """Table 1: per-class accuracy per model."""
    return build("table1", rows, draws)


def table2(rows: Rows, draws: Draws | None = None) -> pd.DataFrame:
    """Table 2: per-class and overall accuracy per GPPO sampling strategy."""
    return build("table2", rows, draws)


def table4(rows: Rows, draws: Draws | None = None) -> pd.DataFrame:
    """Table 4: MI localisation (mean IoU, Acc@0.5) and accuracy with and without the IoU reward."""
    return build("table4", rows, draws)


def table5(rows: Rows, draws: Draws | None = None) -> pd.DataFrame:
    """Table 5: the ablation over stage-1 parts; accuracy, macro F1 and macro AUC."""
    return build("table5", rows, draws)


def row_draws(entries: Sequence[tuple[str, Sequence[str]]], by_evaluation: Mapping) -> Draws:
    """{row label: [draws of each seed's evaluation]} from [(label, [evaluation key per seed])]."""
    return {label: [by_evaluation[k] for k in keys] for label, keys in entries}


def table_note(name: str, rows: Rows, left_out: Sequence[str], boot=None) -> str:
    """What a table's numbers are: the split, the seeds, the interval, the rows not run, and why
    an AUC cell is empty. `boot`: the bootstrap.Draws the intervals came from, if any."""
    label, metrics, level = TABLE_SPECS[name]
    seeds = sorted({len(m) for _, m in rows})
    first = rows[0][1][0] if rows else {}
    spread = f"mean ± std over seeds (n = {', '.join(map(str, seeds))})"
    if level == "patient":
        patients = first.get("patient", {}).get("n_patients", 0)
        note = (
            f"Patient level, {patients} test patients: per patient, the mean of its slices' "
            "per-class log-likelihoods, the answer its argmax (a model without per-class scores: "
            f"the majority of its slices' parsed answers); {spread}."
        )
    else:
        note = f"Test split, {first.get('n', 0)} slices; {spread}."
    if boot is not None:
        note += (
            f" [lo, hi]: 95% bootstrap percentile interval of the seed mean, {boot.iterations} "
            f"resamples of the {boot.n_patients} test patients (stratified by class; a patient's "
            "slices move together)."
        )
    if any(key == "auc_macro" for _, key in metrics):
        for row, seeds_metrics in rows:
            part = [m.get("patient", {}) if level == "patient" else m for m in seeds_metrics]
            why = sorted({p.get("auc_note") for p in part if p.get("auc_note")})
            if why:
                note += f" AUC of {row}: {'; '.join(why)}."
    if left_out:
        note += " Not run, so not shown: " + "; ".join(left_out) + "."
    return note


# ---- writing -------------------------------------------------------------------------------------


def _metric_names(df: pd.DataFrame) -> list[str]:
    return [c[: -len("_mean")] for c in df.columns if c.endswith("_mean")]


_STATS = ("_std", "_ci_lo", "_ci_hi")  # shown inside the metric's "mean" cell


def _cells(df: pd.DataFrame, pm: str, missing: str) -> tuple[list[str], list[list[str]]]:
    """Header and body strings, one column per metric ("mean ± std [lo, hi]"), other columns as
    they are."""
    metrics = set(_metric_names(df))
    header, getters = [], []
    for col in df.columns:
        if col.endswith("_mean") and col[: -len("_mean")] in metrics:
            base = col[: -len("_mean")]
            header.append(base)
            getters.append(lambda r, b=base: _pm(r, b, pm, missing))
        elif any(col.endswith(s) and col[: -len(s)] in metrics for s in _STATS):
            continue
        else:
            header.append(col)
            getters.append(lambda r, c=col: _plain(r[c], missing))
    body = [[g(r) for g in getters] for r in df.to_dict("records")]
    return header, body


def _pm(record: dict, base: str, pm: str, missing: str) -> str:
    mean, std = record.get(f"{base}_mean"), record.get(f"{base}_std")
    lo, hi = record.get(f"{base}_ci_lo"), record.get(f"{base}_ci_hi")
    if mean is None or pd.isna(mean):
        return missing
    text = f"{mean:.3f}"
    if std is not None and not pd.isna(std):
        text += f"{pm}{std:.3f}"
    if lo is not None and hi is not None and not pd.isna(lo) and not pd.isna(hi):
        text += f" [{lo:.3f}, {hi:.3f}]"
    return text


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
    """Write stem.csv (numbers as computed), stem.md and stem.tex (mean ± std [lo, hi], 3
    decimals).

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
