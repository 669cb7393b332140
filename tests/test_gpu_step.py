"""benchmarks/gpu_step.py on the CPU at a tiny scale, its no-GPU exits, and the 4B config's size."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Gemma3ForConditionalGeneration

from cmr_rd.model.configs import gemma3_4b_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks/gpu_step.py"


@pytest.fixture(scope="module")
def gpu_step():
    spec = importlib.util.spec_from_file_location("gpu_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_step"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _parts(config) -> dict[str, int]:
    with torch.device("meta"):
        model = Gemma3ForConditionalGeneration(config)
    parts: dict[str, int] = {}
    for name, param in model.named_parameters():  # tied weights once
        part = name.split(".")[1] if name.startswith("model.") else name
        parts[part] = parts.get(part, 0) + param.numel()
    return parts


def test_gemma3_4b_config_has_the_real_size():
    """Gemma-3-4B: 4.30B parameters, 3.88B language model (tied embeddings), 0.42B SigLIP."""
    config = gemma3_4b_config()
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.num_hidden_layers, text.intermediate_size) == (2560, 34, 10240)
    assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (8, 4, 256)
    assert (text.vocab_size, text.sliding_window, text.query_pre_attn_scalar) == (262208, 1024, 256)
    assert text.layer_types.count("full_attention") == 5  # every 6th of 34
    assert text.rope_parameters["full_attention"]["factor"] == 8.0
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size) == (1152, 27, 896)
    assert (config.mm_tokens_per_image, config.image_token_index) == (256, 262144)
    parts = _parts(config)
    assert sum(parts.values()) == 4_300_079_472
    assert parts["language_model"] == 3_880_263_168
    assert round(parts["vision_tower"] / 1e9, 2) == 0.42


def test_scaled_config_is_small_and_consistent():
    config = gemma3_4b_config(0.02)
    vision = config.vision_config
    assert sum(_parts(config).values()) < 1_000_000
    side = vision.image_size // vision.patch_size
    assert side == 4 * round(config.mm_tokens_per_image**0.5)  # 4x4 patches pool to a token
    assert config.image_token_index < config.text_config.vocab_size
    assert {"full_attention", "sliding_attention"} <= set(config.text_config.layer_types)
    with pytest.raises(ValueError):
        gemma3_4b_config(0)


def test_runs_on_the_cpu_at_a_tiny_scale(gpu_step, tmp_path, capsys):
    args = ["--scale", "0.02", "--device", "cpu", "--max-new-tokens", "4", "--repeats", "1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only contend with the rest of the suite
    try:
        assert gpu_step.main([*args, "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "gpu_step.json").read_text())
    assert (tmp_path / "gpu_step.md").read_text() in capsys.readouterr().out
    assert result["device"]["type"] == "cpu"
    assert result["device"]["peak_bf16_tflops"] is None and result["device"]["mfu_note"]
    phases = {"sft": ["forward", "backward", "optimizer"]}
    phases["gppo"] = ["generate", "old_logprobs", "ref_logprobs", "loss_backward", "optimizer"]
    for kind, names in phases.items():
        block = result[kind]
        assert list(block["phases"]) == names
        assert "peak_memory_gib" in block and block["peak_memory_gib"] is None  # CPU
        for phase in [*block["phases"].values(), block["step"]]:
            assert phase["tokens_per_s"] > 0 and phase["median_s"] > 0
            assert phase["mfu"] is None
        assert block["step"]["tflop"] > 0
    gppo = result["gppo"]
    assert gppo["sequences"] == gppo["prompts"] * gppo["group_size"] == 8
    assert gppo["generated_shape"] == [8, gppo["prompt_len"] + 4]
    sft = result["sft"]
    assert sft["batch"] == 2 and 0 < sft["assistant_tokens_per_sample"] < sft["seq_len"]
    assert result["mm_tokens_per_image"] == 4 and result["params"]["trainable"] > 0


def test_no_gpu_prints_one_line(gpu_step, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_step.main(["--require-gpu"]) == 1
    assert capsys.readouterr().out == gpu_step.NO_GPU + "\n"
    # --require-gpu wins over a CPU fallback.
    assert gpu_step.main(["--require-gpu", "--scale", "0.02"]) == 1
    assert capsys.readouterr().out == gpu_step.NO_GPU + "\n"


def test_plain_invocation_without_gpu_exits_zero(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO / "src")}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == [run.stdout.strip()] and "no GPU found" in run.stdout
    assert not (tmp_path / "gpu_step.json").exists()
