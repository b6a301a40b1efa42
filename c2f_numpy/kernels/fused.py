"""A block's branches as one parallel pass over groups of images: both branches at inference (the fast copy's
``mlp_inference`` and ``convmod_inference``) and both backwards in training (``mlp_backward``,
``convmod_backward``).

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

The MLP backward reads the layer-by-layer forward's caches (the training forward stays layered: its caches are
the activations the backward needs) and runs the chain rule per group, two 4C-wide buffers per group:

        dz  = dout @ W2                 dW2 += dout^T z, db2 += sum dout
        dp  = GELU'(p) * dz             p = DW3x3(h) + bp, cached
        dh  = dz + DW3x3^T(dp)          dWp += the taps' products (depthwise.weight_grad_row), dbp += sum dp
        du  = GELU'(u) * dh             u = n @ W1^T + b1;  dW1 += du^T n, db1 += sum du
        dn  = du @ W1, dx = LN^T(dn)    dln_w += sum dn * xhat, dln_b += sum dn

ConvMod's backward the same way: dm = dout @ Wp; da = dm * v, dv = dm * a; dn = dv @ Wv + du @ Wa with
dg = DWk^T(da) and du = GELU'(u) * dg; C-wide buffers only. Each group writes its own partial of every parameter
gradient; the partials are added in group order.

The math is the layer-by-layer kernels' own (layer_norm_row, layer_norm_row_backward, gelu_scalar,
gelu_grad_scalar, correlate_row, weight_grad_row), one implementation; only the order of work differs (and
BLAS's blocking and the order of the gradient sums, so the two agree to rounding, not bitwise).

When it pays (measured in docs/performance.md, "Round five" and "Round six"): a group must give BLAS enough rows
(GROUP_ROWS), and the batch enough groups for the threads (MIN_GROUPS); otherwise :func:`images_per_group` says no
and the caller takes the layer-by-layer path. Both depend on the shape only, so a given input always takes the
same path and the result is the same at any thread count.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import numpy as np
from numba import njit, prange
from numba.core.errors import NumbaIRAssumptionWarning

from .blas import gemm
from .depthwise import _tile_taps, correlate_row, reduce_lanes, weight_grad_row
from .elementwise import gelu_grad_scalar, gelu_scalar, layer_norm_row, layer_norm_row_backward
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
def _bounds(n_img: int, pix: int, t: int, per: int) -> tuple[int, int, int, int]:  # pragma: no cover
    """Task t's (first image, image count, pixel rows, first pixel row)."""
    n0 = t * per
    g = min(n_img, n0 + per) - n0
    return n0, g, g * pix, n0 * pix


@njit(inline="always")
def _group_rows(x: np.ndarray, t: int, per: int) -> tuple[int, int, np.ndarray, np.ndarray]:  # pragma: no cover
    """Task t's images: (first image, image count, x's rows (g*H*W, C), a buffer for their LayerNorm)."""
    n_img, hh, ww, c = x.shape
    n0, g, rows, _ = _bounds(n_img, hh * ww, t, per)
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
        gemm(nrm, w1t, h)
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
        gemm(z.reshape(rows, d), w2t, o)
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
        gemm(nrm, wat, gv)
        for r in range(rows):
            gr = gv[r]
            for ch in range(c):
                gr[ch] = gelu_scalar(gr[ch] + ba[ch])
        g4 = gv.reshape(g, hh, ww, c)
        a = np.empty((g, hh, ww, c), x.dtype)
        for m in range(g):
            for y in range(hh):
                correlate_row(g4[m], wt, a[m, y].reshape(ww * c), bias_row, y, offset)
        gemm(nrm, wvt, gv)
        a2 = a.reshape(rows, c)
        for r in range(rows):
            ar, vr = a2[r], gv[r]
            for ch in range(c):
                ar[ch] *= vr[ch] + bv[ch]  # the modulation a * v, v's bias added here
        o = out[n0 : n0 + g].reshape(rows, c)
        gemm(a2, wpt, o)
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


@njit(inline="always")
def _column_sums(a: np.ndarray, acc: np.ndarray) -> None:  # pragma: no cover
    """acc (C,) += the column sums of a (rows, C), in row order (acc float64, as channels.channel_sums)."""
    for r in range(a.shape[0]):
        ar = a[r]
        for ch in range(a.shape[1]):
            acc[ch] += ar[ch]


@njit(inline="always")
def _depthwise_backward_group(d4: np.ndarray, src4: np.ndarray, wt: np.ndarray, out4: np.ndarray, add: bool,
                              dw: np.ndarray, db: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """A same-size depthwise conv's backward over one group: out4 (g, H, W, C) = (out4 if ``add`` else 0) +
    DW^T(d4), with wt the flipped weights tiled (:func:`_tile_taps`); dw (k, k, C) += the taps' products of d4
    and the forward's input src4, db += the sums of d4 (float64)."""
    g, hh, ww, c = d4.shape
    k = wt.shape[0]
    offset = k // 2
    lanes = np.zeros((k, k, ww * c), d4.dtype)
    zero_row = np.zeros(ww * c, d4.dtype)
    for m in range(g):
        for y in range(hh):
            row = out4[m, y].reshape(ww * c)
            correlate_row(d4[m], wt, row, row if add else zero_row, y, k - 1 - offset)
            weight_grad_row(lanes, d4[m, y].reshape(ww * c), src4[m], y, offset)
    reduce_lanes(lanes, dw)
    _column_sums(d4.reshape(g * hh * ww, c), db)


@njit(inline="always")
def _gelu_conv1x1_backward_group(du: np.ndarray, upre: np.ndarray, b: np.ndarray, src: np.ndarray, dw: np.ndarray,
                                 db: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """The backward of GELU(src @ W^T + b) over one group, given dL/dout in du (rows, D): du becomes
    dL/du = du * GELU'(upre + b) in place (upre = src @ W^T, cached); dw (D, C) = du^T src, db += the sums of du."""
    for r in range(du.shape[0]):
        dr, ur = du[r], upre[r]
        for ch in range(du.shape[1]):
            dr[ch] *= gelu_grad_scalar(ur[ch] + b[ch])
    gemm(du.T, src, dw)
    _column_sums(du, db)


@njit(inline="always")
def _layer_norm_backward_group(dn: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, ln_w: np.ndarray,
                               dx: np.ndarray, lw: np.ndarray, lb: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """dx (rows, C) = LN^T(dn) row by row; lw += sum dn * xhat, lb += sum dn (float64)."""
    for r in range(dn.shape[0]):
        dr, xr = dn[r], xhat[r]
        layer_norm_row_backward(dr, xr, rstd[r], ln_w, dx[r])
        for ch in range(dn.shape[1]):
            lw[ch] += dr[ch] * xr[ch]
            lb[ch] += dr[ch]


@parallel_kernel(fastmath={"contract"})
def _mlp_backward_groups(dout: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, ln_w: np.ndarray, nrm: np.ndarray,
                         w1: np.ndarray, h1pre: np.ndarray, b1: np.ndarray, h1: np.ndarray, wflip: np.ndarray,
                         ppre: np.ndarray, z: np.ndarray, w2: np.ndarray, per: int, dx: np.ndarray,
                         dw1: np.ndarray, db1: np.ndarray, dwpos: np.ndarray, dbpos: np.ndarray, dw2: np.ndarray,
                         db2: np.ndarray, dln_w: np.ndarray,
                         dln_b: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """The MLP branch's backward for dout, dx (N, H, W, C) from the layer-by-layer forward's caches: xhat (M, C),
    rstd (M,), nrm = LN(x), h1pre = nrm @ W1^T (no bias), h1 = GELU(h1pre + b1), ppre = DW(h1) + bp, z = fc2's
    input (all (N, H, W, .)); w1 (D, C), w2 (C, D), wflip (k, k, D) the positional weight flipped. Each task
    writes its group's rows of dx and its own partial of every parameter gradient (leading axis: the group)."""
    n_img, hh, ww, c = dout.shape
    d = w1.shape[0]
    wt = _tile_taps(wflip, ww)
    for t in prange((n_img + per - 1) // per):
        n0, g, rows, r0 = _bounds(n_img, hh * ww, t, per)
        do = dout[n0 : n0 + g].reshape(rows, c)
        zg = z[n0 : n0 + g].reshape(rows, d)
        dz = np.empty((rows, d), dout.dtype)  # dL/dz, then dL/dh1, then dL/dh1pre, in place
        gemm(do, w2, dz)
        gemm(do.T, zg, dw2[t])
        _column_sums(do, db2[t])
        dp = np.empty((rows, d), dout.dtype)  # dL/dppre
        dpf, dzf, pf = dp.reshape(rows * d), dz.reshape(rows * d), ppre[n0 : n0 + g].reshape(rows * d)
        for q in range(rows * d):
            dpf[q] = dzf[q] * gelu_grad_scalar(pf[q])
        # dh1 = dz + DW^T(dp), in place
        _depthwise_backward_group(dp.reshape(g, hh, ww, d), h1[n0 : n0 + g], wt, dz.reshape(g, hh, ww, d), True,
                                  dwpos[t], dbpos[t])  # fmt: skip
        _gelu_conv1x1_backward_group(dz, h1pre[n0 : n0 + g].reshape(rows, d), b1, nrm[n0 : n0 + g].reshape(rows, c),
                                     dw1[t], db1[t])  # fmt: skip
        dn = np.empty((rows, c), dout.dtype)
        gemm(dz, w1, dn)
        _layer_norm_backward_group(dn, xhat[r0 : r0 + rows], rstd[r0 : r0 + rows], ln_w,
                                   dx[n0 : n0 + g].reshape(rows, c), dln_w[t], dln_b[t])  # fmt: skip


def mlp_backward(dout: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, p: Mapping[str, np.ndarray],
                 acts: Mapping[str, np.ndarray], per: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """(dx, grads) of the MLP branch for dout (N, H, W, C), from the layer-by-layer forward's LayerNorm cache
    (xhat, rstd) and activations ``acts`` (norm, h1pre, h1, ppre, z; see :func:`_mlp_backward_groups`), with the
    forward's parameters ``p`` (checkpoint layout). Gradients in the checkpoint layout, each summed over the
    groups' partials in group order (one order at any thread count)."""
    n_img, _, _, c = dout.shape
    w1, w2, wpos = p["fc1.weight"], p["fc2.weight"], p["pos.weight"]
    d, k = w1.shape[0], wpos.shape[-1]
    groups = -(-n_img // per)
    dt = dout.dtype
    dx = np.empty_like(dout)
    dw1, dw2 = np.zeros((groups, d, c), dt), np.zeros((groups, c, d), dt)
    dwpos = np.zeros((groups, k, k, d), dt)
    db1, dbpos = np.zeros((groups, d)), np.zeros((groups, d))
    db2, dln_w, dln_b = np.zeros((groups, c)), np.zeros((groups, c)), np.zeros((groups, c))
    wflip = np.ascontiguousarray(wpos.reshape(d, k, k).transpose(1, 2, 0)[::-1, ::-1])
    _launch(_mlp_backward_groups, dout, xhat, rstd, p["norm.weight"], acts["norm"],
            np.ascontiguousarray(w1.reshape(d, c)), acts["h1pre"], p["fc1.bias"], acts["h1"], wflip, acts["ppre"],
            acts["z"], np.ascontiguousarray(w2.reshape(c, d)), per, dx, dw1, db1, dwpos, dbpos, dw2, db2, dln_w,
            dln_b)  # fmt: skip

    grads = {
        "norm.weight": _total(dln_w, dt), "norm.bias": _total(dln_b, dt),
        "fc1.weight": _total(dw1, dt).reshape(w1.shape), "fc1.bias": _total(db1, dt),
        "pos.weight": np.ascontiguousarray(_total(dwpos, dt).transpose(2, 0, 1))[:, None],
        "pos.bias": _total(dbpos, dt),
        "fc2.weight": _total(dw2, dt).reshape(w2.shape), "fc2.bias": _total(db2, dt),
    }  # fmt: skip
    return dx, grads


@parallel_kernel(fastmath={"contract"})
def _convmod_backward_groups(dout: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, ln_w: np.ndarray,
                             nrm: np.ndarray, wa: np.ndarray, hpre: np.ndarray, ba: np.ndarray, gact: np.ndarray,
                             wflip: np.ndarray, a_mod: np.ndarray, v_mod: np.ndarray, m_in: np.ndarray,
                             wv: np.ndarray, wp: np.ndarray, per: int, dx: np.ndarray, dwa: np.ndarray,
                             dba: np.ndarray, dwdw: np.ndarray, dbdw: np.ndarray, dwv: np.ndarray, dbv: np.ndarray,
                             dwp: np.ndarray, dbp: np.ndarray, dln_w: np.ndarray,
                             dln_b: np.ndarray) -> None:  # pragma: no cover  # fmt: skip
    """ConvMod's backward for dout, dx (N, H, W, C) from the layered forward's caches: xhat (M, C), rstd (M,),
    nrm = LN(x), hpre = nrm @ Wa^T (no bias), gact = GELU(hpre + ba), a = DWk(gact) + b, v = nrm @ Wv^T + bv,
    m = a * v (all (N, H, W, C)); wa, wv, wp (C, C) the 1x1 weights, wflip (k, k, C) the depthwise weight
    flipped. Each task writes its group's rows of dx and its own partial of every parameter gradient."""
    n_img, hh, ww, c = dout.shape
    wt = _tile_taps(wflip, ww)
    for t in prange((n_img + per - 1) // per):
        n0, g, rows, r0 = _bounds(n_img, hh * ww, t, per)
        do = dout[n0 : n0 + g].reshape(rows, c)
        ng = nrm[n0 : n0 + g].reshape(rows, c)
        dm = np.empty((rows, c), dout.dtype)  # dL/dm, then dL/dv in place
        gemm(do, wp, dm)
        gemm(do.T, m_in[n0 : n0 + g].reshape(rows, c), dwp[t])
        _column_sums(do, dbp[t])
        da = np.empty((rows, c), dout.dtype)
        dmf, daf = dm.reshape(rows * c), da.reshape(rows * c)
        af, vf = a_mod[n0 : n0 + g].reshape(rows * c), v_mod[n0 : n0 + g].reshape(rows * c)
        for q in range(rows * c):
            e = dmf[q]
            daf[q] = e * vf[q]
            dmf[q] = e * af[q]
        gemm(dm.T, ng, dwv[t])
        _column_sums(dm, dbv[t])
        dn = np.empty((rows, c), dout.dtype)
        gemm(dm, wv, dn)  # the v branch's share of dL/dn
        dh = np.empty((rows, c), dout.dtype)  # dL/dgact, then dL/dhpre in place
        _depthwise_backward_group(da.reshape(g, hh, ww, c), gact[n0 : n0 + g], wt, dh.reshape(g, hh, ww, c), False,
                                  dwdw[t], dbdw[t])  # fmt: skip
        _gelu_conv1x1_backward_group(dh, hpre[n0 : n0 + g].reshape(rows, c), ba, ng, dwa[t], dba[t])
        dn_a = np.empty((rows, c), dout.dtype)
        gemm(dh, wa, dn_a)
        dnf, dnaf = dn.reshape(rows * c), dn_a.reshape(rows * c)
        for q in range(rows * c):
            dnf[q] += dnaf[q]  # dn_v + dn_a (the layered composition adds the same two: one rounding)
        _layer_norm_backward_group(dn, xhat[r0 : r0 + rows], rstd[r0 : r0 + rows], ln_w,
                                   dx[n0 : n0 + g].reshape(rows, c), dln_w[t], dln_b[t])  # fmt: skip


def convmod_backward(dout: np.ndarray, xhat: np.ndarray, rstd: np.ndarray, p: Mapping[str, np.ndarray],
                     acts: Mapping[str, np.ndarray], per: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # fmt: skip
    """(dx, grads) of ConvMod for dout (N, H, W, C), from the layered forward's LayerNorm cache (xhat, rstd) and
    activations ``acts`` (norm, hpre, gact, a, v, m; see :func:`_convmod_backward_groups`), with the forward's
    parameters ``p`` (checkpoint layout). Gradients summed over the groups' partials in group order."""
    n_img, _, _, c = dout.shape
    wdw = p["att.2.weight"]
    k = wdw.shape[-1]
    groups = -(-n_img // per)
    dt = dout.dtype
    dx = np.empty_like(dout)
    dwa, dwv, dwp = (np.zeros((groups, c, c), dt) for _ in range(3))
    dwdw = np.zeros((groups, k, k, c), dt)
    dba, dbdw, dbv, dbp, dln_w, dln_b = (np.zeros((groups, c)) for _ in range(6))
    wflip = np.ascontiguousarray(wdw.reshape(c, k, k).transpose(1, 2, 0)[::-1, ::-1])

    def square(key: str) -> np.ndarray:
        return np.ascontiguousarray(p[key].reshape(c, c))

    _launch(_convmod_backward_groups, dout, xhat, rstd, p["norm.weight"], acts["norm"], square("att.0.weight"),
            acts["hpre"], p["att.0.bias"], acts["gact"], wflip, acts["a"], acts["v"], acts["m"], square("v.weight"),
            square("proj.weight"), per, dx, dwa, dba, dwdw, dbdw, dwv, dbv, dwp, dbp, dln_w, dln_b)  # fmt: skip
    grads = {
        "norm.weight": _total(dln_w, dt), "norm.bias": _total(dln_b, dt),
        "att.0.weight": _total(dwa, dt).reshape(p["att.0.weight"].shape), "att.0.bias": _total(dba, dt),
        "att.2.weight": np.ascontiguousarray(_total(dwdw, dt).transpose(2, 0, 1))[:, None],
        "att.2.bias": _total(dbdw, dt),
        "v.weight": _total(dwv, dt).reshape(p["v.weight"].shape), "v.bias": _total(dbv, dt),
        "proj.weight": _total(dwp, dt).reshape(p["proj.weight"].shape), "proj.bias": _total(dbp, dt),
    }  # fmt: skip
    return dx, grads


def _total(parts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The sum of the groups' partials (leading axis) in group order, a fixed sum, cast to ``dtype``."""
    out = parts[0].copy()
    for part in parts[1:]:
        out += part
    return out.astype(dtype)
