"""Report figures: valid PNGs of the intended size, the same bytes on a rerun, and robustness to
the gaps a partial run leaves (missing images, empty curves)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cmr_rd.classes import CLASSES
from cmr_rd.plotting import DPI
from cmr_rd.report import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = [*CLASSES, "unparsed"]


def _confusion(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"labels": LABELS, "matrix": rng.integers(0, 9, (6, 7)).tolist()}


def _check_png(path, width_in: float, height_in: float) -> bytes:
    png = path.read_bytes()
    assert png.startswith(PNG_MAGIC) and b"Software" not in png
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.size == (round(width_in * DPI), round(height_in * DPI))
    return png


def _twice(plot, data, tmp_path, name, *args, **kw) -> tuple:
    first, second = tmp_path / "a" / f"{name}.png", tmp_path / "b" / f"{name}.png"
    assert plot(data, first, *args, **kw) is None
    plot(data, second, *args, **kw)
    assert first.read_bytes() == second.read_bytes()
    return first


def test_summed_confusion_adds_seeds_cell_by_cell():
    confs = [_confusion(s) for s in (1, 2, 3)]
    total = figures.summed_confusion(confs)
    assert total.shape == (6, 7) and total.dtype == np.int64
    expected = sum(np.asarray(c["matrix"]) for c in confs)
    np.testing.assert_array_equal(total, expected)
    assert total.sum() == sum(np.sum(c["matrix"]) for c in confs)


def test_summed_confusion_rejects_mismatched_seeds():
    other = {"labels": list(reversed(LABELS)), "matrix": _confusion(1)["matrix"]}
    with pytest.raises(ValueError, match="labels"):
        figures.summed_confusion([_confusion(1), other])
    with pytest.raises(ValueError, match="shape"):
        figures.summed_confusion([{"labels": LABELS, "matrix": [[1] * 7] * 5}])
    with pytest.raises(ValueError):
        figures.summed_confusion([])


def test_confusion_figure(tmp_path):
    entries = [
        ("CMR-RD (TS)", [_confusion(s) for s in (1, 2, 3)]),
        ("zero-shot", [_confusion(9)]),
        ("static", [_confusion(4), _confusion(5)]),
        ("full batch", [_confusion(6)]),
    ]
    png = _twice(figures.plot_confusion_matrices, entries, tmp_path, "confusion")
    _check_png(png, 3 * 4.5, 2 * 4.0)  # three panels a row, two rows
    with pytest.raises(ValueError):
        figures.plot_confusion_matrices([], tmp_path / "x.png")


@pytest.fixture
def samples(tmp_path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256), dtype=np.uint8)).save(tmp_path / "s.png")
    rows = []
    for c in CLASSES:
        for k in range(3):
            correct = k != 1
            mi = c == "MI"
            rows.append({
                "id": f"{c}_{k}", "patient": f"p{k}", "label": c, "correct": correct,
                "image": str(tmp_path / ("s.png" if k != 2 else "gone.png")),
                "predicted": c if correct else (None if mi else "MI"),
                "think": "Patchy mid-wall $LGE$ { enhancement " * 30 if k == 0 else None,
                "completion": "<answer>MI</answer>",
                "box_true": np.array([40.0, 50, 120, 130]) if mi else None,
                "box_pred": [60.0, 70, 900, 150] if mi else None,  # runs off the image
                "iou": 0.4 if mi else None,
            })  # fmt: skip
    df = pd.DataFrame(rows)
    return df[~((df["label"] == "CAM") & ~df["correct"])]  # CAM has no wrong case


def test_gallery_picks_first_cases_by_id(samples):
    shuffled = samples.sample(frac=1.0, random_state=3)
    slots = figures.gallery_cases(shuffled, per_class=1)
    assert [(c, ok) for c, ok, _ in slots] == [(c, ok) for c in CLASSES for ok in (True, False)]
    picked = {(c, ok): [r["id"] for r in rows] for c, ok, rows in slots}
    assert picked[("HCM", True)] == ["HCM_0"] and picked[("HCM", False)] == ["HCM_1"]
    assert picked[("CAM", False)] == []
    two = {(c, ok): [r["id"] for r in rows] for c, ok, rows in figures.gallery_cases(samples, 2)}
    assert two[("DCM", True)] == ["DCM_0", "DCM_2"]


def test_gallery_figure_with_a_missing_image(samples, tmp_path):
    # per_class=2 takes each class's "_2" case, whose image does not exist.
    png = _twice(figures.plot_gallery, samples, tmp_path, "gallery", "Gallery $x$", per_class=2)
    _check_png(png, 4 * 5.75, 2.75 * 6 + 0.5)
    one = _twice(figures.plot_gallery, samples, tmp_path, "gallery1", "Gallery")
    _check_png(one, 2 * 5.75, 2.75 * 6 + 0.5)
    only_mi = samples[samples["label"] == "MI"]
    figures.plot_gallery(only_mi, tmp_path / "mi.png", "MI only")
    _check_png(tmp_path / "mi.png", 2 * 5.75, 2.75 + 0.5)
    with pytest.raises(ValueError, match="image"):
        figures.plot_gallery(samples.drop(columns="image"), tmp_path / "x.png", "t")


def test_text_and_box_helpers():
    assert figures._box(None) is None and figures._box(float("nan")) is None
    assert figures._box(np.array([1, 2, 3, 4])) == (1.0, 2.0, 3.0, 4.0)
    assert figures._box([1, 2, 3]) is None and figures._box([1, 2, float("inf"), 4]) is None
    text = figures._text_of({"think": "  ", "completion": "word " * 200})
    assert text.startswith("word") and text.endswith("…")
    assert len(text.replace("\n", " ")) <= figures.TEXT_CHARS
    assert figures._text_of({"think": "short reasoning"}) == "short reasoning"


def _curves():
    steps = np.arange(1, 21)
    stage = {
        "align": pd.DataFrame({"step": steps, "epoch": steps / 20, "loss": 2 / steps,
                               "learning_rate": 1e-4}),
        "sft": pd.DataFrame({"step": steps, "epoch": steps / 20, "loss": 1 / steps,
                             "learning_rate": 1e-4}),
    }  # fmt: skip
    losses = [pd.DataFrame({"step": range(1, 6), "epoch": 1.0, "loss": [0.5, 0.4, 0.3, 0.2, 0.1],
                            "learning_rate": 1e-5}) for _ in range(3)]  # fmt: skip
    rewards = pd.DataFrame([
        {"phase": p, "step": s, "class": c, "prompts": 2 if c == "HCM" else 1,
         "total_mean": 1.0 if c == "HCM" else 0.0}
        for p in (1, 2, 3) for s in range(1, 6) for c in ("HCM", "CAM")
    ])  # fmt: skip
    return stage, losses, rewards


def test_mean_reward_is_prompt_weighted():
    _, _, rewards = _curves()
    mean = figures.mean_reward_per_step(rewards)
    assert len(mean) == 15 and np.allclose(mean["total_mean"], 2 / 3)  # (2·1 + 1·0) / 3
    unweighted = figures.mean_reward_per_step(rewards.assign(prompts=0))
    assert np.allclose(unweighted["total_mean"], 0.5)


def test_training_curves_figure(tmp_path):
    stage, losses, rewards = _curves()
    out = tmp_path / "a.png"
    figures.plot_training_curves(stage, losses, rewards, out)
    _check_png(out, 4 * 4.0, 3.5)  # align, sft, GPPO loss, GPPO reward
    again = tmp_path / "b.png"
    figures.plot_training_curves(stage, losses, rewards, again)
    assert out.read_bytes() == again.read_bytes()


def test_training_curves_skip_empty_inputs(tmp_path):
    stage, losses, _ = _curves()
    partial = {"align": stage["align"], "sft": pd.DataFrame(columns=["step", "loss"])}
    figures.plot_training_curves(partial, [pd.DataFrame(), losses[0]], None, tmp_path / "p.png")
    _check_png(tmp_path / "p.png", 2 * 4.0, 3.5)  # align and GPPO loss only
    figures.plot_training_curves({}, [], pd.DataFrame(), tmp_path / "none.png")
    _check_png(tmp_path / "none.png", 4.0, 3.5)


def test_missing_or_broken_image_draws_a_placeholder(tmp_path):
    from cmr_rd.plotting import new_figure

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    for path, why in ((tmp_path / "gone.png", "missing"), (broken, "unreadable")):
        ax = new_figure(2, 2).add_subplot()
        figures._draw_image(ax, {"image": str(path)})
        (text,) = ax.texts
        assert why in text.get_text() and path.name in text.get_text().replace("\n", "")
        assert not ax.images
