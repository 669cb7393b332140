"""GPPO's triple reward: format, answer, hybrid IoU, and the reward hacks they must not pay."""

from __future__ import annotations

import math
import random
import types

import pytest

from cmr_rd.format import box_iou
from cmr_rd.gppo.rewards import (
    COMPONENTS,
    RewardConfig,
    Scored,
    completion_text,
    giou,
    iou_term,
    reward_functions,
    score,
)

CFG = RewardConfig()
GT = (10, 20, 30, 40)
GOOD = "<think>Mid-wall LGE at the insertion points.</think><location>[10,20,30,40]</location><answer>HCM</answer>"


def make(answer: str = "HCM", box: str = "[10,20,30,40]", think: str = "LGE at the septum.") -> str:
    return f"<think>{think}</think><location>{box}</location><answer>{answer}</answer>"


# --- format and answer -------------------------------------------------------------------------


def test_the_exact_format_with_the_right_class_and_box_scores_everything():
    s = score(GOOD, "HCM", GT, CFG)
    assert (s.format, s.answer, s.iou) == (1.5, 2.0, 1.0)
    assert s.total == 4.5
    assert s.valid and s.reason is None and s.predicted == "HCM" and s.box_iou == 1.0


def test_no_lesion_box_scores_format_and_answer_only():
    s = score(GOOD, "HCM", None, CFG)
    assert (s.format, s.answer, s.iou, s.box_iou) == (1.5, 2.0, 0.0, None)
    assert s.total == 3.5


def test_wrong_class_keeps_only_the_format_and_the_box():
    s = score(GOOD, "DCM", None, CFG)
    assert (s.format, s.answer, s.total) == (1.5, 0.0, 1.5)
    assert s.predicted == "HCM"
    assert score(GOOD, "DCM", GT, CFG).total == 2.5


@pytest.mark.parametrize(
    "answer, label",
    [
        ("HCM", "HCM"),
        ("hcm", "HCM"),
        ("Hypertrophic Cardiomyopathy", "HCM"),
        ("hypertrophic cardiomyopathy", "hcm"),  # the label is canonicalised too
        ("HCM.", "HCM"),
        ("(dcm)", "DCM"),
        ("  Dilated cardiomyopathy!  ", "Dilated cardiomyopathy"),
        ("\uff28\uff23\uff2d", "HCM"),  # full-width 'ＨＣＭ' folds under NFKC
        ("left ventricular non\u2013compaction", "LVNC"),  # en dash unified with '-'
    ],
)
def test_answers_are_canonicalised(answer, label):
    s = score(make(answer), label, None, CFG)
    assert s.valid and s.answer == 2.0


def test_cyrillic_homoglyph_answer_is_no_class():
    # 'НСМ' is Cyrillic En, Es, Em: it looks like HCM but NFKC does not fold scripts together.
    s = score(make("\u041d\u0421\u041c"), "HCM", None, CFG)
    assert s.valid and s.format == 1.5
    assert s.predicted is None and s.answer == 0.0


@pytest.mark.parametrize("answer", ["HCM, DCM", "HCM or DCM", "HCM/DCM", "HCM and HCM", "B"])
def test_an_answer_naming_several_classes_or_none_earns_no_answer_reward(answer):
    s = score(make(answer), "HCM", None, CFG)
    assert s.answer == 0.0 and s.predicted is None
    assert s.total <= 1.5


def test_a_label_that_is_no_class_is_a_data_error():
    with pytest.raises(ValueError, match="not one of the classes"):
        score(GOOD, "XYZ", None, CFG)
    with pytest.raises(ValueError, match="not one of the classes"):
        score(GOOD, None, None, CFG)


# --- reward hacks and malformed completions: nothing at all ---------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(GOOD + "<answer>HCM</answer>", id="duplicated-answer"),
        pytest.param(
            GOOD.replace("</think>", "</think><think>more</think>"), id="duplicated-think"
        ),
        pytest.param("Sure! " + GOOD, id="text-before"),
        pytest.param(GOOD + " I hope this helps.", id="text-after"),
        pytest.param(make(think="   "), id="empty-think"),
        pytest.param(make(answer=" "), id="empty-answer"),
        pytest.param(make(answer="<think>HCM</think>"), id="think-nested-in-answer"),
        pytest.param(
            "<think>x<answer>HCM</answer></think><location>[10,20,30,40]</location>",
            id="answer-nested-in-think",
        ),
        pytest.param(make(box="[30,20,10,40]"), id="x1>x2"),
        pytest.param(make(box="[10,20,10,40]"), id="x1==x2"),
        pytest.param(make(box="[10,40,30,40]"), id="y1==y2"),
        pytest.param(make(box="[10,20,300,40]"), id="out-of-bounds-high"),
        pytest.param(make(box="[-5,20,30,40]"), id="out-of-bounds-negative"),
        pytest.param(make(box="[a,b,c,d]"), id="non-numeric"),
        pytest.param(make(box="[10,20,30]"), id="three-numbers"),
        pytest.param(make(box="[1e1,20,30,40]"), id="exponent"),
        pytest.param(make(box="[nan,20,30,40]"), id="nan"),
        pytest.param(make(box="[\uff11\uff10,20,30,40]"), id="full-width-digits"),
        pytest.param(GOOD.replace("<think>", "\uff1cthink\uff1e"), id="full-width-brackets"),
        pytest.param(GOOD.replace("<answer>", "<\u0430nswer>"), id="cyrillic-a-in-tag"),
        pytest.param(GOOD.upper(), id="upper-case-tags"),
        pytest.param("", id="empty"),
        pytest.param("   \n", id="whitespace"),
        pytest.param(GOOD[: GOOD.index("</answer>") + 3], id="truncated-mid-closing-tag"),
        pytest.param(GOOD[: GOOD.index("HCM") + 1], id="truncated-mid-answer"),
        pytest.param(GOOD[: GOOD.index("<answer>")], id="truncated-before-answer"),
    ],
)
def test_malformed_completions_score_zero_everything_even_with_the_right_box(text):
    s = score(text, "HCM", GT, CFG)
    assert (s.format, s.answer, s.iou, s.total) == (0.0, 0.0, 0.0, 0.0)
    assert not s.valid and s.reason and s.predicted is None and s.box_iou is None


def test_whitespace_outside_the_tags_is_still_the_format():
    assert score("\n  " + GOOD + "\n", "HCM", GT, CFG).total == 4.5


def test_whole_image_box_passes_format_but_earns_less_than_any_hit():
    s = score(make(box="[0,0,256,256]"), "HCM", (100, 100, 120, 120), CFG)
    assert s.valid and s.format == 1.5 and s.answer == 2.0
    assert s.box_iou == pytest.approx(400 / 256**2)
    assert 0 < s.iou < CFG.iou_weight * CFG.iou_dense_scale
    assert s.iou < CFG.iou_weight * CFG.iou_threshold  # the least any hit earns


# --- the hybrid IoU term -------------------------------------------------------------------


def test_exact_hit_earns_the_full_iou_weight():
    assert iou_term(GT, GT, CFG) == 1.0
    assert iou_term(GT, GT, RewardConfig(iou_weight=2.5)) == 2.5


def test_a_hit_is_paid_its_plain_iou():
    # IoU = 400 / 600: above tau, so the sparse branch pays w * IoU.
    assert iou_term((10, 20, 30, 40), (10, 20, 30, 50), CFG) == pytest.approx(2 / 3)
    assert iou_term((10, 20, 30, 40), (10, 20, 30, 50), RewardConfig(iou_weight=3)) == (
        pytest.approx(2.0)
    )
    # IoU exactly tau is a hit.
    assert iou_term((0, 0, 10, 10), (0, 0, 10, 20), CFG) == 0.5


def test_a_miss_is_paid_kappa_times_rescaled_giou():
    # Overlapping miss: IoU = GIoU = 200 / 600 = 1/3 < tau -> 0.25 * (1 + 1/3) / 2 = 1/6.
    assert iou_term((10, 20, 30, 40), (20, 20, 40, 40), CFG) == pytest.approx(1 / 6)
    # Near miss, no overlap: union 800, hull 45 x 20 = 900, GIoU = -1/9 -> 0.25 * (8/9) / 2.
    near = iou_term((125, 100, 145, 120), (100, 100, 120, 120), CFG)
    assert near == pytest.approx(1 / 9)
    # Far miss in the corner: still a positive reward, but less than the near miss.
    far = iou_term((0, 0, 20, 20), (100, 100, 120, 120), CFG)
    assert 0 < far < near


def test_sliding_toward_the_lesion_never_lowers_the_reward():
    gt = (118, 118, 138, 138)
    rewards = [iou_term((x, 118, x + 20, 138), gt, CFG) for x in range(0, 119)]
    assert all(b >= a for a, b in zip(rewards, rewards[1:], strict=False))
    assert rewards[0] < rewards[90] < rewards[-1] == 1.0  # strictly better while still a miss


@pytest.mark.parametrize(
    "cfg",
    [CFG, RewardConfig(iou_threshold=0.3, iou_dense_scale=0.3), RewardConfig(iou_dense_scale=0.0)],
)
def test_no_miss_ever_reaches_kappa_or_beats_a_hit(cfg):
    rng = random.Random(0)
    gt = (100, 90, 140, 150)
    for _ in range(5000):
        x1, x2 = sorted(rng.sample(range(257), 2))
        y1, y2 = sorted(rng.sample(range(257), 2))
        pred = (x1, y1, x2, y2)
        term = iou_term(pred, gt, cfg)
        hit = box_iou(pred, gt) >= cfg.iou_threshold
        assert 0.0 <= term <= cfg.iou_weight
        if hit:
            assert term >= cfg.iou_weight * cfg.iou_threshold
        else:
            assert term <= cfg.iou_weight * cfg.iou_dense_scale
            assert term < cfg.iou_weight * cfg.iou_threshold


def test_invalid_format_gets_no_iou_even_with_a_perfect_box():
    s = score(GOOD.replace("<answer>HCM</answer>", "<answer>HCM</answer> ok"), "HCM", GT, CFG)
    assert s.iou == 0.0 and s.box_iou is None


def test_iou_ablation_pays_nothing_and_drops_the_function():
    cfg = RewardConfig(use_iou=False)
    s = score(GOOD, "HCM", GT, cfg)
    assert s.iou == 0.0 and s.total == 3.5
    assert s.box_iou == 1.0  # still reported for logging
    assert iou_term(GT, GT, cfg) == 0.0
    assert [f.__name__ for f in reward_functions(cfg)] == ["format_reward", "answer_reward"]


@pytest.mark.parametrize(
    "box, match",
    [
        ((30, 20, 10, 40), "x1 < x2"),
        ((10, 20, 10, 40), "x1 < x2"),
        ((10, 40, 30, 40), "y1 < y2"),
        ((10, 20, 300, 40), "outside"),
        ((-1, 20, 30, 40), "outside"),
        (("a", 20, 30, 40), "4 numbers"),
        (("10", 20, 30, 40), "4 numbers"),  # a string is not a number, even a numeric one
        ((True, 20, 30, 40), "4 numbers"),
        ((10, 20, 30), "4 numbers"),
        ("10,20,30,40", "4 numbers"),
        (7, "4 numbers"),
        ((math.nan, 20, 30, 40), "non-finite"),
    ],
)
def test_a_malformed_ground_truth_box_is_a_data_error(box, match):
    with pytest.raises(ValueError, match=match):
        score(GOOD, "HCM", box, CFG)


def test_ground_truth_box_may_be_a_list_of_ints_or_floats():
    assert score(GOOD, "HCM", [10.0, 20, 30, 40.0], CFG).iou == 1.0


# --- GIoU ------------------------------------------------------------------------------------


def test_giou_known_values():
    assert giou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    # Hand computed: inter 1, union 7, hull 9 -> 1/7 - 2/9 = -5/63.
    assert giou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(-5 / 63)
    # Disjoint side by side: union 200, hull 300 -> -1/3.
    assert giou((0, 0, 10, 10), (20, 0, 30, 10)) == pytest.approx(-1 / 3)
    # Nested: GIoU equals IoU because the hull is the union.
    assert giou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(0.04)
    # Tiny boxes in opposite corners: close to -1, never below.
    far = giou((0, 0, 1, 1), (255, 255, 256, 256))
    assert -1.0 <= far < -0.9999


def test_giou_is_symmetric():
    a, b = (3, 7, 50, 90), (20, 1, 80, 40)
    assert giou(a, b) == pytest.approx(giou(b, a))


@pytest.mark.parametrize(
    "a, b",
    [
        ((5, 5, 5, 5), (5, 5, 5, 5)),  # the same point
        ((0, 0, 0, 0), (10, 0, 10, 0)),  # points on one line: zero hull
        ((0, 0, 0, 10), (0, 0, 0, 10)),  # zero-width
        ((10, 10, 0, 0), (0, 0, 10, 10)),  # inverted
        ((10, 10, 0, 0), (20, 20, 5, 5)),  # both inverted
    ],
)
def test_giou_of_degenerate_boxes_is_finite_and_bounded(a, b):
    value = giou(a, b)
    assert math.isfinite(value) and -1.0 <= value <= 1.0
    assert value <= 0.0  # an empty box overlaps nothing


# --- TRL plumbing -------------------------------------------------------------------------


def test_completion_text_reads_every_trl_shape():
    assert completion_text(GOOD) == GOOD
    assert completion_text([{"role": "assistant", "content": GOOD}]) == GOOD
    assert completion_text({"role": "assistant", "content": GOOD}) == GOOD
    parts = [
        {"type": "image"},
        {"type": "text", "text": GOOD[:20]},
        {"type": "text", "text": GOOD[20:]},
    ]
    assert completion_text([{"role": "assistant", "content": parts}]) == GOOD
    assert (
        completion_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": GOOD}])
        == GOOD
    )


@pytest.mark.parametrize(
    "completion",
    [
        None,
        42,
        [],
        [None],
        [{"role": "assistant"}],
        [{"role": "assistant", "content": None}],
        [{"content": [{"type": "text"}]}],
        b"<think>",
    ],
)
def test_completion_text_never_raises(completion):
    assert completion_text(completion) == ""
    assert score(completion, "HCM", GT, CFG).total == 0.0


def test_reward_functions_are_named_plain_functions_in_order():
    funcs = reward_functions(CFG)
    assert [f.__name__ for f in funcs] == ["format_reward", "answer_reward", "iou_reward"]
    assert [f.__name__.removesuffix("_reward") for f in funcs] == list(COMPONENTS)
    assert all(isinstance(f, types.FunctionType) for f in funcs)
    from trl.trainer.utils import get_callable_name

    assert [get_callable_name(f) for f in funcs] == ["format_reward", "answer_reward", "iou_reward"]


def test_reward_functions_called_the_trl_way():
    texts = [
        GOOD,  # right class, exact box
        make("DCM"),  # wrong class, exact box
        make("MI", box="[0,0,256,256]"),  # right class, whole-image box vs a small lesion
        "Sure! " + GOOD,  # text outside the tags
        make("NOR"),  # right class, no lesion box
    ]
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    labels = ["HCM", "HCM", "MI", "HCM", "NOR"]
    boxes = [list(GT), list(GT), [100, 100, 120, 120], list(GT), None]
    prompts = [[{"role": "user", "content": "?"}]] * len(texts)
    extra = {"trainer_state": None, "log_extra": None, "log_metric": None, "id": list("abcde")}
    fmt, ans, iou = (
        f(
            prompts=prompts,
            completions=completions,
            completion_ids=[[1]] * 5,
            label=labels,
            box=boxes,
            **extra,
        )
        for f in reward_functions(CFG)
    )
    assert fmt == [1.5, 1.5, 1.5, 0.0, 1.5]
    assert ans == [2.0, 0.0, 2.0, 0.0, 2.0]
    assert iou[:2] == [1.0, 1.0] and iou[3:] == [0.0, 0.0]
    assert 0 < iou[2] < CFG.iou_threshold
    assert all(isinstance(v, float) for v in fmt + ans + iou)
    for i, text in enumerate(texts):  # the same numbers as `score`
        s: Scored = score(text, labels[i], boxes[i], CFG)
        assert (fmt[i], ans[i], iou[i]) == (s.format, s.answer, s.iou)


def test_reward_functions_accept_plain_text_completions_and_no_box_column():
    fmt, ans, iou = (
        f([""] * 2, [GOOD, "nope"], label=["HCM", "HCM"]) for f in reward_functions(CFG)
    )
    assert (fmt, ans, iou) == ([1.5, 0.0], [2.0, 0.0], [0.0, 0.0])


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"label": ["HCM"]}, {"label": "HCM"}, {"label": ["HCM", "HCM"], "box": [None]}],
)
def test_reward_functions_refuse_missing_or_misaligned_columns(kwargs):
    for f in reward_functions(CFG):
        with pytest.raises(ValueError, match="column"):
            f(None, [GOOD, GOOD], **kwargs)


# --- config ----------------------------------------------------------------------------------


def test_config_defaults_match_the_method():
    assert CFG == RewardConfig.from_mapping({}) == RewardConfig.from_mapping(None)
    assert (CFG.format_weight, CFG.answer_weight, CFG.iou_weight) == (1.5, 2.0, 1.0)
    assert (CFG.iou_threshold, CFG.iou_dense_scale, CFG.use_iou, CFG.image_size) == (
        0.5,
        0.25,
        True,
        256,
    )


def test_from_mapping_overrides_and_refuses_unknown_keys():
    cfg = RewardConfig.from_mapping({"iou_weight": 2, "use_iou": False})
    assert cfg.iou_weight == 2 and cfg.use_iou is False
    with pytest.raises(ValueError, match="iou_tau.*kappa|kappa.*iou_tau"):
        RewardConfig.from_mapping({"iou_tau": 0.5, "kappa": 0.1, "iou_weight": 1})


@pytest.mark.parametrize(
    "values, field",
    [
        ({"iou_dense_scale": 0.6}, "iou_dense_scale"),  # kappa > tau: a miss could beat a hit
        ({"iou_threshold": 0.2}, "iou_dense_scale"),  # default kappa 0.25 > tau 0.2
        ({"iou_dense_scale": -0.1}, "iou_dense_scale"),
        ({"iou_threshold": 0.0, "iou_dense_scale": 0.0}, "iou_threshold"),
        ({"iou_threshold": 1.5}, "iou_threshold"),
        ({"iou_weight": -1}, "iou_weight"),
        ({"answer_weight": math.inf}, "answer_weight"),
        ({"format_weight": "1.5"}, "format_weight"),
        ({"iou_weight": True}, "iou_weight"),
        ({"use_iou": "false"}, "use_iou"),
        ({"image_size": 256.0}, "image_size"),
        ({"image_size": 0}, "image_size"),
    ],
)
def test_config_refuses_bad_values_naming_the_field(values, field):
    with pytest.raises(ValueError, match=field):
        RewardConfig.from_mapping(values)


def test_kappa_equal_to_tau_is_allowed_and_a_miss_still_loses():
    cfg = RewardConfig(iou_threshold=0.4, iou_dense_scale=0.4)
    miss = iou_term((0, 0, 256, 256), (100, 100, 120, 120), cfg)
    assert miss < cfg.iou_weight * cfg.iou_threshold


def test_image_size_bounds_the_predicted_box():
    text = make(box="[10,20,300,400]")
    assert score(text, "HCM", None, CFG).total == 0.0
    assert score(text, "HCM", (10, 20, 300, 400), RewardConfig(image_size=512)).total == 4.5
