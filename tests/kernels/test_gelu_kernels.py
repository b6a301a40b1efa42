"""The float32 GELU kernels (polynomial erfc and exp, vectorized) against the exact float64 form.

The bounds are the documented accuracy: 2e-7 absolute for the forward (on top of the float32 rounding of the
result, which alone is up to 2.4e-7 for 4 <= x < 8), 5e-7 absolute for the derivative.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from c2f_numpy.kernels.elementwise import gelu_flat_f32, gelu_flat_f32_backward

FWD_TOL = 2e-7
BWD_TOL = 5e-7

_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def exact(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(GELU(x), GELU'(x)) in float64 for finite float32 x."""
    xd = x.astype(np.float64)
    phi = 0.5 * _erfc(-xd * math.sqrt(0.5))
    with np.errstate(under="ignore"):
        gauss = np.exp(-0.5 * xd * xd) / math.sqrt(2.0 * math.pi)
    return xd * phi, phi + xd * gauss


def run(x: np.ndarray, dout: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    y, dx = np.empty_like(x), np.empty_like(x)
    gelu_flat_f32(x, y)
    gelu_flat_f32_backward(x, np.ones_like(x) if dout is None else dout, dx)
    return y, dx


def float32_ulp(r: np.ndarray) -> np.ndarray:
    """The float32 spacing in the binade of each float64 value (2^-149 below the normal range and at 0)."""
    exponent = np.where(r == 0, -149 + 24, np.frexp(np.abs(r))[1])
    return np.ldexp(1.0, np.maximum(exponent - 24, -149))


def check_accuracy(x: np.ndarray) -> None:
    y, d = run(x)
    y_ref, d_ref = exact(x)
    half_ulp = 0.5 * float32_ulp(y_ref)
    fwd_excess = np.abs(y - y_ref) - half_ulp
    bwd_err = np.abs(d - d_ref)
    i, j = int(np.argmax(fwd_excess)), int(np.argmax(bwd_err))
    assert fwd_excess[i] <= FWD_TOL, f"forward: {fwd_excess[i]:.3g} beyond rounding at x = {x[i]!r}"
    assert bwd_err[j] <= BWD_TOL, f"derivative: error {bwd_err[j]:.3g} at x = {x[j]!r}"


def float32_sample(stride: int) -> np.ndarray:
    """Every stride-th finite float32 of either sign, subnormals and the largest included."""
    bits = np.arange(0, 0x7F800000, stride, dtype=np.uint32)
    pos = np.concatenate([bits, [1, 2, 0x007FFFFF, 0x00800000, 0x7F7FFFFF]]).astype(np.uint32).view(np.float32)
    return np.concatenate([pos, -pos])


def test_dense_grid() -> None:
    check_accuracy(np.linspace(-12, 12, 480_001, dtype=np.float32))


def test_sample_of_all_float32() -> None:
    check_accuracy(float32_sample(4099))


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=64))
def test_arbitrary_floats(values: list[float]) -> None:
    check_accuracy(np.array(values, dtype=np.float32))


def test_gradient_scales_with_dout() -> None:
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal(10_001)).astype(np.float32)
    dout = rng.standard_normal(x.size).astype(np.float32)
    _, dx = run(x, dout)
    d_ref = exact(x)[1] * dout
    assert np.all(np.abs(dx - d_ref) <= BWD_TOL * np.abs(dout) + np.spacing(np.abs(dx)))


def test_special_values() -> None:
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 3.4e38, -3.4e38], dtype=np.float32)
    y, d = run(x)
    assert np.isnan(y[0]) and np.isnan(d[0])
    assert y[1] == np.inf and d[1] == 1.0
    assert y[2] == 0.0 and d[2] == 0.0
    assert y[3] == 0.0 and np.signbit(y[3]) and not np.signbit(y[4]) and y[4] == 0.0
    assert np.all(np.abs(d[3:5] - 0.5) <= BWD_TOL)
    assert y[5] == x[5] and d[5] == 1.0
    assert y[6] == 0.0 and d[6] == 0.0
    _, dnan = run(np.ones(3, np.float32), np.full(3, np.nan, np.float32))
    assert np.isnan(dnan).all()


def test_subnormals_halve() -> None:
    tiny = np.array([1e-45, 3e-42, 1e-39, 1.1754942e-38], dtype=np.float32)
    x = np.concatenate([tiny, -tiny])
    y, d = run(x)
    assert np.all(np.abs(y - x.astype(np.float64) / 2) <= 2.0**-149) and np.all(np.abs(d - 0.5) <= BWD_TOL)
    assert np.all(y[:4] >= 0) and np.all(y[4:] <= 0)


def test_negative_tail_is_tiny_and_signed() -> None:
    x = np.linspace(-1e4, -3, 200_001, dtype=np.float32)
    y, d = run(x)
    assert np.all(y <= 0) and np.all(y >= -0.005) and np.all(d <= 0) and np.all(d >= -0.02)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 15, 16, 17, 31, 33, 1001])
def test_any_length_matches_the_long_array(n: int) -> None:
    """Each element comes out the same whether it lands in a vector body, a remainder loop or another thread."""
    rng = np.random.default_rng(n)
    x = (4 * rng.standard_normal(4099)).astype(np.float32)
    dout = rng.standard_normal(x.size).astype(np.float32)
    y_all, dx_all = run(x, dout)
    for start in (0, 1, 5, 4099 - n):
        y, dx = run(x[start : start + n].copy(), dout[start : start + n].copy())
        assert np.array_equal(y, y_all[start : start + n]) and np.array_equal(dx, dx_all[start : start + n])


def test_thread_count_does_not_change_results() -> None:
    rng = np.random.default_rng(1)
    x = (4 * rng.standard_normal(100_003)).astype(np.float32)
    dout = rng.standard_normal(x.size).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # the whole pool (the default may be 1: conftest)
        many = run(x, dout)
        numba.set_num_threads(1)
        one = run(x, dout)
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(many[0], one[0]) and np.array_equal(many[1], one[1])
