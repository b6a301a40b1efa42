"""The AdamW update as one fused Numba pass (the NumPy form in ``train.optim.AdamW`` takes eight passes)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def adamw_update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, b1: float, b2: float,
                 eps: float, decay: float, bc1: float, bc2: float) -> None:  # pragma: no cover  # fmt: skip
    """In place, per element, in the order of ``train.optim.AdamW._update_numpy``:
    p *= 1 - lr*decay; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= (lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps)."""
    shrink = 1.0 - lr * decay
    step = lr / bc1
    root_bc2 = math.sqrt(bc2)
    for i in prange(p.size):
        gi = g[i]
        mi = b1 * m[i] + (1.0 - b1) * gi
        vi = b2 * v[i] + (1.0 - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * shrink - step * mi / (math.sqrt(vi) / root_bc2 + eps)
