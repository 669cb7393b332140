"""Beta posterior: the update rule to the digit, the JSON round trip, and errors that say where."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import integrate

from cmr_rd.classes import CLASSES
from cmr_rd.gppo.posterior import Posterior, density, update


def test_uniform_prior_is_beta_1_1_in_class_order():
    post = Posterior.uniform()
    assert list(post.alpha) == list(CLASSES) == list(post.beta)
    assert set(post.alpha.values()) == {1.0} and set(post.beta.values()) == {1.0}
    assert post.mean() == {c: 0.5 for c in CLASSES}
    assert post.expected_weight_share() == pytest.approx({c: 1 / 6 for c in CLASSES})


def test_paper_update_adds_counts_exactly():
    post = update(Posterior.uniform(), {"HCM": 40, "CAM": 3}, {"HCM": 10, "CAM": 7, "MI": 5})
    assert post.alpha == {"HCM": 41, "DCM": 1, "CAM": 4, "LVNC": 1, "MI": 1, "NOR": 1}
    assert post.beta == {"HCM": 11, "DCM": 1, "CAM": 8, "LVNC": 1, "MI": 6, "NOR": 1}
    # A second phase adds on top, without any shrinkage (λ = 1).
    post = update(post, {"CAM": 2}, {"CAM": 1})
    assert (post.alpha["CAM"], post.beta["CAM"]) == (6, 9)
    assert post.alpha["HCM"] == 41
    # Non-integer parameters stay exact too: α + n, not 1 + (α - 1) + n.
    odd = Posterior(alpha={"HCM": 0.1}, beta={"HCM": 0.3})
    assert update(odd, {"HCM": 0}, {}).alpha["HCM"] == 0.1


def test_discounted_update_by_hand():
    # α=11, β=5 with λ=0.5 and n+=4, n-=2: α = 1 + 0.5·10 + 4 = 10, β = 1 + 0.5·4 + 2 = 5.
    prior = Posterior(alpha={c: 11.0 for c in CLASSES}, beta={c: 5.0 for c in CLASSES})
    post = update(prior, {"LVNC": 4}, {"LVNC": 2}, discount=0.5)
    assert (post.alpha["LVNC"], post.beta["LVNC"]) == (10.0, 5.0)
    # Classes without counts only shrink toward 1: 1 + 0.5·10 = 6, 1 + 0.5·4 = 3.
    assert (post.alpha["NOR"], post.beta["NOR"]) == (6.0, 3.0)
    # The uniform prior is a fixed point of the discount.
    assert update(Posterior.uniform(), {}, {}, discount=0.5) == Posterior.uniform()


def test_mean_and_expected_weight_share():
    post = Posterior(alpha={"HCM": 9, "CAM": 1}, beta={"HCM": 1, "CAM": 3})
    assert post.mean() == pytest.approx({"HCM": 0.9, "CAM": 0.25})
    # E[1-θ] = 0.1 and 0.75, normalised.
    assert post.expected_weight_share() == pytest.approx({"HCM": 0.1 / 0.85, "CAM": 0.75 / 0.85})


def test_round_trip_through_json():
    post = update(Posterior.uniform(), {"HCM": 3, "NOR": 1}, {"DCM": 2}, discount=0.7)
    d = json.loads(json.dumps(post.to_dict()))
    assert list(d) == ["alpha", "beta"] and list(d["alpha"]) == list(CLASSES)
    assert Posterior.from_dict(d) == post
    # Keys arrive in any order and leave in CLASSES order.
    shuffled = {"beta": dict(reversed(d["beta"].items())), "alpha": d["alpha"]}
    assert list(Posterior.from_dict(shuffled).beta) == list(CLASSES)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"alpha": {"HCM": 1}}, "'beta'"),
        ({"beta": {"HCM": 1}}, "'alpha'"),
        ({"alpha": {"HCM": 1, "CAM": 1}, "beta": {"HCM": 1}}, "CAM"),
        ({"alpha": {"HCM": 1, "CAM": 0}, "beta": {"HCM": 1, "CAM": 1}}, r"alpha\['CAM'\]"),
        ({"alpha": {"HCM": 1}, "beta": {"HCM": "x"}}, r"beta\['HCM'\]"),
        ({"alpha": {"HCM": float("nan")}, "beta": {"HCM": 1}}, r"alpha\['HCM'\]"),
        ({"alpha": [1], "beta": {"HCM": 1}}, "'alpha'"),
    ],
)
def test_from_dict_errors_name_the_key(bad, match):
    with pytest.raises(ValueError, match=match):
        Posterior.from_dict(bad)


def test_update_errors_name_the_class():
    prior = Posterior.uniform()
    with pytest.raises(ValueError, match=r"wrong\['MI'\]"):
        update(prior, {"MI": 1}, {"MI": -1})
    with pytest.raises(ValueError, match=r"correct\['NOR'\]"):
        update(prior, {"NOR": -3}, {})
    with pytest.raises(ValueError, match="'XYZ'"):
        update(prior, {"XYZ": 1}, {})
    for bad in (0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="discount"):
            update(prior, {}, {}, discount=bad)


def test_density_is_the_beta_pdf_and_integrates_to_one():
    post = Posterior(alpha={"HCM": 30.0, "CAM": 2.0}, beta={"HCM": 4.0, "CAM": 5.5})
    for c in post.classes:
        area, _ = integrate.quad(lambda x, c=c: float(density(post, c, np.array([x]))[0]), 0, 1)
        assert area == pytest.approx(1.0, abs=1e-6)
    # Beta(2, 5.5) at 0.25 by hand: x(1-x)^4.5 / B(2, 5.5), and B(2, 5.5) = Γ(2)Γ(5.5)/Γ(7.5)
    # = 1/(5.5·6.5) = 1/35.75.
    assert density(post, "CAM", np.array([0.25]))[0] == pytest.approx(0.25 * 0.75**4.5 * 35.75)
    with pytest.raises(ValueError, match="LVNC"):
        density(post, "LVNC", np.array([0.5]))


def test_a_phase_starts_from_flat_previous_or_the_start_models_probe(tmp_path):
    from cmr_rd.gppo.posterior import load_prior

    assert load_prior([]) == Posterior.uniform()
    previous = Posterior(alpha=dict.fromkeys(CLASSES, 3.0), beta=dict.fromkeys(CLASSES, 2.0))
    path = tmp_path / "posterior.json"
    path.write_text(json.dumps({"posterior": previous.to_dict()}))
    assert load_prior([path]) == previous
    # The cold start's probe check (gppo.prior start_probe): Beta(1, 1) plus its counts.
    check = tmp_path / "probe_check.json"
    correct = dict.fromkeys(CLASSES, 0) | {"HCM": 28, "LVNC": 2}
    check.write_text(json.dumps({"per_class_correct": correct,
                                 "per_class_n": dict.fromkeys(CLASSES, 30)}))  # fmt: skip
    prior = load_prior([check])
    assert prior.alpha["HCM"] == 29 and prior.beta["HCM"] == 3
    assert prior.alpha["LVNC"] == 3 and prior.beta["LVNC"] == 29
    assert prior.alpha["MI"] == 1 and prior.beta["MI"] == 31
