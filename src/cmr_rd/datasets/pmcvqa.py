"""PMC-VQA multiple-choice pairs from a local copy of the official release, as TRL records.

Stage 1a aligns the projector on generic biomedical figures before the scarce CMR pairs, so
this loader reads the release exactly as published (no conversion step the user has to run)
and reports every row it cannot use instead of dropping it.

Release layout (HF dataset ``xmcmic/PMC-VQA``). Sources: the dataset card README.md at
revisions 245d3a2 and ff2098c; the file listing at c08340c/ff2098c; the authors' loader
``src/MedVInT_TD/Dataset/PMC_QA_Dataset.py`` in github.com/xiaoman-zhang/PMC-VQA; and the
Phi-4-multimodal PMC-VQA fine-tuning sample, which prints a ``train_2.csv`` row and opens
``<unzip dir>/figures/<Figure_path>``:

- version 1 (227k pairs, 149k images): ``train.csv``, ``test.csv``, ``test_clean.csv`` and
  ``images.zip`` ("images folder", so ``images/``). Columns ``Figure_path`` (a bare file name
  such as ``PMC1064097_F1.jpg``), ``Question``, ``Answer`` (the answer *text*; the first card
  and the authors' loader spell it ``Anwser``), ``Choice A`` .. ``Choice D`` written
  ``"A:Diffuse ..."``, ``Answer_label`` (the letter; card also says ``Anwser_label``), and
  ``Caption``.
- version 2 (non-compound figures): ``train_2.csv``, ``test_2.csv`` and ``images_2.zip``,
  which unpacks to ``figures/`` (the card calls them ``train2.csv``/``images2.zip``; the files
  are named with the underscore). Columns ``index``, ``Figure_path``, ``Caption``,
  ``Question``, ``Choice A`` .. ``Choice D`` written ``" A: Green "``, ``Answer`` (here the
  *letter*) and ``split``.

For a split the newest version present wins (``{split}_2.csv``, ``{split}2.csv``, then
``{split}.csv``). Images are looked up in the version's own folder first, then in the other
documented folders, so a user who unpacked both archives into one place is served too.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

LETTERS: tuple[str, ...] = ("A", "B", "C", "D")

# Image folders per release version, most likely first; "" is the root itself.
_FOLDERS_V1: tuple[str, ...] = ("images", "figures", "images_2/figures", "images/images", "")
_FOLDERS_V2: tuple[str, ...] = (
    "figures",
    "images_2/figures",
    "images2/figures",
    "images_2",
    "images",
    "",
)
_ANSWER_COLUMNS = ("Answer", "Anwser")
_LABEL_COLUMNS = ("Answer_label", "Anwser_label")
_ANY_PREFIX = re.compile(r"^\s*[A-D]\s*:\s*")


def csv_candidates(split: str) -> list[str]:
    """CSV names to try for a split, newest release first."""
    names = [f"{split}_2.csv", f"{split}2.csv", f"{split}.csv"]
    return list(dict.fromkeys(names))


def strip_choice_prefix(text: str, letter: str | None = None) -> str:
    """'A:Diffuse uptake' / ' B: Red ' -> the content; only the given letter when one is given."""
    pattern = _ANY_PREFIX if letter is None else re.compile(rf"^\s*{letter}\s*:\s*")
    return pattern.sub("", text, count=1).strip()


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold().rstrip(" .")


def _cell(row: dict[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        if name in row:
            return str(row[name]).strip()
    return ""


def _read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    df.columns = [str(c).strip() for c in df.columns]
    need = ["Figure_path", "Question", *(f"Choice {x}" for x in LETTERS)]
    missing = [c for c in need if c not in df.columns]
    if not any(c in df.columns for c in _ANSWER_COLUMNS):
        missing.append("Answer")
    if missing:
        raise ValueError(f"{path}: not a PMC-VQA metafile, missing columns {missing}")
    return df


def _resolve_answer(answer: str, label: str, choices: dict[str, str]) -> tuple[str | None, str]:
    """(letter, '') when the answer picks one choice, else (None, reason)."""
    label = label[:1].upper() if label else ""
    if re.fullmatch(r"[A-D]\s*[:.)]?", answer):  # version 2 stores the letter
        hits = [answer[0]]
    else:
        text = _norm(strip_choice_prefix(answer))
        hits = [x for x in LETTERS if _norm(choices[x]) == text]
    if not hits:
        return None, f"answer {answer!r} matches no choice"
    if label in LETTERS and label not in hits:
        return None, f"answer {answer!r} disagrees with Answer_label {label!r}"
    return (label if label in hits else hits[0]), ""


def _find_image(fig: str, dirs: list[Path]) -> Path | None:
    """First existing file for a Figure_path; bare name as a fallback for paths with folders."""
    for name in dict.fromkeys([fig, Path(fig).name]):
        for d in dirs:
            if (d / name).is_file():
                return d / name
    return None


def _row_record(
    row: dict[str, str], n: int, stem: str, dirs: list[Path], where: str
) -> tuple[dict | None, list[str]]:
    reasons: list[str] = []
    fig = str(row.get("Figure_path", "")).strip()
    image = _find_image(fig, dirs) if fig else None
    question = str(row.get("Question", "")).strip()
    answer = _cell(row, _ANSWER_COLUMNS)
    choices = {x: strip_choice_prefix(str(row.get(f"Choice {x}", "")), x) for x in LETTERS}
    if not question:
        reasons.append("missing question")
    if not answer:
        reasons.append("missing answer")
    reasons += [f"missing choice {x}" for x in LETTERS if not choices[x]]
    letter = None
    if answer and all(choices.values()):
        letter, why = _resolve_answer(answer, _cell(row, _LABEL_COLUMNS), choices)
        if why:
            reasons.append(why)
    if not fig:
        reasons.append("missing Figure_path")
    elif image is None:
        reasons.append(f"image not found: {fig!r} (looked in {where})")
    if reasons or letter is None:
        return None, reasons
    options = "\n".join(f"{x}: {choices[x]}" for x in LETTERS)
    record = {
        "id": f"pmcvqa-{stem}-{n}",
        "source": "pmcvqa",
        "images": [str(image)],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": f"{question}\n{options}"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": choices[letter]}]},
        ],
        "label": None,
    }
    return record, []


def load_pmcvqa(
    root: Path, split: str = "train", limit: int | None = None, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Records and per-row problems for one split of a local PMC-VQA download.

    Problems are {"row": n (0-based data row, header excluded), "file": csv name, "reason"}.
    `limit` keeps a seeded random subset of the usable records, in file order.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    root = Path(root).expanduser().absolute()
    names = csv_candidates(split)
    if not root.is_dir():
        raise FileNotFoundError(
            f"PMC-VQA directory {root} does not exist; expected one of {names} "
            "(from huggingface.co/datasets/xmcmic/PMC-VQA) with images/ or figures/"
        )
    csv_path = next((root / n for n in names if (root / n).is_file()), None)
    if csv_path is None:
        raise FileNotFoundError(
            f"no PMC-VQA metafile for split {split!r} in {root}: looked for {names}"
        )
    folders = _FOLDERS_V2 if csv_path.name != f"{split}.csv" else _FOLDERS_V1
    dirs = [root / f if f else root for f in folders if (root / f).is_dir()]

    records: list[dict] = []
    problems: list[dict] = []
    df = _read_csv(csv_path)
    where = ", ".join(f"{d.relative_to(root)}/" if d != root else "./" for d in dirs)
    if len(dirs) == 1:  # only the root: the archives were not unpacked here
        where += " only; no images/ or figures/ folder"
    for n, row in enumerate(df.to_dict(orient="records")):
        record, reasons = _row_record(row, n, csv_path.stem, dirs, where)
        if record is None:
            problems.append({"row": n, "file": csv_path.name, "reason": "; ".join(reasons)})
        else:
            records.append(record)

    if limit is not None and limit < len(records):
        keep = np.sort(np.random.default_rng(seed).choice(len(records), size=limit, replace=False))
        records = [records[i] for i in keep]
    return records, problems
