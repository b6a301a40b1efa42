"""The AdamW update as one fused Numba pass (the NumPy form in ``train.optim.AdamW`` takes eight passes)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .pool import parallel_kernel

# Below this many elements one thread does the update: a parallel launch costs more than it saves. Most of a
# Conv2Former's ~140 parameter arrays are biases and norm scales of 32-512 elements, so a parallel loop on every
# array would pay a launch ~140 times a step for almost no work.
PARALLEL_MIN = 1 << 15


@njit(cache=True, inline="always")
def _adamw_element(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, i: int, b1: float, b2: float,
                   eps: float, shrink: float, step: float, root_bc2: float) -> None:  # pragma: no cover  # fmt: skip
    """Element i, in the order of ``train.optim.AdamW._update_numpy``: p *= 1 - lr*decay;
    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= (lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps)."""
    gi = g[i]
    mi = b1 * m[i] + (1.0 - b1) * gi
    vi = b2 * v[i] + (1.0 - b2) * gi * gi
    m[i] = mi
    v[i] = vi
    p[i] = p[i] * shrink - step * mi / (math.sqrt(vi) / root_bc2 + eps)


@parallel_kernel()
def _adamw_parallel(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, b1: float, b2: float,
                    eps: float, decay: float, bc1: float, bc2: float) -> None:  # pragma: no cover  # fmt: skip
    shrink, step, root_bc2 = 1.0 - lr * decay, lr / bc1, math.sqrt(bc2)
    for i in prange(p.size):
        _adamw_element(p, g, m, v, i, b1, b2, eps, shrink, step, root_bc2)


@njit(cache=True)
def _adamw_serial(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, b1: float, b2: float,
                  eps: float, decay: float, bc1: float, bc2: float) -> None:  # pragma: no cover  # fmt: skip
    shrink, step, root_bc2 = 1.0 - lr * decay, lr / bc1, math.sqrt(bc2)
    for i in range(p.size):
        _adamw_element(p, g, m, v, i, b1, b2, eps, shrink, step, root_bc2)


def adamw_update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, b1: float, b2: float,
                 eps: float, decay: float, bc1: float, bc2: float) -> None:  # fmt: skip
    """One AdamW step in place on flat (1-d, contiguous) p, m, v with gradient g; element-wise, so the result
    does not depend on the thread count."""
    kernel = _adamw_parallel if p.size >= PARALLEL_MIN else _adamw_serial
    kernel(p, g, m, v, lr, b1, b2, eps, decay, bc1, bc2)
