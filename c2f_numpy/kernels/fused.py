"""A block's two branches at inference, each as one parallel pass over groups of images (the fast copy's
``mlp_inference`` and ``convmod_inference``).

The layer-by-layer path (:func:`c2f_numpy.kernels.nhwc.mlp_forward`) runs LayerNorm, fc1, bias + GELU, the 3x3
positional conv, GELU + residual and fc2 each over the whole batch: the hidden tensor (4C channels; 12.8 MB for
micro's first stage at batch 128) goes to memory and back five times. Here each task takes a few whole images
and runs the branch start to end on them, so the hidden values stay in the core's caches:

    per group of g images (rows = g*H*W pixels):
        n   = LN(x)                     rows x C        elementwise.layer_norm_row
        h   = GELU(n @ W1^T + b1)       rows x 4C       one BLAS call, GELU in place (gelu_scalar)
        z   = h + GELU(DW3x3(h) + bp)   rows x 4C       depthwise.correlate_row per image row, then in place
        out = z @ W2^T + b2             rows x C        one BLAS call

ConvMod the same way: n = LN(x); a = DWk(GELU(n @ Wa^T + ba)); out = (a * (n @ Wv^T + bv)) @ Wp^T + bp, three
C-wide buffers per group.

The math is the layer-by-layer kernels' own (layer_norm_row, gelu_scalar, correlate_row), one implementation;
only the order of work differs (and BLAS's blocking, so the two agree to rounding, not bitwise). Nothing is kept for a
backward: training uses the layer-by-layer path, whose caches the backward reads.

When it pays (measured in docs/performance.md, "Round five"): a group must give BLAS enough rows (GROUP_ROWS),
and the batch enough groups for the threads (MIN_GROUPS); otherwise :func:`images_per_group` says no and the caller
takes the layer-by-layer path. Both depend on the shape only, so a given input always takes the same path and
the result is the same at any thread count.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
from numba import njit, prange
from numba.core.errors import NumbaIRAssumptionWarning

from .depthwise import _tile_taps, correlate_row
from .elementwise import gelu_scalar, layer_norm_row
from .pool import parallel_kernel

# At least this many pixel rows per group: micro's 7x7 maps at batch 128 ran 1.0x the layer-by-layer path with
# one image per group (49 rows: BLAS re-packs W1 for too little work), 1.2x with 8 (392 rows); 14x14 maps were
# 3.4-3.6x faster with 1-8 images per group (AMD Zen 3, 2 threads).
GROUP_ROWS = 392
# At least this many groups: fewer leave threads idle (8 images at 14x14, 4 groups, ran 0.9x; a single image is
# one group). A constant, not the thread count, so the path chosen does not depend on the machine.
MIN_GROUPS = 8


def images_per_group(n: int, h: int, w: int) -> int:
    """Images per group for an (n, h, w, C) input, or 0 when the fused pass would not pay (see above)."""
    per = max(1, -(-GROUP_ROWS // (h * w)))
    return per if -(-n // per) >= MIN_GROUPS else 0


@njit(inline="always")
def _group_rows(x: np.ndarray, t: int, per: int) -> tuple[int, int, np.ndarray, np.ndarray]:  # pragma: no cover
    """Task t's images: (first image, image count, x's rows (g*H*W, C), LayerNorm of those rows)."""
    n_img, hh, ww, c = x.shape
    n0 = t * per
    g = min(n_img, n0 + per) - n0
    rows = g * hh * ww
    return n0, g, x[n0 : n0 + g].reshape(rows, c), np.empty((rows, c), x.dtype)


@njit(inline="always")
def _add_bias(o: np.ndarray, b: np.ndarray) -> None:  # pragma: no cover
    """o (rows, C) += b (C,) on every row: the epilogue after a 1x1 conv's GEMM."""
    for r in range(o.shape[0]):
        orow = o[r]
        for ch in range(o.shape[1]):
            orow[ch] += b[ch]


@njit(inline="always")
def _layer_norm_group(xs: np.ndarray, ln_w: np.ndarray, ln_b: np.ndarray, eps: float,
                      nrm: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """nrm = LN(xs) row by row (xhat is not kept: written over by y)."""
    for r in range(xs.shape[0]):
        layer_norm_row(xs[r], ln_w, ln_b, eps, nrm[r], nrm[r])


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
        n0, g, xs, nrm = _group_rows(x, t, per)
        rows = g * pix
        _layer_norm_group(xs, ln_w, ln_b, eps, nrm)
        h = np.empty((rows, d), x.dtype)
        np.dot(nrm, w1t, h)
        for r in range(rows):
            hr = h[r]
            for ch in range(d):
                hr[ch] = gelu_scalar(hr[ch] + b1[ch])
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
        _add_bias(o, b2)


def _launch(kernel: Callable[..., None], *args: object) -> None:
    """Run a group kernel. A call that compiles it makes Numba's internal SSA check warn about the variables of
    gelu_scalar, inlined several times into one loop body (NumbaIRAssumptionWarning, "please report": a pedantic
    check of Numba's own, not an error in the result, which tests/kernels/test_fused.py checks). The serial-helper
    form that avoids it ran 0.8x the layered path, so the warning is silenced for the calls that may compile;
    the others skip ``catch_warnings``, which swaps the process-wide filter list and is not thread-safe."""
    dispatcher = kernel.kernel  # type: ignore[attr-defined]
    if tuple(dispatcher.typeof_pyval(a) for a in args) in dispatcher.overloads:
        kernel(*args)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaIRAssumptionWarning)
        kernel(*args)


def mlp_inference(x: np.ndarray, p: Mapping[str, np.ndarray], eps: float, per: int) -> np.ndarray:
    """The MLP branch of x (N, H, W, C) with checked parameters ``p`` (the official sub-keys, checkpoint
    layout, x's dtype), ``per`` = :func:`images_per_group` images per task (> 0)."""
    c = x.shape[-1]
    d, k = p["pos.weight"].shape[0], p["pos.weight"].shape[-1]
    out = np.empty_like(x)
    _launch(_mlp_groups, x, p["norm.weight"], p["norm.bias"], eps,
                np.ascontiguousarray(p["fc1.weight"].reshape(d, c).T), p["fc1.bias"],
                np.ascontiguousarray(p["pos.weight"].reshape(d, k, k).transpose(1, 2, 0)), p["pos.bias"],
                np.ascontiguousarray(p["fc2.weight"].reshape(c, d).T), p["fc2.bias"], out, per)  # fmt: skip
    return out


@parallel_kernel(fastmath={"contract"})
def _convmod_groups(x: np.ndarray, ln_w: np.ndarray, ln_b: np.ndarray, eps: float, wat: np.ndarray, ba: np.ndarray,
                    wdw: np.ndarray, bdw: np.ndarray, wvt: np.ndarray, bv: np.ndarray, wpt: np.ndarray,
                    bp: np.ndarray, out: np.ndarray, per: int) -> None:  # pragma: no cover - jit  # fmt: skip
    """out = ConvMod(x) for x, out (N, H, W, C); wat, wvt, wpt (C, C) (transposed 1x1 weights), wdw (k, k, C)."""
    n_img, hh, ww, c = x.shape
    pix = hh * ww
    offset = wdw.shape[0] // 2
    wt = _tile_taps(wdw, ww)
    bias_row = _tile_taps(bdw.reshape(1, 1, c), ww)[0, 0]
    for t in prange((n_img + per - 1) // per):
        n0, g, xs, nrm = _group_rows(x, t, per)
        rows = g * pix
        _layer_norm_group(xs, ln_w, ln_b, eps, nrm)
        gv = np.empty((rows, c), x.dtype)  # GELU(att.0(n)), then v(n)
        np.dot(nrm, wat, gv)
        for r in range(rows):
            gr = gv[r]
            for ch in range(c):
                gr[ch] = gelu_scalar(gr[ch] + ba[ch])
        g4 = gv.reshape(g, hh, ww, c)
        a = np.empty((g, hh, ww, c), x.dtype)
        for m in range(g):
            for y in range(hh):
                correlate_row(g4[m], wt, a[m, y].reshape(ww * c), bias_row, y, offset)
        np.dot(nrm, wvt, gv)
        a2 = a.reshape(rows, c)
        for r in range(rows):
            ar, vr = a2[r], gv[r]
            for ch in range(c):
                ar[ch] *= vr[ch] + bv[ch]  # the modulation a * v, v's bias added here
        o = out[n0 : n0 + g].reshape(rows, c)
        np.dot(a2, wpt, o)
        _add_bias(o, bp)


def convmod_inference(x: np.ndarray, p: Mapping[str, np.ndarray], eps: float, per: int) -> np.ndarray:
    """ConvMod of x (N, H, W, C) with checked parameters ``p`` (the official sub-keys, checkpoint layout, x's
    dtype), ``per`` = :func:`images_per_group` images per task (> 0)."""
    c = x.shape[-1]
    k = p["att.2.weight"].shape[-1]

    def t(w: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(w.reshape(c, c).T)

    out = np.empty_like(x)
    _launch(_convmod_groups, x, p["norm.weight"], p["norm.bias"], eps, t(p["att.0.weight"]), p["att.0.bias"],
                    np.ascontiguousarray(p["att.2.weight"].reshape(c, k, k).transpose(1, 2, 0)), p["att.2.bias"],
                    t(p["v.weight"]), p["v.bias"], t(p["proj.weight"]), p["proj.bias"], out, per)  # fmt: skip
    return out
