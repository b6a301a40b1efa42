"""GELU, exact (erf) form and tanh approximation, matching ``torch.nn.GELU(approximate=...)``.

exact:  y = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2 = erfc(-x / sqrt 2) / 2;
        dy/dx = Phi(x) + x * phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
        Phi is evaluated with erfc: 1 + erf(x / sqrt 2) cancels for negative x (float64 relative error 4e-11 at
        x = -5, 2e-6 at x = -7, and 100% below about -8.3, where it returns 0); erfc(-x / sqrt 2) keeps full
        relative precision there.
tanh:   y = x/2 * (1 + tanh(u)),  u = sqrt(2/pi) * (x + 0.044715 x^3);
        dy/dx = (1 + t)/2 + x/2 * (1 - t^2) * sqrt(2/pi) * (1 + 3 * 0.044715 x^2),  t = tanh(u)
        evaluated through s = sigmoid(2u) = (1 + t)/2 and 1 - t^2 = 4 s (1 - s): 1 + tanh(u) cancels for x < -4
        the same way 1 + erf does.
Conv2Former uses the exact form (torch.nn.GELU()); tanh is a common porting mistake, kept to study it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erfc, expit

from .checks import GELU_APPROXIMATIONS, check_grad_out, gelu_args

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_C = 0.044715
APPROXIMATIONS = GELU_APPROXIMATIONS


@dataclass(frozen=True)
class GeluCache:
    x: np.ndarray
    approximate: str


def gelu_forward(x: np.ndarray, approximate: str = "none") -> tuple[np.ndarray, GeluCache]:
    """Elementwise GELU. x any shape (0-d included; the result is always an array); approximate "none" (erf,
    the default) or "tanh"."""
    x = gelu_args("gelu", x, approximate)
    if approximate == "none":
        y = 0.5 * x * erfc(-x * _SQRT_HALF)
    else:
        y = x * expit(2.0 * _SQRT_2_OVER_PI * (x + _TANH_C * x**3))
    # np.asarray: on a 0-d input NumPy's ufuncs return a scalar, and every op returns an array
    return np.asarray(y, dtype=x.dtype), GeluCache(x, approximate)


def gelu_backward(dout: np.ndarray, cache: GeluCache) -> np.ndarray:
    """Returns dx = dout * GELU'(x)."""
    x = cache.x
    dout = check_grad_out("gelu", dout, x.shape, x.dtype)
    if cache.approximate == "none":
        deriv = 0.5 * erfc(-x * _SQRT_HALF) + x * _INV_SQRT_2PI * np.exp(-0.5 * x * x)
    else:
        s = expit(2.0 * _SQRT_2_OVER_PI * (x + _TANH_C * x**3))
        deriv = s + 2.0 * x * s * (1.0 - s) * _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_C * x * x)
    return np.asarray(dout * deriv, dtype=x.dtype)
