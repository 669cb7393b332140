"""General questions about the pool's images, answered in the pipeline's answer format.

These make the tiny backbone a small general assistant, as instruction tuning makes Gemma-3 one:
it learns to look at the slice (every answer depends on the image), to point at what it talks
about (the location is the ventricle, or the enhanced region), and to answer a multiple-choice
question with an option copied from the list. No question asks for the diagnosis.

Copying is taught as a general skill: in a share of the questions (`renamed_share`) the options'
names are replaced by fresh codes (`QX (the septal wall)`), drawn anew for every question and
never one of the six class names, so the only way to answer is to find the option whose
description fits the image and copy its name from the prompt. Without them the backbone learnt
each question's own answer words, and asked the diagnostic question it answered "septum" or
"no" (none of the listed names), which left GPPO from the base nothing to reward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cmr_rd.classes import CLASSES
from cmr_rd.format import render_target
from cmr_rd.prompts import REASONING_ASKS, general_query

Question = tuple[str, list[str], str, str, list[float]]  # text, options, answer, think, box

# Options read `name (description)`, as the diagnostic query lists `HCM (hypertrophic
# cardiomyopathy)`; the answer is the name.
LEVELS = ["basal (near the valve plane)", "mid (papillary muscle level)", "apical (near the apex)"]
CAVITY = ["small (under 40 mm)", "normal (40 to 59 mm)", "dilated (over 59 mm)"]
THICKNESS = ["thin (under 7.5 mm)", "normal (7.5 to 12 mm)", "thick (over 12 mm)"]
THICKEST = ["septum (the septal wall)", "lateral (the lateral wall)", "uniform (all walls alike)"]
ENHANCED = ["yes (bright myocardium)", "no (dark myocardium)"]
WALLS = ["lateral (lateral wall)", "anterior (anterior wall)", "septal (the septum)",
         "inferior (inferior wall)", "circumferential (all round)"]  # fmt: skip
TRABECULATED = ["yes (a non-compacted layer)", "no (a compact wall)"]


def _level(f: dict) -> Question:
    think = f"The slice cuts the left ventricle at the {f['level']} level."
    return ("Which level of the left ventricle does it cut", LEVELS,
            f["level"], think, f["lv_box"])  # fmt: skip


def _cavity(f: dict) -> Question:
    think = (
        f"The left ventricular cavity measures about {f['cavity_mm']:.0f} mm across at the base, "
        f"so it is {f['cavity']}."
    )
    return ("How large is the left ventricular cavity", CAVITY,
            f["cavity"], think, f["lv_box"])  # fmt: skip


def _thickness(f: dict) -> Question:
    think = (
        f"The septum measures about {f['septum_mm']:.0f} mm and the lateral wall about "
        f"{f['lateral_mm']:.0f} mm, so the wall is {f['thickness']}."
    )
    return ("How thick is the left ventricular wall", THICKNESS,
            f["thickness"], think, f["lv_box"])  # fmt: skip


def _thickest(f: dict) -> Question:
    think = (
        "The septum is clearly thicker than the lateral wall."
        if f["thickest"] == "septum"
        else "The septum and the lateral wall have about the same thickness."
    )
    return ("Which wall is thickest", THICKEST,
            f["thickest"], think, f["lv_box"])  # fmt: skip


def _enhancement(f: dict) -> Question:
    if f["enhancement"]:
        where = f["enhanced_wall"]
        think = f"Bright late enhancement is seen in the {where} myocardium."
        if where != "circumferential":
            think = f"Bright late enhancement is seen in the {where} wall."
        return ("Is there late gadolinium enhancement in the myocardium", ENHANCED,
                "yes", think, f["enhanced_box"])  # fmt: skip
    think = "The myocardium is dark throughout, with no bright enhancement."
    return ("Is there late gadolinium enhancement in the myocardium", ENHANCED,
            "no", think, f["lv_box"])  # fmt: skip


def _enhanced_wall(f: dict) -> Question | None:
    if not f["enhancement"]:
        return None
    where = f["enhanced_wall"]
    place = "all round the ventricle" if where == "circumferential" else f"in the {where} wall"
    think = f"The bright myocardium lies {place}."
    return ("Where is the late enhancement",
            WALLS,
            where, think, f["enhanced_box"])  # fmt: skip


def _trabeculation(f: dict) -> Question:
    answer = "yes" if f["trabeculated"] else "no"
    think = (
        "Deep trabeculations and recesses line the endocardial border."
        if f["trabeculated"]
        else "The endocardial border is smooth and compact."
    )
    return ("Is the left ventricular wall trabeculated", TRABECULATED,
            answer, think, f["lv_box"])  # fmt: skip


QUESTIONS: dict[str, Callable[[dict], Question | None]] = {
    "level": _level,
    "cavity": _cavity,
    "thickness": _thickness,
    "thickest": _thickest,
    "enhancement": _enhancement,
    "enhanced_wall": _enhanced_wall,
    "trabeculation": _trabeculation,
}


_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
_RESERVED = frozenset(CLASSES)


def option_codes(rng: np.random.Generator, n: int) -> list[str]:
    """`n` distinct upper-case codes of 2-4 letters (as the class names are), none a class."""
    codes: list[str] = []
    while len(codes) < n:
        code = "".join(rng.choice(_LETTERS, size=int(rng.integers(2, 5))))
        if code not in _RESERVED and code not in codes:
            codes.append(code)
    return codes


def _rename(options: list[str], answer: str, codes: list[str]) -> tuple[list[str], str]:
    """Options `name (description)` renamed `code (description)`; the answer follows its option."""
    renamed, new_answer = [], answer
    for option, code in zip(options, codes, strict=True):
        name, _, rest = option.partition(" (")
        renamed.append(f"{code} ({rest}")
        if name == answer:
            new_answer = code
    if new_answer == answer:
        raise ValueError(f"answer {answer!r} is not among the options {options}")
    return renamed, new_answer


def question_records(
    findings: list[dict], image_root: str, per_image: int, seed: int, renamed_share: float = 0.0
) -> list[dict[str, Any]]:
    """`per_image` seeded questions per pool image, options in a seeded order, as SFT records;
    a `renamed_share` of them with fresh option codes in place of the names."""
    if not 0 <= renamed_share <= 1:
        raise ValueError(f"renamed_share must be in [0, 1], got {renamed_share}")
    rng = np.random.default_rng(seed)
    # Codes come from a stream of their own, so the other questions are as they were.
    code_rng = np.random.default_rng([seed, 1])
    records = []
    for f in findings:
        asked = [(kind, q) for kind, make in QUESTIONS.items() if (q := make(f)) is not None]
        pick = rng.choice(len(asked), size=min(per_image, len(asked)), replace=False)
        for index in sorted(int(i) for i in pick):
            kind, (text, options, answer, think, box) = asked[index]
            order = [options[int(i)] for i in rng.permutation(len(options))]
            ask = int(rng.integers(len(REASONING_ASKS)))
            renamed = bool(code_rng.random() < renamed_share)
            if renamed:
                order, answer = _rename(order, answer, option_codes(code_rng, len(order)))
            records.append(
                {
                    "id": f"{f['patient']}_{f['image'].rsplit('_', 1)[-1][:-4]}_{kind}",
                    "source": "foundation",
                    "patient": f["patient"],
                    "images": [f"{image_root}/{f['image']}"],
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image"},
                                {"type": "text", "text": general_query(text, order, ask)},
                            ],
                        },  # noqa: E501
                        {
                            "role": "assistant",
                            "content": [
                                {"type": "text", "text": render_target(think, box, answer)}
                            ],
                        },
                    ],  # fmt: skip
                    "question": kind,
                    "answer": answer,
                    "renamed": renamed,
                }
            )
    return records
