"""Rollout sampling by inverse CDF (`cmr_rd.model.sampling`): the same distribution as
`torch.multinomial`, deterministic under a seed, and patched in only where and while it is meant to.
"""

from __future__ import annotations

import pytest
import torch

from cmr_rd.model.sampling import fast_cpu_sampling, inverse_cdf_sample


def _weights() -> torch.Tensor:
    """Unnormalised rows with zero-weight bins, the way min-p and top-k leave them."""
    rows = torch.tensor(
        [
            [0.0, 3.0, 0.0, 1.0, 6.0, 0.0],
            [5.0, 0.0, 0.0, 0.0, 0.0, 5.0],
            [0.0, 0.0, 0.0, 0.0, 0.0, 2.0],
        ]
    )
    return rows.repeat(4000, 1)


def test_draws_follow_the_weights_and_never_a_zero_bin():
    torch.manual_seed(0)
    weights = _weights()
    index = inverse_cdf_sample(weights).squeeze(1)
    assert index.shape == (weights.shape[0],)
    picked = weights[torch.arange(len(index)), index]
    assert bool((picked > 0).all())
    for row in range(3):
        expected = weights[row] / weights[row].sum()
        counts = torch.bincount(index[row::3], minlength=6).double() / 4000
        # 4000 draws: a share's standard error is at most 0.008, so 0.04 is five of them.
        assert torch.allclose(counts, expected.double(), atol=0.04), (row, counts, expected)


def test_same_seed_same_draws_and_a_generator_is_honoured():
    weights = torch.softmax(torch.randn(32, 2035, generator=torch.Generator().manual_seed(1)), -1)
    first = inverse_cdf_sample(weights, torch.Generator().manual_seed(7))
    again = inverse_cdf_sample(weights, torch.Generator().manual_seed(7))
    other = inverse_cdf_sample(weights, torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.dtype == torch.int64 and first.shape == (32, 1)


def test_the_patch_covers_one_draw_per_row_on_the_cpu_and_is_always_undone():
    original = torch.multinomial
    weights = _weights()[:6]
    with fast_cpu_sampling():
        assert torch.multinomial is not original
        torch.manual_seed(3)
        patched = torch.multinomial(weights, num_samples=1)
        torch.manual_seed(3)
        assert torch.equal(patched, inverse_cdf_sample(weights))
        # Several draws per row are torch.multinomial's own (without replacement here).
        torch.manual_seed(3)
        several = torch.multinomial(weights, num_samples=2)
        torch.manual_seed(3)
        assert torch.equal(several, original(weights, 2))
    assert torch.multinomial is original
    with pytest.raises(RuntimeError, match="boom"), fast_cpu_sampling():
        raise RuntimeError("boom")
    assert torch.multinomial is original
