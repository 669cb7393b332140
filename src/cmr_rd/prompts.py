"""Every prompt the model or the rewriter sees, in one place, versioned.

The diagnostic query is the same for SFT, GPPO and evaluation, so a checkpoint is always
asked the question it was trained on.
"""

from __future__ import annotations

from cmr_rd.classes import CLASSES, FULL_NAMES

# q2: one option per line. After a newline the byte-level tokenizer writes a name with the same
# tokens as in the answer slot (`HCM`, not `ĠHCM` as after ", "), so answering is copying.
QUERY_VERSION = "q2"
SLICE_INTRO = "This is a late gadolinium enhancement (LGE) cardiac MRI short-axis slice. "
ANSWER_FORMAT = (
    "answer exactly as "
    "<think>reasoning</think><location>[x1,y1,x2,y2]</location><answer>NAME</answer>."
)
DIAGNOSTIC_QUERY = (
    SLICE_INTRO
    + "Which disease does it show?\n"
    + "\n".join(f"{c} ({FULL_NAMES[c]})" for c in CLASSES)
    + "\nReason step by step from the enhancement pattern to its location to the differential "
    "diagnosis, and " + ANSWER_FORMAT
)


# How a general question asks for the reasoning; the diagnostic query's own wording is among
# them, so that query is not the only one the model has never seen phrased that way.
REASONING_ASKS = (
    "Reason step by step from what you see to where it is, and ",
    "Reason step by step from the image to the location to the answer, and ",
    "Reason step by step from the enhancement pattern to its location to the answer, and ",
)


def general_query(question: str, options: list[str], ask: int = 0) -> str:
    """A multiple-choice question about the slice (the foundation stage's), in the diagnostic
    query's shape (options as `name (description)`, the same answer format), so what is learnt
    on general questions carries over to the diagnostic one."""
    listed = "\n".join(options)
    return f"{SLICE_INTRO}{question}?\n{listed}\n{REASONING_ASKS[ask]}{ANSWER_FORMAT}"


TEMPLATE_VERSION = "t2"  # t2: an infarct template always quotes its lesion box
REWRITE_SYSTEM = (
    "You are a cardiac radiologist preparing teaching material. Rewrite the de-identified LGE "
    "cardiac MRI report you are given into a reasoning template in the clinical order: "
    "(1) lesion observation: what enhancement and what pattern is seen; "
    "(2) localisation: which wall or segments, quoting the lesion box [x1, y1, x2, y2] in the "
    "256x256 image when one is given (an infarct's always is: quote it exactly), and saying "
    "there is no focal lesion when none is given; "
    "(3) differential diagnosis: weigh the alternatives among " + ", ".join(CLASSES) + " and "
    "end with exactly one final diagnosis. Do not hedge the final diagnosis. Use only facts in "
    "the report; never add names, dates or identifiers. Reply with a JSON object with the keys "
    '"observation", "localisation", "differential" and "diagnosis" (one of '
    + ", ".join(CLASSES)
    + "), and nothing else."
)


def rewrite_prompt(scrubbed_report: str, box: list[float] | None) -> str:
    where = (
        "Lesion box in the 256x256 image: [" + ", ".join(str(int(round(v))) for v in box) + "]."
        if box
        else "No lesion box is given for this image."
    )
    return f"{where}\n\nReport:\n{scrubbed_report.strip()}\n"
