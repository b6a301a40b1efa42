"""The two forms of the depthwise kernels (c2f_numpy.kernels.depthwise): register-blocked and row kernels.

The op tests (tests/ops/cases.py, run through the fast copy in test_nhwc.py) draw small maps, which take the
row kernels. Here both forms run on the same 8-40 pixel wide maps, with every remainder of the blocked kernels
(width mod 4, k mod 4, channels not a multiple of the vector width) and the padding offsets of both the
forward (k // 2) and the input gradient (k - 1 - k // 2, flipped weights). The two correlations add the same
products in the same order, so they must agree bit for bit; the two weight gradients sum in different orders
and are each checked against the teaching copy's float64 weight gradient. The convolution as a whole is
checked against the teaching copy on maps on both sides of depthwise.WIDE.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from c2f_numpy import ops
from c2f_numpy.kernels import depthwise, nhwc
from c2f_numpy.testing import assert_close

KERNEL_SIZES = (3, 7, 11, 21)  # each size compiles its own blocked kernels: the model's sizes only
DTYPES = st.sampled_from([np.float32, np.float64])


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 37),
    h=st.integers(1, 12),
    w=st.integers(2 * depthwise.XB, 40),
    k=st.sampled_from(KERNEL_SIZES),
    flipped=st.booleans(),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_blocked_correlation_equals_row_kernel_bitwise(
    n: int, c: int, h: int, w: int, k: int, flipped: bool, dtype: type, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, h, w, c)).astype(dtype)
    wt = rng.standard_normal((k, k, c)).astype(dtype)
    offset = k - 1 - k // 2 if flipped else k // 2  # the input gradient's padding, or the forward's
    start = rng.standard_normal((n, h, w, c)).astype(dtype)  # correlate adds to what out holds
    blocked, rows = start.copy(), start.copy()
    depthwise._kernels(k)[0](src, wt, blocked, offset)
    depthwise._correlate_rows(src, wt, rows, offset)
    assert np.array_equal(blocked, rows)


def _teaching_weight_grad(src: np.ndarray, dout: np.ndarray, k: int) -> np.ndarray:
    """(k, k, C) weight gradient of the stride-1 depthwise conv with padding k // 2, by the teaching copy in float64."""
    c = src.shape[-1]
    x = np.ascontiguousarray(src.transpose(0, 3, 1, 2), dtype=np.float64)
    _, cache = ops.conv2d_forward(x, np.zeros((c, 1, k, k)), None, padding=k // 2, groups=c)
    _, dw, _ = ops.conv2d_backward(np.ascontiguousarray(dout.transpose(0, 3, 1, 2), dtype=np.float64), cache)
    return dw[:, 0].transpose(1, 2, 0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 5),
    c=st.integers(1, 37),
    h=st.integers(1, 10),
    w=st.integers(4 * depthwise.XB, 40),
    k=st.sampled_from(KERNEL_SIZES),
    blocks=st.integers(1, 5),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_both_weight_gradients_match_a_float64_sum(
    n: int, c: int, h: int, w: int, k: int, blocks: int, dtype: type, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, h, w, c)).astype(dtype)
    dout = rng.standard_normal((n, h, w, c)).astype(dtype)
    blocks = min(blocks, n)
    p = k // 2
    expected = np.stack([_teaching_weight_grad(src[b * n // blocks : (b + 1) * n // blocks],
                                               dout[b * n // blocks : (b + 1) * n // blocks], k)
                         for b in range(blocks)])  # fmt: skip
    blocked = depthwise._kernels(k)[1](dout, src, p, blocks)
    rows = depthwise._weight_grad_rows(dout, src, k, p, blocks)
    assert blocked.shape == rows.shape == (blocks, k, k, c)
    assert blocked.dtype == rows.dtype == dtype
    assert_close("blocked weight gradient", blocked, expected, scale_floor=1.0)
    assert_close("row weight gradient", rows, expected, scale_floor=1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("k", KERNEL_SIZES)
@pytest.mark.parametrize("width", [9, 31, depthwise.WIDE + 3], ids=lambda w: f"w{w}")  # row kernels; blocked
def test_wide_depthwise_conv_matches_teaching_copy(k: int, width: int, dtype: type) -> None:
    rng = np.random.default_rng(k * 100 + width)
    n, c, h = 2, 19, 6
    x = rng.standard_normal((n, c, h, width)).astype(dtype)
    w = rng.standard_normal((c, 1, k, k)).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    out, cache = ops.conv2d_forward(x, w, b, padding=k // 2, groups=c)
    d = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = ops.conv2d_backward(d, cache)
    f_out, f_cache = nhwc.conv2d_forward(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), w, b, padding=k // 2, groups=c)
    f_dx, f_dw, f_db = nhwc.conv2d_backward(np.ascontiguousarray(d.transpose(0, 2, 3, 1)), f_cache)
    assert_close("depthwise out", f_out.transpose(0, 3, 1, 2), out, scale_floor=1.0)
    assert_close("depthwise dx", f_dx.transpose(0, 3, 1, 2), dx, scale_floor=1.0)
    assert_close("depthwise dw", f_dw, dw, scale_floor=1.0)
    assert f_db is not None
    assert_close("depthwise db", f_db, db, scale_floor=1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("width", [9, depthwise.WIDE + 3], ids=lambda w: f"w{w}")  # row kernels; blocked
def test_backward_onto_a_residual_adds_it_to_dx(width: int, dtype: type) -> None:
    """dx_base (the pos residual's identity path) is added into dx by the correlation's own pass; the weight and
    bias gradients do not change."""
    rng = np.random.default_rng(width)
    x = rng.standard_normal((2, 5, width, 19)).astype(dtype)
    w = rng.standard_normal((3, 3, 19)).astype(dtype)
    d = rng.standard_normal(x.shape).astype(dtype)
    base = rng.standard_normal(x.shape).astype(dtype)
    kept = base.copy()
    dx, dw, db = depthwise.depthwise_backward(d, x, w, 1, True)
    dx_r, dw_r, db_r = depthwise.depthwise_backward(d, x, w, 1, True, dx_base=base)
    assert_close("dx onto the residual", dx_r, dx + base, scale_floor=1.0)
    assert np.array_equal(dw_r, dw) and db is not None and db_r is not None and np.array_equal(db_r, db)
    assert np.array_equal(base, kept)  # the caller's gradient is not written to
    with pytest.raises(ValueError, match="dx_base must be"):
        depthwise.depthwise_backward(d, x, w, 1, True, dx_base=base[:, :, :-1])
