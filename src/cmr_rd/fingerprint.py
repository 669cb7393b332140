"""The arithmetic of this machine, one digest per library: which one makes two CPUs part.

The pinned numerics (cmr_rd.numerics) give the same bytes on every run on one kind of CPU, and
our AMD EPYC and an Intel Xeon gave other demo tables (docs/numerics.md, "When two machines
differ"). The demo mixes MKL's matrix products, ATen's vectorised kernels, oneDNN's convolution
and NumPy's loops. `python -m cmr_rd.fingerprint` runs a fixed piece of each on one thread,
under the pins, and prints a short digest per piece; run on two machines, the first line that
differs names the library. `--json` for the record, as docs/numerics.md keeps it per machine.

- `mkl_sgemm`: fp32 matrix products of the shapes the tiny backbone's layers and attention use.
- `mkl_vml`: exp, log, sqrt and erf, which ATen computes with MKL's vector math for fp32 (AdamW's
  square root among them): on the Intel Xeon they are the elementwise ops whose bytes follow
  MKL's branch.
- `aten_kernels`: ATen's own vectorised kernels: tanh-GELU, softmax, layer norm, RMS norm,
  cos/sin, sums.
- `onednn_conv`: the vision tower's patch convolution (forward and weight gradient) as torch runs
  it, through oneDNN; `native_conv`: the same with oneDNN switched off (ATen's own path, MKL).
- `adamw`: AdamW steps on fixed gradients.
- `sampling`: seeded multinomial sampling from fixed probabilities (GPPO's rollouts).
- `tiny_gemma3`: eight AdamW steps of a tiny Gemma3 VLM (tower, projector, language model).
- `numpy`: NumPy's transcendental loops and a dot product.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

import cmr_rd  # noqa: F401 (the pins, before NumPy and torch load)
from cmr_rd import numerics

DIGITS = 16


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.detach().contiguous().numpy().tobytes() if hasattr(a, "detach") else a.tobytes())
    return h.hexdigest()[:DIGITS]


def _randn(torch, *shape, seed: int):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def mkl_sgemm(torch) -> str:
    out = []
    for i, (m, k, n) in enumerate([(64, 64, 128), (128, 64, 64), (32, 40, 8), (16, 256, 2048)]):
        a, b = _randn(torch, m, k, seed=10 + i), _randn(torch, k, n, seed=20 + i)
        out += [a @ b, (b.T @ a.T), torch.bmm(a.expand(2, m, k), b.expand(2, k, n))]
    return _digest(*out)


def aten_kernels(torch) -> str:
    x = _randn(torch, 64, 257, seed=1)
    f = torch.nn.functional
    rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    return _digest(
        f.gelu(x, approximate="tanh"), x.softmax(-1), f.layer_norm(x, (257,)), rms,
        x.cos(), x.sin(), x.sum(-1), x.sigmoid(), x.log_softmax(-1),
    )  # fmt: skip


def mkl_vml(torch) -> str:
    x = _randn(torch, 64, 257, seed=1)
    positive = x.abs() + 0.1
    return _digest(x.exp(), positive.log(), positive.sqrt(), torch.erf(x))


def _conv(torch) -> tuple:
    pixels = _randn(torch, 16, 3, 64, 64, seed=2)
    weight = _randn(torch, 64, 3, 8, 8, seed=3).requires_grad_()
    out = torch.nn.functional.conv2d(pixels, weight, stride=8)
    (out * _randn(torch, *out.shape, seed=4)).sum().backward()
    return out, weight.grad


def _conv_with_onednn(torch, enabled: bool) -> str:
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        return _digest(*_conv(torch))
    finally:
        torch.backends.mkldnn.enabled = before


def onednn_conv(torch) -> str:
    return _conv_with_onednn(torch, True)


def native_conv(torch) -> str:
    return _conv_with_onednn(torch, False)


def adamw(torch) -> str:
    param = torch.nn.Parameter(_randn(torch, 256, 64, seed=5))
    optimizer = torch.optim.AdamW([param], lr=2e-3, weight_decay=0.01)
    for step in range(5):
        param.grad = _randn(torch, 256, 64, seed=30 + step)
        optimizer.step()
    return _digest(param)


def sampling(torch) -> str:
    probs = _randn(torch, 32, 2048, seed=6).softmax(-1)
    generator = torch.Generator().manual_seed(7)
    return _digest(torch.multinomial(probs, 4, replacement=True, generator=generator))


def tiny_gemma3(torch) -> str:
    """Eight AdamW steps of a tiny Gemma3 (vision tower with its convolution, attention, norms):
    the digest of its weights, as tests/test_numerics.py compares them across dispatch."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    torch.manual_seed(0)
    text = Gemma3TextConfig(
        vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32,
        max_position_embeddings=128, sliding_window=128,
        layer_types=["sliding_attention", "full_attention"], pad_token_id=0, eos_token_id=1,
        bos_token_id=2,
    )  # fmt: skip
    vision = SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=2, image_size=32, patch_size=8,
                                vision_use_head=False)  # fmt: skip
    model = Gemma3ForConditionalGeneration(Gemma3Config(
        text_config=text, vision_config=vision, mm_tokens_per_image=16, boi_token_index=3,
        eoi_token_index=4, image_token_index=5, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    ))  # fmt: skip
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.02)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(8):
        ids = torch.randint(6, 256, (4, 40), generator=generator)
        ids[:, 1], ids[:, 2:18], ids[:, 18] = 3, 5, 4
        pixels = torch.randn(4, 3, 32, 32, generator=generator)
        loss = model(input_ids=ids, pixel_values=pixels, labels=ids,
                     token_type_ids=(ids == 5).long()).loss  # fmt: skip
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    weights = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        weights.update(name.encode() + tensor.contiguous().numpy().tobytes())
    return weights.hexdigest()


def numpy_loops(np) -> str:
    x = np.random.default_rng(0).normal(size=100_000)
    return _digest(np.exp(x), np.sin(x), np.log1p(np.abs(x)), np.float64(x @ x))


PIECES = ("mkl_sgemm", "mkl_vml", "aten_kernels", "onednn_conv", "native_conv", "adamw", "sampling",
          "tiny_gemma3", "numpy")  # fmt: skip


def fingerprint(pieces=PIECES) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    run = {"mkl_sgemm": mkl_sgemm, "mkl_vml": mkl_vml, "aten_kernels": aten_kernels,
           "onednn_conv": onednn_conv, "native_conv": native_conv, "adamw": adamw,
           "sampling": sampling,
           "tiny_gemma3": lambda t: tiny_gemma3(t)[:DIGITS],
           "numpy": lambda t: numpy_loops(np)}  # fmt: skip
    digests = {name: run[name](torch) for name in pieces}
    return {"digests": digests, "machine": numerics.describe(numerics.record()),
            "cpu": numerics.cpu()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cmr_rd.fingerprint", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--only", choices=PIECES, action="append", help="run only these pieces")
    args = parser.parse_args(argv)
    result = fingerprint(tuple(args.only or PIECES))
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
    else:
        print(result["machine"])
        for name, digest in result["digests"].items():
            print(f"{name:14s} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
