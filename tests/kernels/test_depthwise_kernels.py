"""The depthwise kernels (c2f_numpy.kernels.depthwise): the row correlation and the two weight gradients.

The op tests (tests/ops/cases.py, run through the fast copy in test_nhwc.py) draw small maps. Here both weight
gradients (register-blocked and row form) run on the same 16-40 pixel wide maps, with every remainder of the
blocked kernel (width mod 4, k mod 4, channels not a multiple of the vector width); they sum in different
orders and are each checked against the teaching copy's float64 weight gradient. The convolution as a whole is
checked against the teaching copy on maps on both sides of depthwise.WIDE, and the correlation's sums are
checked to be independent of the thread count.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from c2f_numpy import ops
from c2f_numpy.kernels import depthwise, nhwc
from c2f_numpy.testing import assert_close

KERNEL_SIZES = (3, 7, 11, 21)  # each size compiles its own blocked weight gradient: the model's sizes only
DTYPES = st.sampled_from([np.float32, np.float64])


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
    blocked = depthwise._blocked_weight_grad(k)(dout, src, p, blocks)
    rows = depthwise._weight_grad_rows(dout, src, k, p, blocks)
    assert blocked.shape == rows.shape == (blocks, k, k, c)
    assert blocked.dtype == rows.dtype == dtype
    assert_close("blocked weight gradient", blocked, expected, scale_floor=1.0)
    assert_close("row weight gradient", rows, expected, scale_floor=1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("k", KERNEL_SIZES)
@pytest.mark.parametrize("width", [9, 31, depthwise.WIDE + 3], ids=lambda w: f"w{w}")  # row weight grad; blocked
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
@pytest.mark.parametrize("width", [9, depthwise.WIDE + 3], ids=lambda w: f"w{w}")  # row weight grad; blocked
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


@pytest.mark.parametrize("offset", [5, 0, 10], ids=["forward", "left", "right"])
def test_correlation_bits_do_not_depend_on_the_thread_count(offset: int) -> None:
    """Each output row is one task that adds its taps in (i, j) order: 1 thread and the whole pool agree bit for
    bit, on a wide map (56 x 56, the 224 input's first stage) and with the padding on one side only."""
    rng = np.random.default_rng(offset)
    src = rng.standard_normal((2, 56, 56, 24)).astype(np.float32)
    wt = rng.standard_normal((11, 11, 24)).astype(np.float32)
    start = rng.standard_normal(src.shape).astype(np.float32)
    whole, one = np.empty_like(start), np.empty_like(start)
    depthwise.correlate(src, wt, whole, offset, start)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        depthwise.correlate(src, wt, one, offset, start)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(whole, one)


def test_correlation_starts_from_zeros_a_bias_or_a_whole_array() -> None:
    """Every value of out is written (a NaN-filled out leaves no trace): from zeros, from a per-channel bias, or
    from an array of out's shape; anything else is refused."""
    rng = np.random.default_rng(7)
    src = rng.standard_normal((2, 9, 9, 5)).astype(np.float32)
    wt = rng.standard_normal((3, 3, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    base = rng.standard_normal(src.shape).astype(np.float32)
    results = {}
    for name, start in (("zeros", None), ("bias", bias), ("base", base)):
        out = np.full(src.shape, np.nan, np.float32)
        depthwise.correlate(src, wt, out, 1, start)
        results[name] = out
    assert not np.isnan(results["zeros"]).any()
    assert_close("bias start", results["bias"], results["zeros"] + bias, scale_floor=1.0)
    assert_close("array start", results["base"], results["zeros"] + base, scale_floor=1.0)
    with pytest.raises(ValueError, match="start must be"):
        depthwise.correlate(src, wt, np.empty_like(src), 1, base[:, :-1])
    with pytest.raises(ValueError, match="start must be"):
        depthwise.correlate(src, wt, np.empty_like(src), 1, bias[:-1])  # a bias of the wrong length
