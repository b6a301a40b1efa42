"""Finite-difference gradient checks: the evidence that a hand-written backward is right.

For a scalar function L(inputs) and a claimed gradient G = dL/dX of one input X, pick a random unit
direction U and compare the directional derivative two ways:

    analytic:  <G, U>
    numeric:   (L(X + h U) - L(X - h U)) / (2h)          central difference, error O(h^2)

One direction tests every entry of G at once (a wrong entry shifts <G, U> by its error times U's entry), at the
cost of two evaluations. The error is reported relative to ||G||, which bounds |<G, U>|, so it stays meaningful
when <G, U> happens to be near zero. The difference quotient itself carries rounding noise of about
eps * |L| / h; a gradient much smaller than that (a LayerNorm over 1 or 2 channels is nearly constant) cannot be
resolved by finite differences, so the scale never drops below that noise floor. Run it in float64: float32
rounding swamps the difference quotient.
To turn any op into a scalar L, contract its output with a fixed random tensor R: L = sum(out * R), whose
upstream gradient is exactly R.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .testing import FD_STEP, FD_TOLERANCE

# Rounding noise of the difference quotient, in units of eps * |L| / h: L is a sum of many rounded terms.
_NOISE_ULPS = 100.0
# Gradients are compared to unit-scale inputs; a directional derivative below this is zero for our purposes.
_ZERO = 1e-9


@dataclass(frozen=True)
class GradCheck:
    name: str
    analytic: float  # <G, U>
    numeric: float  # central difference
    grad_norm: float  # ||G||
    error: float  # |analytic - numeric| / max(||G||, |numeric|, noise floor / tol, 1e-9)
    tol: float

    @property
    def ok(self) -> bool:
        return self.error <= self.tol

    def __str__(self) -> str:
        return (
            f"{self.name:<20s} analytic {self.analytic:+.10e}  numeric {self.numeric:+.10e}  "
            f"rel err {self.error:.2e}  {'OK' if self.ok else 'NOT OK'}"
        )


def directional_check(
    loss: Callable[[Mapping[str, np.ndarray]], float],
    inputs: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    rng: np.random.Generator,
    h: float = FD_STEP,
    tol: float = FD_TOLERANCE,
) -> list[GradCheck]:
    """Check ``grads[name]`` against central differences of ``loss`` for every name in ``grads``.

    ``loss`` maps a dict of inputs to a float; it is called with copies where one input is perturbed.
    """
    results = []
    for name, g in grads.items():
        x = inputs[name]
        if g.shape != x.shape:
            raise ValueError(f"gradient {name} has shape {g.shape}, its input has shape {x.shape}")
        u = rng.standard_normal(x.shape)
        u /= np.linalg.norm(u) or 1.0
        plus, minus = dict(inputs), dict(inputs)
        plus[name] = x + h * u
        minus[name] = x - h * u
        lp, lm = loss(plus), loss(minus)
        numeric = (lp - lm) / (2 * h)
        analytic = float(np.sum(g * u))
        norm = float(np.linalg.norm(g))
        noise = _NOISE_ULPS * np.finfo(np.float64).eps * max(abs(lp), abs(lm)) / h
        err = abs(analytic - numeric) / max(norm, abs(numeric), noise / tol, _ZERO)
        results.append(GradCheck(name, analytic, numeric, norm, err, tol))
    return results


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = FD_STEP) -> np.ndarray:
    """Every entry of df/dx by central differences (2 * x.size evaluations: for small tensors)."""
    grad = np.empty(x.shape, dtype=np.float64)
    xf = x.astype(np.float64)  # a copy we may perturb
    flat, gflat = xf.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + h
        fp = f(xf)
        flat[i] = orig - h
        fm = f(xf)
        flat[i] = orig
        gflat[i] = (fp - fm) / (2 * h)
    return grad
