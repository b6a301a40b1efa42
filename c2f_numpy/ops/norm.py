"""Normalisations: channels-first LayerNorm (Conv2Former's) and BatchNorm2d (the stem's).

Both normalise x to xhat = (x - mean) / sqrt(var + eps) and apply a per-channel affine y = w * xhat + b; they
differ in the axes the statistics run over. With g = dy * w and M the number of elements averaged over,
the input gradient of either is (mean_* taken over the same axes as the statistics):

    dx = rstd * (g - mean(g) - xhat * mean(g * xhat))

which follows from d xhat_k / d x_l = rstd * (delta_kl - 1/M - xhat_k xhat_l / M).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .checks import CHANNELS_FIRST, batch_norm2d_args, check_grad_out, layer_norm_args


def _param_view(p: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> (C, 1, ..., 1), so it broadcasts over the axes after the channel axis."""
    return p.reshape(p.shape + (1,) * (ndim - 2))


@dataclass(frozen=True)
class LayerNormCache:
    xhat: np.ndarray
    rstd: np.ndarray  # (N, 1, *spatial)
    weight: np.ndarray


def layer_norm_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-6
) -> tuple[np.ndarray, LayerNormCache]:
    """LayerNorm over the channel axis of an (N, C, ...) tensor ("channels_first" in the official code).

    mean and biased variance over C at every (n, h, w): y = weight[c] * (x - mean) / sqrt(var + eps) + bias[c].
    Shapes: x (N, C, *spatial), weight (C,), bias (C,) -> y like x. eps defaults to Conv2Former's 1e-6.
    """
    x, weight, bias, eps = layer_norm_args("layer_norm", x, weight, bias, eps, CHANNELS_FIRST)
    mean = x.mean(axis=1, keepdims=True)
    xc = x - mean
    var = np.mean(xc * xc, axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd
    y = _param_view(weight, x.ndim) * xhat + _param_view(bias, x.ndim)
    return y, LayerNormCache(xhat, rstd, weight)


def layer_norm_backward(dout: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (dx, dweight, dbias); see the module docstring for dx."""
    xhat, rstd = cache.xhat, cache.rstd
    dout = check_grad_out("layer_norm", dout, xhat.shape, xhat.dtype)
    others = (0, *range(2, xhat.ndim))
    dweight = np.sum(dout * xhat, axis=others)
    dbias = dout.sum(axis=others)
    g = dout * _param_view(cache.weight, xhat.ndim)
    dx = rstd * (g - g.mean(axis=1, keepdims=True) - xhat * np.mean(g * xhat, axis=1, keepdims=True))
    return dx, dweight, dbias


@dataclass(frozen=True)
class BatchNormStats:
    """BatchNorm2d's buffers, as in a PyTorch state dict: running_mean, running_var, num_batches_tracked."""

    running_mean: np.ndarray
    running_var: np.ndarray
    num_batches_tracked: int = 0

    @staticmethod
    def initial(c: int, dtype: np.dtype | type = np.float32) -> BatchNormStats:
        """PyTorch's initial buffers: mean 0, variance 1, no batches seen."""
        return BatchNormStats(np.zeros(c, dtype=dtype), np.ones(c, dtype=dtype), 0)


def update_running_stats(
    stats: BatchNormStats, mean: np.ndarray, var: np.ndarray, m: int, momentum: float | None
) -> BatchNormStats:
    """PyTorch's update after a train-mode batch of ``m`` values per channel with batch ``mean`` and biased ``var``:
    running = (1 - f) * running + f * batch with f = momentum (or 1 / num_batches_tracked when momentum is None),
    where the variance entering running_var is the unbiased one, var * m / (m - 1)."""
    tracked = stats.num_batches_tracked + 1
    f = 1.0 / tracked if momentum is None else momentum
    dtype = stats.running_mean.dtype
    return BatchNormStats(
        ((1 - f) * stats.running_mean + f * mean).astype(dtype, copy=False),
        ((1 - f) * stats.running_var + f * var * (m / (m - 1))).astype(dtype, copy=False),
        tracked,
    )


@dataclass(frozen=True)
class BatchNormCache:
    xhat: np.ndarray
    rstd: np.ndarray  # (C,)
    weight: np.ndarray
    training: bool


def batch_norm2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    stats: BatchNormStats,
    *,
    training: bool,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, BatchNormCache, BatchNormStats]:
    """BatchNorm over (N, H, W) per channel, matching ``torch.nn.BatchNorm2d``. Returns (y, cache, new_stats).

    Train mode normalises with the batch mean and biased variance and returns updated running statistics:
    running = (1 - momentum) * running + momentum * batch, where the batch variance entering running_var is
    the *unbiased* one (times M / (M - 1), M = N*H*W); momentum=None gives PyTorch's cumulative average
    (momentum = 1 / num_batches_tracked). Eval mode normalises with the running statistics and returns them
    unchanged. The op is pure: ``stats`` is never modified.
    Shapes: x (N, C, H, W), weight/bias (C,), stats arrays (C,).
    """
    x, weight, bias, momentum, eps = batch_norm2d_args(
        "batch_norm2d", x, weight, bias, stats, training=training, momentum=momentum, eps=eps, layout=CHANNELS_FIRST
    )
    axes = (0, 2, 3)
    if training:
        m = x.shape[0] * x.shape[2] * x.shape[3]
        mean = x.mean(axis=axes)
        xc = x - mean[:, None, None]
        var = np.mean(xc * xc, axis=axes)
        new_stats = update_running_stats(stats, mean, var, m, momentum)
    else:
        xc = x - stats.running_mean[:, None, None]
        var = stats.running_var
        new_stats = replace(stats)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = xc * rstd[:, None, None]
    y = weight[:, None, None] * xhat + bias[:, None, None]
    return y, BatchNormCache(xhat, rstd, weight, training), new_stats


def batch_norm2d_backward(dout: np.ndarray, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (dx, dweight, dbias). In eval mode the statistics are constants, so dx = dout * w * rstd."""
    xhat, rstd = cache.xhat, cache.rstd
    dout = check_grad_out("batch_norm2d", dout, xhat.shape, xhat.dtype)
    axes = (0, 2, 3)
    dweight = np.sum(dout * xhat, axis=axes)
    dbias = dout.sum(axis=axes)
    g = dout * (cache.weight * rstd)[:, None, None]
    if not cache.training:
        return g, dweight, dbias
    gm = g.mean(axis=axes)
    gxm = np.mean(g * xhat, axis=axes)
    dx = g - gm[:, None, None] - xhat * gxm[:, None, None]
    return dx, dweight, dbias
