"""The depthwise kernels (c2f_numpy.kernels.depthwise) on maps wide enough for their register-blocked form.

The op tests (tests/ops/cases.py, run through the fast copy in test_nhwc.py) draw small maps, which take the
pixel-at-a-time kernels. Here the maps are 8-40 pixels wide, so the blocked kernels run, with every remainder
(width mod 4, k mod 4, channels not a multiple of the vector width) and the padding offsets of both the
forward (k // 2) and the input gradient (k - 1 - k // 2, flipped weights). The blocked kernels add the same
products in the same order as the pixel kernels, so the two must agree bit for bit; the convolution as a whole
is checked against the teaching copy to the dtype's tolerance.
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
def test_blocked_correlation_equals_pixel_loop_bitwise(
    n: int, c: int, h: int, w: int, k: int, flipped: bool, dtype: type, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, h, w, c)).astype(dtype)
    wt = rng.standard_normal((k, k, c)).astype(dtype)
    offset = k - 1 - k // 2 if flipped else k // 2  # the input gradient's padding, or the forward's
    start = rng.standard_normal((n, h, w, c)).astype(dtype)  # correlate adds to what out holds
    blocked, pixels = start.copy(), start.copy()
    depthwise._kernels(k)[0](src, wt, blocked, offset)
    depthwise._correlate_pixels(src, wt, pixels, offset)
    assert np.array_equal(blocked, pixels)


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
def test_blocked_weight_gradient_equals_pixel_loop_bitwise(
    n: int, c: int, h: int, w: int, k: int, blocks: int, dtype: type, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    src = rng.standard_normal((n, h, w, c)).astype(dtype)
    dout = rng.standard_normal((n, h, w, c)).astype(dtype)
    blocks = min(blocks, n)
    blocked = depthwise._kernels(k)[1](dout, src, k // 2, blocks)
    pixels = depthwise._weight_grad_pixels(dout, src, k, k // 2, blocks)
    assert blocked.shape == (blocks, k, k, c)
    assert np.array_equal(blocked, pixels)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("k", KERNEL_SIZES)
@pytest.mark.parametrize("width", [9, 18, 31], ids=lambda w: f"w{w}")  # 9: blocked forward only; 18, 31: both
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
