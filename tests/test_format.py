"""The one answer-format parser (QC now, GPPO rewards later): strict, never raising."""

from __future__ import annotations

import pytest

from cmr_rd.format import box_iou, parse_completion, render_target

GOOD = "<think>Mid-wall LGE at the insertion points.</think><location>[10,20,30,40]</location><answer>HCM</answer>"


def test_the_exact_format_parses():
    parsed = parse_completion(GOOD)
    assert parsed.valid and parsed.reason is None
    assert parsed.box == (10, 20, 30, 40) and parsed.label == "HCM"
    assert parse_completion("  \n" + GOOD + "\n ").valid  # whitespace outside tags is allowed
    spaced = "<think>x</think>\n<location> [ 1.5, 2 , 30.25,40 ] </location>\n<answer> Hypertrophic cardiomyopathy. </answer>"
    parsed = parse_completion(spaced)
    assert parsed.valid and parsed.box == (1.5, 2.0, 30.25, 40.0) and parsed.label == "HCM"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty completion"),
        ("   ", "empty completion"),
        (GOOD + "<answer>DCM</answer>", "appears 2 times"),  # duplicated tag
        ("Sure! " + GOOD, "outside the tags"),  # text outside tags
        (GOOD.replace("</answer>", "</answer> done"), "outside the tags"),
        ("<think> </think><location>[1,2,3,4]</location><answer>MI</answer>", "empty think"),
        ("<think>x</think><location>[1,2,3,4]</location><answer> </answer>", "empty answer"),
        ("<location>[1,2,3,4]</location><think>x</think><answer>MI</answer>", "out of order"),
        ("<think>x<answer>MI</answer></think><location>[1,2,3,4]</location>", "out of order"),
        ("<think>x</think><location>[30,2,10,4]</location><answer>MI</answer>", "x1 < x2"),
        ("<think>x</think><location>[3,40,10,4]</location><answer>MI</answer>", "y1 < y2"),
        (
            "<think>x</think><location>[0,0,257,10]</location><answer>MI</answer>",
            "outside [0, 256]",
        ),
        (
            "<think>x</think><location>[-1,0,20,10]</location><answer>MI</answer>",
            "outside [0, 256]",
        ),
        ("<think>x</think><location>[a,b,c,d]</location><answer>MI</answer>", "four numbers"),
        ("<think>x</think><location>[1,2,3]</location><answer>MI</answer>", "four numbers"),
        ("<think>x</think><location>[\uff11,2,3,4]</location><answer>MI</answer>", "four numbers"),
        (
            "\uff1cthink\uff1ex</think><location>[1,2,3,4]</location><answer>MI</answer>",
            "appears 0",
        ),
        (
            "<think>x</think><location>[1,2,3,4]</location><answer>MI",
            "appears 0 times",
        ),  # truncated
    ],
)
def test_malformed_completions_are_not_the_format(text, reason):
    parsed = parse_completion(text)
    assert not parsed.valid
    assert reason in parsed.reason


def test_answer_naming_several_classes_is_not_a_class():
    parsed = parse_completion(GOOD.replace(">HCM<", ">HCM or CAM<"))
    assert parsed.valid and parsed.label is None
    parsed = parse_completion(GOOD.replace(">HCM<", ">B<"))  # an option letter is not a name
    assert parsed.label is None


def test_render_then_parse_round_trips():
    text = render_target("reasoning here", [10.4, 20.6, 30, 40], "MI")
    assert (
        text == "<think>reasoning here</think><location>[10,21,30,40]</location><answer>MI</answer>"
    )
    assert parse_completion(text).label == "MI"


def test_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
