"""Channels-last LayerNorm and GELU as Numba kernels (the fast twins of ``ops.layer_norm`` / ``ops.gelu``).

Rows are pixels: x viewed as (M, C) with M = N*H*W. Each row's mean and variance are summed in a fixed order by
one thread, so results do not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@njit(parallel=True, cache=True)
def layer_norm_rows(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float,
                    y: np.ndarray, xhat: np.ndarray, rstd: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """Per row: xhat = (x - mean) / sqrt(var + eps) (biased variance), y = weight * xhat + bias."""
    m, c = x.shape
    for r in prange(m):
        row = x[r]
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
        rstd[r] = rs
        xh, yr = xhat[r], y[r]
        for ch in range(c):
            v = (row[ch] - mean) * rs
            xh[ch] = v
            yr[ch] = weight[ch] * v + bias[ch]


@njit(parallel=True, cache=True)
def layer_norm_rows_backward(dout: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, weight: np.ndarray,
                             dx: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """Per row, with g = dout * weight: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))."""
    m, c = dout.shape
    for r in prange(m):
        d, xh = dout[r], xhat[r]
        mg = 0.0
        mgx = 0.0
        for ch in range(c):
            g = d[ch] * weight[ch]
            mg += g
            mgx += g * xh[ch]
        mg /= c
        mgx /= c
        rs = rstd[r]
        out = dx[r]
        for ch in range(c):
            out[ch] = rs * (d[ch] * weight[ch] - mg - xh[ch] * mgx)


@njit(parallel=True, cache=True)
def gelu_flat(x: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover
    """y = x * Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2 (the exact form, accurate for x < 0)."""
    for i in prange(x.size):
        v = x[i]
        y[i] = 0.5 * v * math.erfc(-v * _SQRT_HALF)


@njit(parallel=True, cache=True)
def gelu_flat_backward(x: np.ndarray, dout: np.ndarray, dx: np.ndarray) -> None:  # pragma: no cover
    """dx = dout * (Phi(x) + x * phi(x))."""
    for i in prange(x.size):
        v = x[i]
        dx[i] = dout[i] * (0.5 * math.erfc(-v * _SQRT_HALF) + v * _INV_SQRT_2PI * math.exp(-0.5 * v * v))
