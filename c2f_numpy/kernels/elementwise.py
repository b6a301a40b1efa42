"""Channels-last LayerNorm and GELU as Numba kernels (the fast twins of ``ops.layer_norm`` / ``ops.gelu``).

Rows are pixels: x viewed as (M, C) with M = N*H*W. Each row's mean and variance are summed in a fixed order by
one thread, so results do not depend on the thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from .pool import parallel_kernel

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# float32 GELU. Numba has no SVML here, so math.exp / math.erfc would be scalar libm calls that keep the loop from
# vectorizing; the kernels below use only float32 arithmetic, int32 bit operations and selects, which LLVM turns
# into 8-lane AVX2 or 16-lane AVX-512 code. The constants are np.float32: a float64 one would promote the loop
# to float64 and halve the lanes.
#
# For z = |x| / sqrt 2, Phi(-|x|) = erfc(z) / 2 = t * g(t) * exp(-z^2) / 2 with t = 1 / (1 + p z) and g a degree-5
# polynomial fitted to erfcx (minimax, weighted by the GELU error it causes; fit error <= 1.5e-8). The small side
# Phi(-|x|) avoids cancellation for x < 0, and exp(-z^2) is the derivative's Gaussian as well.
# exp(-w) = 2^-k exp(-r): r by Cody-Waite (k * _F32_LN2_HI is exact), exp(-r) by a degree-5 minimax polynomial
# (relative error 7.4e-8), 2^-k exactly by writing 127 - k into a float32's exponent bits (_pow2_f32: all int32,
# because an int64 such as 1 << (62 - k) converted to float32 needs an instruction AVX2 lacks and would keep the
# loops scalar there).
# w <= 42 (|x| <= 9.1) keeps 2^-k a normal number; beyond
# _F32_GELU_CUT the kernels return the limits (x or -0.0; derivative 1 or 0), which is also what makes +-inf right
# (x * Phi(x) and x * phi(x) would be inf * 0 there). NaN propagates through the arithmetic; min(_F32_EXP_WMAX, NaN)
# takes the bound, so the float-to-int conversion stays defined.
# Measured on every finite float32 against the float64 form with erfc: forward |error| <= 8.7e-8 beyond the float32
# rounding of the result (which alone reaches 2.4e-7 for 4 <= x < 8), derivative |error| <= 2.3e-7.
_f32 = np.float32
_F32_HALF, _F32_ONE, _F32_ZERO, _F32_NZERO = _f32(0.5), _f32(1.0), _f32(0.0), _f32(-0.0)
_F32_SQRT_HALF, _F32_INV_SQRT_2PI = _f32(_SQRT_HALF), _f32(_INV_SQRT_2PI)
_F32_ERFC_P = _f32(0.555)
# g(t) / 2 (the 1/2 of Phi = erfc / 2 folded in; exact)
_F32_ERFC_G = tuple(_f32(0.5 * c) for c in (0.30552965, 0.38549522, -0.01741888, 0.73196977, -0.51443356, 0.10885783))
_F32_LOG2E = _f32(1.0 / math.log(2.0))
_F32_LN2_HI = _f32(0.693145751953125)  # 15 significant bits
_F32_LN2_LO = _f32(math.log(2.0) - 0.693145751953125)
_F32_EXP_C = tuple(_f32(c) for c in (1.0, -1.00000005, 0.49999043, -0.16666939, 0.04190804, -0.00832566))
_F32_EXP_WMAX = _f32(42.0)
_F32_GELU_CUT = _f32(9.0)  # |GELU(-9)| = 1e-18; for x > 9, GELU(x) rounds to x


@njit(inline="always")
def layer_norm_row(row: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, y: np.ndarray,
                   xhat: np.ndarray) -> float:  # pragma: no cover - jit  # fmt: skip
    """One row (C,): xhat = (x - mean) / sqrt(var + eps) (biased variance), y = weight * xhat + bias; returns
    rstd. Each xhat value is written before its y value, so ``xhat`` may be ``y`` when only y is wanted."""
    c = row.shape[0]
    mean = 0.0
    for ch in range(c):
        mean += row[ch]
    mean /= c
    var = 0.0
    for ch in range(c):
        d = row[ch] - mean
        var += d * d
    var /= c
    rs = 1.0 / math.sqrt(var + eps)
    for ch in range(c):
        v = (row[ch] - mean) * rs
        xhat[ch] = v
        y[ch] = weight[ch] * v + bias[ch]
    return rs


@parallel_kernel()
def layer_norm_rows(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float,
                    y: np.ndarray, xhat: np.ndarray, rstd: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """:func:`layer_norm_row` for every row of x (M, C), one row per task."""
    for r in prange(x.shape[0]):
        rstd[r] = layer_norm_row(x[r], weight, bias, eps, y[r], xhat[r])


@parallel_kernel()
def layer_norm_rows_backward(dout: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, weight: np.ndarray,
                             dx: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """Per row, with g = dout * weight: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    for r in prange(dout.shape[0]):
        layer_norm_row_backward(dout[r], xhat[r], rstd[r], weight, dx[r])


@njit(inline="always")
def layer_norm_row_backward(d: np.ndarray, xh: np.ndarray, rs: float, weight: np.ndarray,
                            out: np.ndarray) -> None:  # pragma: no cover - jit  # fmt: skip
    """One row (C,) of LayerNorm's input gradient: with g = d * weight, out = rs * (g - mean(g) - xh * mean(g * xh))."""
    c = d.shape[0]
    mg = 0.0
    mgx = 0.0
    for ch in range(c):
        g = d[ch] * weight[ch]
        mg += g
        mgx += g * xh[ch]
    mg /= c
    mgx /= c
    for ch in range(c):
        out[ch] = rs * (d[ch] * weight[ch] - mg - xh[ch] * mgx)


@parallel_kernel()
def gelu_flat_f64(x: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover
    """The exact (erf) GELU in float64: y = x * Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2 (accurate for x < 0)."""
    for i in prange(x.size):
        y[i] = _gelu_f64(x[i])


@parallel_kernel()
def gelu_flat_f64_backward(x: np.ndarray, dout: np.ndarray, dx: np.ndarray) -> None:  # pragma: no cover
    """Backward of :func:`gelu_flat_f64`: dx = dout * (Phi(x) + x * phi(x))."""
    for i in prange(x.size):
        dx[i] = dout[i] * _gelu_grad_f64(x[i])


@intrinsic
def _pow2_f32(typingctx: Any, k: Any) -> Any:
    """2^k as float32 for a float32 k holding an integer in [-126, 127]: (k + 127) << 23 read as float32 bits.

    All in int32, so it vectorizes with AVX2 (float -> int64 conversions need AVX-512).
    """
    if k != types.float32:
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i32 = llvm_ir.IntType(32)
        biased = builder.add(builder.fptosi(args[0], i32), llvm_ir.Constant(i32, 127))
        return builder.bitcast(builder.shl(biased, llvm_ir.Constant(i32, 23)), llvm_ir.FloatType())

    return types.float32(types.float32), codegen


@njit(inline="always", fastmath={"contract"})
def _exp_neg_f32(w: np.float32) -> np.float32:  # pragma: no cover
    """exp(-w) for 0 <= w <= _F32_EXP_WMAX (see above)."""
    c0, c1, c2, c3, c4, c5 = _F32_EXP_C
    kf = np.floor(w * _F32_LOG2E + _F32_HALF)
    r = (w - kf * _F32_LN2_HI) - kf * _F32_LN2_LO
    return (c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * c5))))) * _pow2_f32(-kf)  # type: ignore[call-arg]  # Numba passes the typing context


@njit(inline="always", fastmath={"contract"})
def _phi_small_side_f32(v: np.float32) -> tuple[np.float32, np.float32]:  # pragma: no cover
    """(Phi(-|v|), exp(-v^2 / 2)), float32 (see above)."""
    g0, g1, g2, g3, g4, g5 = _F32_ERFC_G
    a = abs(v)
    t = _F32_ONE / (_F32_ONE + _F32_ERFC_P * (a * _F32_SQRT_HALF))
    # the bound first: min() returns its first argument when the comparison with NaN fails
    e = _exp_neg_f32(min(_F32_EXP_WMAX, _F32_HALF * a * a))
    return t * (g0 + t * (g1 + t * (g2 + t * (g3 + t * (g4 + t * g5))))) * e, e


@njit(inline="always", fastmath={"contract"})
def _gelu_f32(v: np.float32) -> np.float32:  # pragma: no cover
    """float32 GELU: x * Phi(x) (x - x * Phi(-x) for x > 0); one exit, so the loops calling it vectorize."""
    q = _phi_small_side_f32(v)[0]
    out = v * q if v <= _F32_ZERO else v - v * q
    if abs(v) > _F32_GELU_CUT:  # a select, not a branch, once vectorized
        out = v if v > _F32_ZERO else _F32_NZERO
    return out


@njit(inline="always", fastmath={"contract"})
def _gelu_grad_f32(v: np.float32) -> np.float32:  # pragma: no cover
    """float32 GELU'(x) = Phi(x) + x * phi(x), phi from the same exponential."""
    q, e = _phi_small_side_f32(v)
    xphi = v * _F32_INV_SQRT_2PI * e
    d = q + xphi if v <= _F32_ZERO else (_F32_ONE - q) + xphi
    if abs(v) > _F32_GELU_CUT:
        d = _F32_ONE if v > _F32_ZERO else _F32_ZERO
    return d


@njit(inline="always")
def _gelu_f64(v: float) -> float:  # pragma: no cover
    return 0.5 * v * math.erfc(-v * _SQRT_HALF)


@njit(inline="always")
def _gelu_grad_f64(v: float) -> float:  # pragma: no cover
    return 0.5 * math.erfc(-v * _SQRT_HALF) + v * _INV_SQRT_2PI * math.exp(-0.5 * v * v)


def gelu_scalar(v: float) -> float:  # pragma: no cover
    """GELU of one value inside a Numba kernel: the float32 form above or the float64 erfc form, by type."""
    raise NotImplementedError("gelu_scalar is for Numba kernels only")


def gelu_grad_scalar(v: float) -> float:  # pragma: no cover
    """GELU'(v) inside a Numba kernel, by type like :func:`gelu_scalar`."""
    raise NotImplementedError("gelu_grad_scalar is for Numba kernels only")


def _dispatch_on_float_type(stub: Callable[[float], float], f32: Any, f64: Any) -> None:
    """Implement ``stub`` inside Numba kernels as ``f32`` for float32 arguments and ``f64`` otherwise."""

    # (Numba requires the implementations' signatures, annotations included, to equal the typing function's.)
    @overload(stub, inline="always")
    def typing(v: Any) -> Callable[[Any], Any]:  # pragma: no cover
        def on_f32(v: Any) -> Any:
            return f32(v)

        def on_f64(v: Any) -> Any:
            return f64(v)

        return on_f32 if v == types.float32 else on_f64


_dispatch_on_float_type(gelu_scalar, _gelu_f32, _gelu_f64)
_dispatch_on_float_type(gelu_grad_scalar, _gelu_grad_f32, _gelu_grad_f64)


@parallel_kernel(fastmath={"contract"})
def gelu_flat_f32(x: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover
    """The exact (erf) GELU in float32, x * Phi(x) (x - x * Phi(-x) for x > 0), vectorized (see above).

    Phi comes from a float32 erfc polynomial within 2e-7 of the float64 value (tests/kernels/test_gelu_kernels.py);
    the tanh form (``approximate="tanh"``) is a different function, which this kernel does not compute."""
    for i in prange(x.size):
        y[i] = _gelu_f32(x[i])


@parallel_kernel(fastmath={"contract"})
def gelu_flat_f32_backward(x: np.ndarray, dout: np.ndarray, dx: np.ndarray) -> None:  # pragma: no cover
    """Backward of :func:`gelu_flat_f32`: dout * (Phi(x) + x * phi(x)), phi from the same exponential."""
    for i in prange(x.size):
        dx[i] = dout[i] * _gelu_grad_f32(x[i])


# ------------------------------------------------------------------------------------ fused elementwise passes
# Each is one parallel pass over memory where NumPy (single-threaded) would make two or three: a bias add and the
# GELU after a 1x1 convolution, the positional residual's GELU and add, the ConvMod product and its two
# gradients. float32 and float64 alike (gelu_scalar picks the form by type).


@parallel_kernel()
def add_bias_rows(x: np.ndarray, b: np.ndarray) -> None:  # pragma: no cover
    """In place, x (M, C) += b (C,)."""
    m, c = x.shape
    for r in prange(m):
        xr = x[r]
        for ch in range(c):
            xr[ch] += b[ch]


@parallel_kernel(fastmath={"contract"})
def bias_gelu_rows(h: np.ndarray, b: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover
    """y = GELU(h + b), h and y (M, C), b (C,)."""
    m, c = h.shape
    for r in prange(m):
        hr, yr = h[r], y[r]
        for ch in range(c):
            yr[ch] = gelu_scalar(hr[ch] + b[ch])


@parallel_kernel(fastmath={"contract"})
def bias_gelu_rows_backward(h: np.ndarray, b: np.ndarray, dy: np.ndarray, dh: np.ndarray) -> None:  # pragma: no cover
    """dh = dy * GELU'(h + b)."""
    m, c = h.shape
    for r in prange(m):
        hr, dyr, dhr = h[r], dy[r], dh[r]
        for ch in range(c):
            dhr[ch] = dyr[ch] * gelu_grad_scalar(hr[ch] + b[ch])


@parallel_kernel(fastmath={"contract"})
def gelu_add_flat(p: np.ndarray, r: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover
    """y = r + GELU(p), flat arrays of one size."""
    for i in prange(p.size):
        y[i] = r[i] + gelu_scalar(p[i])


@parallel_kernel()
def mul_flat(a: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    """out = a * v."""
    for i in prange(a.size):
        out[i] = a[i] * v[i]


@parallel_kernel()
def mul_flat_backward(dm: np.ndarray, a: np.ndarray, v: np.ndarray, da: np.ndarray,
                      dv: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """The product rule of m = a * v in one pass: da = dm * v, dv = dm * a."""
    for i in prange(dm.size):
        d = dm[i]
        da[i] = d * v[i]
        dv[i] = d * a[i]


# A block's residual add of a branch: layer scale, drop path's per-sample factor and the add in one pass each way.
# Arrays (N, P, C) (P = H*W pixels), gamma (C,), scale (N,): drop path's m / keep, ones when it is the identity.
@parallel_kernel()
def scaled_add_rows(base: Any, y: np.ndarray, gamma: np.ndarray, scale: np.ndarray,
                    out: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """out[n, p, c] = base[n, p, c] + (gamma[c] * y[n, p, c]) * scale[n]; base None: no add (layer scale alone)."""
    n, p, c = y.shape
    for r in prange(n * p):
        i, j = r // p, r % p
        s, yr, outr = scale[i], y[i, j], out[i, j]
        if base is None:
            for ch in range(c):
                outr[ch] = (gamma[ch] * yr[ch]) * s
        else:
            br = base[i, j]
            for ch in range(c):
                outr[ch] = br[ch] + (gamma[ch] * yr[ch]) * s


@njit(cache=True)
def _scaled_sample_backward(dout: np.ndarray, y: np.ndarray, gamma: np.ndarray, s: Any, dy: np.ndarray,
                            part: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    p, c = y.shape
    for ch in range(c):
        part[ch] = 0.0
    for j in range(p):
        for ch in range(c):
            d = dout[j, ch] * s
            dy[j, ch] = gamma[ch] * d
            part[ch] += d * y[j, ch]


@parallel_kernel()
def scaled_add_rows_backward(dout: np.ndarray, y: np.ndarray, gamma: np.ndarray, scale: np.ndarray, dy: np.ndarray,
                             partial: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """d = dout * scale[n]: dy = gamma * d, and partial[n, c] = sum_p d * y (float64), dgamma = sum_n partial[n]
    in sample order (the caller's): a fixed sum at any thread count."""
    for i in prange(y.shape[0]):
        _scaled_sample_backward(dout[i], y[i], gamma, scale[i], dy[i], partial[i])
