"""The MLP branch at inference as one parallel pass over groups of images (the fast copy's ``mlp_inference``).

The layer-by-layer path (:func:`c2f_numpy.kernels.nhwc.mlp_forward`) runs LayerNorm, fc1, bias + GELU, the 3x3
positional conv, GELU + residual and fc2 each over the whole batch: the hidden tensor (4C channels; 12.8 MB for
micro's first stage at batch 128) goes to memory and back five times. Here each task takes a few whole images
and runs the branch start to end on them, so the hidden values stay in the core's caches:

    per group of g images (rows = g*H*W pixels):
        n   = LN(x)                     rows x C        elementwise.layer_norm_row
        h   = GELU(n @ W1^T + b1)       rows x 4C       one BLAS call, elementwise.bias_gelu_row in place
        z   = h + GELU(DW3x3(h) + bp)   rows x 4C       depthwise.correlate_row per image row, then in place
        out = z @ W2^T + b2             rows x C        one BLAS call

The math is the row functions of the layer-by-layer kernels, so both paths share one implementation; only the
order of work differs (and BLAS's blocking, so the two agree to rounding, not bitwise). Nothing is kept for a
backward: training uses the layer-by-layer path, whose caches the backward reads.

When it pays (measured in docs/performance.md, "Round five"): a group must give BLAS enough rows (GROUP_ROWS),
and the batch enough groups for the threads (MIN_GROUPS); otherwise :func:`mlp_groups` says no and the caller
takes the layer-by-layer path. Both depend on the shape only, so a given input always takes the same path and
the result is the same at any thread count.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numba import prange

from .depthwise import _tile_taps, correlate_row
from .elementwise import bias_gelu_row, gelu_scalar, layer_norm_row
from .pool import parallel_kernel

# At least this many pixel rows per group: micro's 7x7 maps at batch 128 ran 1.0x the layer-by-layer path with
# one image per group (49 rows: BLAS re-packs W1 for too little work), 1.2x with 8 (392 rows); 14x14 maps were
# 3.4-3.6x faster with 1-8 images per group (AMD Zen 3, 2 threads).
GROUP_ROWS = 392
# At least this many groups: fewer leave threads idle (8 images at 14x14, 4 groups, ran 0.9x; a single image is
# one group). A constant, not the thread count, so the path chosen does not depend on the machine.
MIN_GROUPS = 8


def mlp_groups(n: int, h: int, w: int) -> int:
    """Images per group for an (n, h, w, C) input, or 0 when the fused pass would not pay (see above)."""
    per = max(1, -(-GROUP_ROWS // (h * w)))
    return per if -(-n // per) >= MIN_GROUPS else 0


@parallel_kernel(fastmath={"contract"})
def _mlp_groups(x: np.ndarray, ln_w: np.ndarray, ln_b: np.ndarray, eps: float, w1t: np.ndarray, b1: np.ndarray,
                wpos: np.ndarray, bpos: np.ndarray, w2t: np.ndarray, b2: np.ndarray, out: np.ndarray,
                per: int) -> None:  # pragma: no cover - jit  # fmt: skip
    """out = MLP(x) for x, out (N, H, W, C); w1t (C, D), w2t (D, C), wpos (k, k, D); ``per`` images per task."""
    n_img, hh, ww, c = x.shape
    d = w1t.shape[1]
    pix = hh * ww
    offset = wpos.shape[0] // 2
    wt = _tile_taps(wpos, ww)
    bias_row = _tile_taps(bpos.reshape(1, 1, d), ww)[0, 0]
    for t in prange((n_img + per - 1) // per):
        n0 = t * per
        g = min(n_img, n0 + per) - n0
        rows = g * pix
        xs = x[n0 : n0 + g].reshape(rows, c)
        nrm = np.empty((rows, c), x.dtype)
        for r in range(rows):
            layer_norm_row(xs[r], ln_w, ln_b, eps, nrm[r], nrm[r])  # xhat is not kept: written over by y
        h = np.empty((rows, d), x.dtype)
        np.dot(nrm, w1t, h)
        for r in range(rows):
            bias_gelu_row(h[r], b1, h[r])
        h4 = h.reshape(g, hh, ww, d)
        z = np.empty((g, hh, ww, d), x.dtype)
        for m in range(g):
            for y in range(hh):
                correlate_row(h4[m], wt, z[m, y].reshape(ww * d), bias_row, y, offset)
        zf, hf = z.reshape(rows * d), h.reshape(rows * d)
        for q in range(rows * d):
            zf[q] = hf[q] + gelu_scalar(zf[q])
        o = out[n0 : n0 + g].reshape(rows, c)
        np.dot(z.reshape(rows, d), w2t, o)
        for r in range(rows):
            orow = o[r]
            for ch in range(c):
                orow[ch] += b2[ch]


def mlp_inference(x: np.ndarray, p: Mapping[str, np.ndarray], eps: float, per: int) -> np.ndarray:
    """The MLP branch of x (N, H, W, C) with checked parameters ``p`` (the official sub-keys, checkpoint
    layout, x's dtype), ``per`` = :func:`mlp_groups` images per task (> 0)."""
    c = x.shape[-1]
    d, k = p["pos.weight"].shape[0], p["pos.weight"].shape[-1]
    out = np.empty_like(x)
    _mlp_groups(x, p["norm.weight"], p["norm.bias"], eps,
                np.ascontiguousarray(p["fc1.weight"].reshape(d, c).T), p["fc1.bias"],
                np.ascontiguousarray(p["pos.weight"].reshape(d, k, k).transpose(1, 2, 0)), p["pos.bias"],
                np.ascontiguousarray(p["fc2.weight"].reshape(c, d).T), p["fc2.bias"], out, per)  # fmt: skip
    return out
