"""Categorical sampling for rollouts on the CPU: inverse-CDF instead of `torch.multinomial`.

Transformers' sampling loop draws each next token with `torch.multinomial(probs, 1)`. On the CPU
that call takes 1.6 ms for 32 rows of the tiny backbone's 2,035-token vocabulary, a quarter of a
rollout's time (measured in docs/performance.md), while a cumulative sum and a binary search on
one uniform draw per row take 0.08 ms. Both draw from the same distribution; they consume the
random stream differently, so rollouts differ from `torch.multinomial`'s draw for draw, and are
as deterministic under a seed. CUDA tensors keep `torch.multinomial`, which is fast there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def inverse_cdf_sample(
    weights: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One index per row of a 2-D tensor of non-negative weights, with probability ∝ weight.

    float64 sums keep the bins exact enough for a real backbone's 262k-token vocabulary. A bin of
    weight zero is never drawn: `right=True` finds the first bin whose cumulative weight exceeds
    u, and u < total because `torch.rand` < 1.
    """
    cdf = weights.to(torch.float64).cumsum(-1)
    uniform = torch.rand(
        (weights.shape[0], 1), generator=generator, dtype=torch.float64, device=weights.device
    )
    index = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True)
    return index.clamp_(max=weights.shape[-1] - 1)


@contextmanager
def fast_cpu_sampling() -> Iterator[None]:
    """Within the block, `torch.multinomial(w, 1)` on a 2-D CPU tensor samples by inverse CDF.

    Every other call (CUDA, several samples, `out=`) goes to `torch.multinomial` unchanged. The
    original is restored on exit, also after an error.
    """
    original = torch.multinomial

    def multinomial(input, num_samples, replacement=False, *, generator=None, out=None):
        if num_samples != 1 or out is not None or input.dim() != 2 or input.device.type != "cpu":
            return original(input, num_samples, replacement, generator=generator, out=out)
        return inverse_cdf_sample(input, generator)

    torch.multinomial = multinomial
    try:
        yield
    finally:
        torch.multinomial = original
