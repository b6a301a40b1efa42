"""Depthwise convolution in channels-last (NHWC) layout, Numba kernels: the fast twin of ``ops.conv2d``
with ``groups = C``, stride 1.

Why NHWC: the channel axis is innermost, so every kernel tap is a contiguous multiply-add over C channels that
vectorises whatever the image size (Conv2Former's maps at 32x32 input are 8x8 down to 1x1: a loop along W
would have 8 lanes at most). Taps that fall on the zero padding are skipped, not multiplied: at 2x2 with
k = 11 only 9 of the 121 taps touch the image.

    forward   out[n, y, x, c] = b[c] + sum_{i,j} w[i, j, c] * x[n, y + i - p, x + j - p, c]
    input     dx[n, y, x, c]  = sum_{i,j} w[i, j, c] * dout[n, y - i + p, x - j + p, c]   (the same loop, flipped w)
    weight    dw[i, j, c]     = sum_{n,y,x} dout[n, y, x, c] * x[n, y + i - p, x + j - p, c]

The weight gradient is summed per fixed block of images into its own partial, then the partials are added in
block order: the result is bitwise the same on every run and for any thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .channels import channel_sums

# fastmath: only 'contract' (fused multiply-add); no reassociation, so every sum has a fixed order.
_FLAGS = {"contract"}
WEIGHT_GRAD_BLOCKS = 16  # images are split into this many fixed blocks for the weight gradient


@njit(parallel=True, fastmath=_FLAGS, cache=True)
def correlate(src: np.ndarray, w: np.ndarray, out: np.ndarray, offset: int) -> None:  # pragma: no cover - jit
    """out[n, y, x, :] += sum_{i,j} w[i, j, :] * src[n, y + i - offset, x + j - offset, :] (in bounds only)."""
    n_img, hs, ws, c = src.shape
    _, ho, wo, _ = out.shape
    k = w.shape[0]
    for t in prange(n_img * ho):
        n = t // ho
        y = t - n * ho
        i0 = max(0, offset - y)
        i1 = min(k, hs + offset - y)
        for x in range(wo):
            acc = out[n, y, x]
            j0 = max(0, offset - x)
            j1 = min(k, ws + offset - x)
            for i in range(i0, i1):
                row = src[n, y + i - offset]
                for j in range(j0, j1):
                    s = row[x + j - offset]
                    wij = w[i, j]
                    for ch in range(c):
                        acc[ch] += wij[ch] * s[ch]


@njit(parallel=True, fastmath=_FLAGS, cache=True)
def weight_grad_partials(
    dout: np.ndarray, src: np.ndarray, k: int, offset: int, blocks: int
) -> np.ndarray:  # pragma: no cover
    """partials[b, i, j, c] = sum over the images of block b of dout[n, y, x, c] * src[n, y+i-off, x+j-off, c]."""
    n_img, ho, wo, c = dout.shape
    _, hs, ws, _ = src.shape
    partials = np.zeros((blocks, k, k, c), dtype=dout.dtype)
    for b in prange(blocks):
        acc = partials[b]
        for n in range(b * n_img // blocks, (b + 1) * n_img // blocks):
            for y in range(ho):
                i0 = max(0, offset - y)
                i1 = min(k, hs + offset - y)
                for x in range(wo):
                    d = dout[n, y, x]
                    j0 = max(0, offset - x)
                    j1 = min(k, ws + offset - x)
                    for i in range(i0, i1):
                        row = src[n, y + i - offset]
                        for j in range(j0, j1):
                            s = row[x + j - offset]
                            a = acc[i, j]
                            for ch in range(c):
                                a[ch] += d[ch] * s[ch]
    return partials


def depthwise_forward(x: np.ndarray, w_kkc: np.ndarray, b: np.ndarray | None, padding: int) -> np.ndarray:
    """x (N, H, W, C), w (k, k, C), b (C,) -> (N, H + 2p - k + 1, W + 2p - k + 1, C)."""
    n, h, wd, c = x.shape
    k = w_kkc.shape[0]
    out = np.empty((n, h + 2 * padding - k + 1, wd + 2 * padding - k + 1, c), dtype=x.dtype)
    out[...] = b if b is not None else 0
    correlate(x, w_kkc, out, padding)
    return out


def depthwise_backward(
    dout: np.ndarray, x: np.ndarray, w_kkc: np.ndarray, padding: int, with_bias: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(dx (N, H, W, C), dw (k, k, C), db (C,) or None) of ``depthwise_forward``."""
    k = w_kkc.shape[0]
    dx = np.zeros_like(x)
    correlate(dout, np.ascontiguousarray(w_kkc[::-1, ::-1]), dx, k - 1 - padding)
    blocks = min(WEIGHT_GRAD_BLOCKS, x.shape[0])
    dw = weight_grad_partials(dout, x, k, padding, blocks).sum(axis=0)  # fixed block order: deterministic
    db = channel_sums(dout.reshape(-1, dout.shape[-1])) if with_bias else None
    return dx, dw, db
