"""BatchNorm2d's running statistics against torch.nn.BatchNorm2d over several train steps, then eval."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from c2f_numpy import ops
from c2f_numpy.testing import assert_close


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("momentum", [0.1, 0.3, None], ids=["m0.1", "m0.3", "cumulative"])
def test_running_stats_follow_torch(momentum: float | None, dtype: type) -> None:
    rng = np.random.default_rng(0)
    c = 5
    weight, bias = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    ref = torch.nn.BatchNorm2d(c, momentum=momentum).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(weight))
        ref.bias.copy_(torch.tensor(bias))
    stats = ops.BatchNormStats.initial(c, dtype)
    ref.train()
    for step in range(4):
        # shifted, scaled batches of different sizes: the unbiased correction M/(M-1) changes with M
        x = (rng.standard_normal((2 + step, c, 3, 4)) * 3 + rng.standard_normal((1, c, 1, 1)) * 5).astype(dtype)
        y, _, stats = ops.batch_norm2d_forward(x, weight, bias, stats, training=True, momentum=momentum)
        y_ref = ref(torch.tensor(x)).detach().numpy()
        assert_close(f"step {step} y", y, y_ref, scale_floor=1.0)
        assert_close(f"step {step} running_mean", stats.running_mean, ref.running_mean.numpy(), scale_floor=1.0)
        assert_close(f"step {step} running_var", stats.running_var, ref.running_var.numpy(), scale_floor=1.0)
        assert stats.num_batches_tracked == int(ref.num_batches_tracked) == step + 1
        assert stats.running_mean.dtype == dtype and stats.running_var.dtype == dtype
    ref.eval()
    x = rng.standard_normal((2, c, 3, 3)).astype(dtype)
    y, _, after = ops.batch_norm2d_forward(x, weight, bias, stats, training=False)
    assert_close("eval y", y, ref(torch.tensor(x)).detach().numpy(), scale_floor=1.0)
    # eval mode leaves the statistics as they were
    assert np.array_equal(after.running_mean, stats.running_mean)
    assert np.array_equal(after.running_var, stats.running_var)
    assert after.num_batches_tracked == stats.num_batches_tracked == 4


def test_batch_norm_is_pure() -> None:
    rng = np.random.default_rng(1)
    stats = ops.BatchNormStats(rng.standard_normal(3), rng.uniform(1, 2, 3), 7)
    mean, var = stats.running_mean.copy(), stats.running_var.copy()
    x = rng.standard_normal((4, 3, 2, 2))
    _, _, new = ops.batch_norm2d_forward(x, np.ones(3), np.zeros(3), stats, training=True)
    np.testing.assert_array_equal(stats.running_mean, mean)
    np.testing.assert_array_equal(stats.running_var, var)
    assert stats.num_batches_tracked == 7 and new.num_batches_tracked == 8


def test_layer_norm_normalises_over_channels_only() -> None:
    """Channels-first: every pixel's C values get mean 0 and (biased) variance 1 before the affine."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 6, 3, 4)) * 4 + 7
    y, _ = ops.layer_norm_forward(x, np.ones(6), np.zeros(6), eps=1e-12)
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=1), 1, rtol=1e-10)
