"""Global average pooling, the step between Conv2Former's head and its classifier.

y[n, c] = mean_{h, w} x[n, c, h, w];   dx[n, c, h, w] = dy[n, c] / (H * W)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import CHANNELS_FIRST, check_array, check_grad_out


@dataclass(frozen=True)
class GlobalAvgPoolCache:
    shape: tuple[int, int, int, int]
    dtype: np.dtype


def global_avg_pool_forward(x: np.ndarray) -> tuple[np.ndarray, GlobalAvgPoolCache]:
    """Mean over the spatial axes. Shapes: x (N, C, H, W) -> y (N, C)."""
    x = check_array("global_avg_pool", "x", x, 4, CHANNELS_FIRST.name)
    n, c, h, w = x.shape
    return x.mean(axis=(2, 3)), GlobalAvgPoolCache((n, c, h, w), x.dtype)


def global_avg_pool_backward(dout: np.ndarray, cache: GlobalAvgPoolCache) -> np.ndarray:
    """Spread each dy[n, c] evenly over the H*W positions it averaged."""
    n, c, h, w = cache.shape
    dout = check_grad_out("global_avg_pool", dout, (n, c), cache.dtype)
    dx = np.empty(cache.shape, dtype=cache.dtype)
    dx[...] = (dout / (h * w))[:, :, None, None]
    return dx
