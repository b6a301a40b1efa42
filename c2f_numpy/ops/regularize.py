"""Layer scale and drop path (stochastic depth), the two per-branch factors of a Conv2Former block, and the
residual add they feed.

layer scale:      y[n, c, ...] = gamma[c] * x[n, c, ...];   dx = gamma * dy,  dgamma[c] = sum dy * x over all but c
drop path:        y[n] = x[n] * m[n] / keep,  m[n] ~ Bernoulli(keep), keep = 1 - drop_prob (timm's drop_path with
                  scale_by_keep=True), so E[y] = x;  dx = dy * m / keep. Identity in eval mode or at drop_prob 0.
residual branch:  out = x + drop_path(layer_scale(y)), a block's add of one branch's output y to its input x;
                  dx = dout (the identity path), dy and dgamma as the two ops above give them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import (
    CHANNELS_FIRST,
    OpInputError,
    check_array,
    check_flag,
    check_float,
    check_grad_out,
    layer_scale_args,
    residual_branch_args,
)


@dataclass(frozen=True)
class LayerScaleCache:
    x: np.ndarray
    gamma: np.ndarray


def layer_scale_forward(x: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, LayerScaleCache]:
    """Per-channel scale. Shapes: x (N, C, ...), gamma (C,) -> y like x."""
    x, gamma = layer_scale_args("layer_scale", x, gamma, CHANNELS_FIRST)
    g = gamma.reshape(gamma.shape + (1,) * (x.ndim - 2))
    return g * x, LayerScaleCache(x, gamma)


def layer_scale_backward(dout: np.ndarray, cache: LayerScaleCache) -> tuple[np.ndarray, np.ndarray]:
    """Returns (dx, dgamma)."""
    x, gamma = cache.x, cache.gamma
    dout = check_grad_out("layer_scale", dout, x.shape, x.dtype)
    g = gamma.reshape(gamma.shape + (1,) * (x.ndim - 2))
    dgamma = np.sum(dout * x, axis=(0, *range(2, x.ndim)))
    return g * dout, dgamma


@dataclass(frozen=True)
class DropPathCache:
    scale: np.ndarray | None  # (N, 1, ..., 1): m / keep per sample; None when the op was the identity
    shape: tuple[int, ...]
    dtype: np.dtype


def drop_path_scale(
    op: str, n: int, dtype: np.dtype, drop_prob: float, *, training: bool, rng: np.random.Generator | None
) -> np.ndarray | None:
    """Drop path's per-sample factor m[n] / keep, shape (N,) in ``dtype``; None where the op is the identity
    (eval mode, or drop_prob 0). The one place the mask is drawn: ``rng.random(N) < keep``."""
    drop_prob = check_float(op, "drop_prob", drop_prob, low=0.0, high=1.0)
    if not check_flag(op, "training", training) or drop_prob == 0.0:
        return None
    if not isinstance(rng, np.random.Generator):
        raise OpInputError(
            f"{op}: an active drop path needs rng=np.random.Generator (seeded), got {type(rng).__name__}"
        )
    keep = 1.0 - drop_prob
    mask = np.less(rng.random(n), keep).astype(dtype)
    return mask / np.asarray(keep, dtype=dtype) if keep > 0 else mask  # drop_prob 1: nothing left to rescale


def drop_path_forward(
    x: np.ndarray, drop_prob: float, *, training: bool, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, DropPathCache]:
    """Drop whole samples of a residual branch with probability ``drop_prob``; scale kept ones by 1/keep.

    Shapes: x (N, ...) -> y like x. ``rng`` (a seeded ``np.random.Generator``) is required when the op is
    active (training and drop_prob > 0): the mask is ``rng.random(N) < keep``, so a seed fixes it.
    drop_prob = 1 drops every sample (y = 0).
    """
    op = "drop_path"
    x = check_array(op, "x", x, layout="(N, ...)")
    if x.ndim < 1:
        raise OpInputError(f"{op}: x must have a batch axis, got a scalar")
    scale = drop_path_scale(op, x.shape[0], x.dtype, drop_prob, training=training, rng=rng)
    if scale is None:
        return x.copy(), DropPathCache(None, x.shape, x.dtype)
    scale = scale.reshape((x.shape[0],) + (1,) * (x.ndim - 1))
    return x * scale, DropPathCache(scale, x.shape, x.dtype)


def drop_path_backward(dout: np.ndarray, cache: DropPathCache) -> np.ndarray:
    """Returns dx = dout * m / keep (the same per-sample factor as the forward)."""
    dout = check_grad_out("drop_path", dout, cache.shape, cache.dtype)
    return dout.copy() if cache.scale is None else dout * cache.scale


@dataclass(frozen=True)
class ResidualBranchCache:
    scale: LayerScaleCache
    drop: DropPathCache


def residual_branch_forward(
    x: np.ndarray,
    y: np.ndarray,
    gamma: np.ndarray,
    drop_prob: float,
    *,
    training: bool,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, ResidualBranchCache]:
    """out = x + drop_path(gamma * y): the residual add of a block's branch output y to the branch input x.

    Shapes: x, y (N, C, ...), gamma (C,) -> out like x. ``drop_prob``, ``training`` and ``rng`` are drop path's.
    """
    x, y, gamma = residual_branch_args("residual_branch", x, y, gamma, CHANNELS_FIRST)
    s, ls = layer_scale_forward(y, gamma)
    d, dp = drop_path_forward(s, drop_prob, training=training, rng=rng)
    return x + d, ResidualBranchCache(ls, dp)


def residual_branch_backward(dout: np.ndarray, cache: ResidualBranchCache) -> tuple[np.ndarray, np.ndarray]:
    """Returns (dy, dgamma). The gradient of x is ``dout`` itself (the identity path): the caller adds it."""
    dout = check_grad_out("residual_branch", dout, cache.drop.shape, cache.drop.dtype)
    return layer_scale_backward(drop_path_backward(dout, cache.drop), cache.scale)
