"""The per-channel reduction kernels (c2f_numpy.kernels.channels) against float64 NumPy sums.

They replace ``a.sum(axis=0)`` in the fast copy's bias, norm and layer-scale gradients and BatchNorm's statistics;
the ops that use them are also checked against their teaching twins in test_nhwc.py. Here: the block
row counts from 1 up, channel counts from 1 up, both dtypes, views, and bitwise repeatability.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from c2f_numpy.kernels.channels import channel_dot_sums, channel_mean_var, channel_sums
from c2f_numpy.testing import assert_close

ROWS = st.sampled_from([1, 2, 3]) | st.integers(1, 3000)


@settings(max_examples=30, deadline=None)
@given(m=ROWS, c=st.integers(1, 70), dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_sums_match_float64_numpy(m: int, c: int, dtype: type, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, c)).astype(dtype)
    b = (rng.standard_normal((m, c)) + 1.0).astype(dtype)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    s = channel_sums(a)
    dot, s2 = channel_dot_sums(a, b)
    mean, var = channel_mean_var(b)
    for name, got in (("sums", s), ("dot_sums[1]", s2), ("dot_sums[0]", dot), ("mean", mean), ("var", var)):
        assert got.dtype == dtype and got.shape == (c,), name
    # The sums are exact float64 sums rounded once to the dtype: scale by the sum of magnitudes, not the result.
    assert_close("channel_sums", s, a64.sum(0), scale_floor=float(np.abs(a64).sum(0).max()) / m)
    assert_close("channel_dot_sums sum", s2, a64.sum(0), scale_floor=float(np.abs(a64).sum(0).max()) / m)
    assert_close("channel_dot_sums dot", dot, (a64 * b64).sum(0), scale_floor=float(np.abs(a64 * b64).sum(0).max()) / m)
    assert_close("channel_mean_var mean", mean, b64.mean(0), scale_floor=1.0)
    assert_close("channel_mean_var var", var, b64.var(0), scale_floor=1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sums_are_bitwise_repeatable_and_accept_views(dtype: type) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2051, 48)).astype(dtype)
    first = channel_sums(a)
    assert all(np.array_equal(first, channel_sums(a)) for _ in range(5))
    view = a[:, ::2]  # a non-contiguous view gives the same sums as its copy
    assert np.array_equal(channel_sums(view), channel_sums(view.copy()))
