"""Guard: GPPO moves what it samples.

One GPPO phase whose Thompson-sampled quotas over-sample a class (HCM, the class the posterior
says the model gets wrong; the cold start answers NOR to every ring) must raise that class's
answer reward on held-out prompts, against the same phase from the same checkpoint on prompts
that never hold the class. This is the mechanism behind every sampling claim of the paper
(Table 2, Fig. 5): if the quota order stopped reaching the trainer, or the rewards stopped
reaching the update, the two would agree.

Why not against `full` sampling (the pool's own shares, HCM about a sixth)? On this tiny setup
the phase learns HCM only if some rollout happens to answer it, a rare draw, so whether a `full`
phase learns it is a coin weighted by how many HCM rollouts it gets: measured over seeds 7-14,
TS learned HCM in 8 of 8 phases and `full` in 2 of 8 (2 of 12 at G = 4 for one epoch, where TS
itself managed 7 of 12, so the old single-seed comparison passed or failed with the draw). A
phase that never samples HCM learned it in 0 of 6. The plan-level shares of TS against `full`
are still checked.

A tiny Gemma3 gets a short cold start on ring phantoms here, so the file needs no demo run.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from cmr_rd.gppo.posterior import Posterior
from cmr_rd.gppo.quotas import plan_phase
from cmr_rd.gppo.rewards import RewardConfig
from cmr_rd.gppo.train import GPPOConfig, train_phase
from cmr_rd.model.backbone import TinyConfig, build_tiny
from cmr_rd.model.generate import check_checkpoint
from cmr_rd.model.train import TrainConfig, train
from test_train import _corpus, make_rings

B, G = 6, 4
# The posterior after a probe on which HCM was mostly wrong and DCM/NOR mostly right: its draws
# give HCM most of every batch.
POSTERIOR = Posterior(
    alpha={"HCM": 2, "DCM": 20, "CAM": 1, "LVNC": 1, "MI": 1, "NOR": 20},
    beta={"HCM": 20, "DCM": 2, "CAM": 1, "LVNC": 1, "MI": 1, "NOR": 2},
)
MARGIN = 0.5  # answer reward (0 or 2.0 per prompt): TS must lead by a quarter of the scale
G_EFFECT = 8  # rollouts per prompt in the effect phases: enough HCM rollouts for TS every draw


@pytest.fixture(scope="module")
def cold_start(tmp_path_factory) -> Path:
    """A tiny model that follows the answer format on rings (and answers NOR to all of them)."""
    root = tmp_path_factory.mktemp("effect")
    model = build_tiny(root / "tiny", _corpus(), TinyConfig())
    data = make_rings(root / "sft", per_class=12, seed=11)
    cfg = TrainConfig(stage="sft", max_steps=120, batch_size=8, lr=3e-3, save_steps=1000,
                      logging_steps=10, threads=1, seed=5)  # fmt: skip
    train(model, data, root / "sft_out", cfg)
    return root / "sft_out" / "final"


def _phase(prompts: list[dict], strategy: str, path: Path) -> dict[str, int]:
    plan = plan_phase([r["label"] for r in prompts], POSTERIOR, strategy=strategy, batch_size=B,
                      n_batches=6, pool_threshold=2, seed=3, phase=2)  # fmt: skip
    rows = [{**prompts[i], "batch": k} for k, ids in enumerate(plan.batches) for i in ids]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dict(Counter(r["label"] for r in rows))


def _hcm_answer_reward(model: Path, held_out: Path) -> float:
    report = check_checkpoint(model, held_out, batch_size=32, max_new_tokens=48)
    return 2.0 * report["per_class_accuracy"]["HCM"]  # answer weight x valid, right answers


def test_one_ts_phase_raises_the_answer_reward_of_the_class_it_over_samples(cold_start, tmp_path):
    pool = make_rings(tmp_path / "pool", per_class=8, seed=21, with_answer=False)
    prompts = [json.loads(line) for line in pool.read_text().splitlines()]
    held = make_rings(tmp_path / "held", per_class=10, seed=31, with_answer=False)
    hcm_only = tmp_path / "held_hcm.jsonl"
    hcm_only.write_text(
        "".join(line + "\n" for line in held.read_text().splitlines() if '"HCM"' in line)
    )
    cfg = GPPOConfig(epochs=2.0, batch_prompts=B, num_generations=G_EFFECT,
                     micro_batch=B * G_EFFECT, max_completion_length=48, save_steps=1000,
                     threads=1, lr=5e-4, seed=7)  # fmt: skip
    rewards = RewardConfig(use_iou=False)
    before = _hcm_answer_reward(cold_start, hcm_only)
    without_hcm = [r for r in prompts if r["label"] != "HCM"]
    plans = {
        "ts": _phase(prompts, "ts", tmp_path / "ts.jsonl"),
        "full": _phase(prompts, "full", tmp_path / "full.jsonl"),
        "never": _phase(without_hcm, "full", tmp_path / "never.jsonl"),
    }
    shares = {k: counts.get("HCM", 0) / sum(counts.values()) for k, counts in plans.items()}
    # The quotas over-sample HCM under TS and not under full sampling ...
    assert shares["ts"] >= 0.5 > shares["full"] > shares["never"] == 0, shares
    after = {}
    for name in ("ts", "never"):
        out = tmp_path / name
        train_phase(cold_start, cold_start, tmp_path / f"{name}.jsonl", out, cfg, rewards, 2)
        after[name] = _hcm_answer_reward(out / "final", hcm_only)
    # ... and the phase moves the policy toward what it sampled, and only then.
    assert after["ts"] >= after["never"] + MARGIN, (before, after)
    assert after["ts"] >= before + MARGIN and after["never"] <= before, (before, after)


def _rollout_format_share(cold_start: Path, tmp_path: Path, temperature: float, top_p: float,
                          cap: int, min_p: float | None = None) -> float:  # fmt: skip
    """The format-valid share of two GPPO steps' rollouts, as the phase's health.csv logs it."""
    pool = make_rings(tmp_path / "pool", per_class=4, seed=41, with_answer=False)
    prompts = [json.loads(line) for line in pool.read_text().splitlines()]
    data = tmp_path / f"t{temperature}.jsonl"
    _phase(prompts, "full", data)
    cfg = GPPOConfig(max_steps=2, batch_prompts=B, num_generations=G, micro_batch=B * G,
                     max_completion_length=cap, save_steps=1000, threads=1, seed=7,
                     temperature=temperature, top_p=top_p, min_p=min_p)  # fmt: skip
    out = tmp_path / f"out{temperature}"
    train_phase(cold_start, cold_start, data, out, cfg, RewardConfig(use_iou=False), 1)
    rows = list(csv.DictReader((out / "health.csv").open()))
    assert len(rows) == 2
    return sum(float(r["format_valid"]) for r in rows) / len(rows)


def test_rollouts_at_the_configured_sampling_settings_are_mostly_format_valid(
    cold_start, tmp_path, repo
):
    """CI guard for RL health: after a cold start, the demo's sampling settings keep the rollouts
    in the answer format (broken rollouts bury the answer reward under the format reward). Far
    hotter sampling breaks them on the same model, so the guard can fail."""
    train = yaml.safe_load((repo / "config/config.yaml").read_text())["gppo"]["train"]
    cap = min(int(train["max_completion_length"]), 64)  # ring chains are short
    configured = _rollout_format_share(cold_start, tmp_path, float(train["temperature"]),
                                       float(train.get("top_p", 1.0)), cap,
                                       train.get("min_p"))  # fmt: skip
    # Mostly valid: the ring cold start has 120 steps (0.79 at 0.7; at the old 1.0 it was 0.02).
    assert configured >= 0.75, configured
    hot = _rollout_format_share(cold_start, tmp_path, 4.0, 1.0, cap)
    assert hot < configured - 0.2, (configured, hot)
