"""Depthwise convolution in channels-last (NHWC) layout, Numba kernels: the fast twin of ``ops.conv2d``
with ``groups = C``, stride 1.

Why NHWC: the channel axis is innermost, so every kernel tap is a contiguous multiply-add over C channels that
vectorises whatever the image size (Conv2Former's maps at 32x32 input are 8x8 down to 1x1: a loop along W
would have 8 lanes at most).

Two forms of each kernel, chosen by the map width (:func:`correlate`, :func:`weight_grad_partials`):
register-blocked kernels compiled per kernel size for maps at least WIDE pixels wide, and row kernels for
narrower ones, which apply one tap at a time to the whole run of output pixels whose source pixel is inside
the image (one long vectorisable loop; taps on the padding are never visited: at 2x2 with k = 11 only 9 of the
121 taps touch the image). Both correlations add the same products in the same order (the blocked kernel also
adds some exact zeros from the padding, which change no sum but the sign of a zero result): their results are
the same bits. The two weight gradients sum in different (fixed) orders (tests/kernels/test_depthwise_kernels.py).

    forward   out[n, y, x, c] = b[c] + sum_{i,j} w[i, j, c] * x[n, y + i - p, x + j - p, c]
    input     dx[n, y, x, c]  = sum_{i,j} w[i, j, c] * dout[n, y - i + p, x - j + p, c]   (the same loop, flipped w)
    weight    dw[i, j, c]     = sum_{n,y,x} dout[n, y, x, c] * x[n, y + i - p, x + j - p, c]

The weight gradient is summed per fixed block of images into its own partial, then the partials are added in
block order: the result is bitwise the same on every run and for any thread count.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from numba import njit, prange

from .channels import channel_sums
from .pool import parallel_kernel

# fastmath: only 'contract' (fused multiply-add); no reassociation, so every sum has a fixed order.
_FLAGS = {"contract"}
WEIGHT_GRAD_BLOCKS = 16  # images are split into this many fixed blocks for the weight gradient
# Register blocking: XB output pixels x JB kernel taps per pass. The loops over the block are fixed-length, so LLVM
# unrolls them and vectorises the channel loop inside: one load and one store of each of the XB accumulators per
# JB taps, and each source pixel loaded once for the XB outputs that read it (19 loads/stores per 16 vector FMAs,
# against 4 per FMA for a tap at a time). That pays where the vector units are wide (AVX-512) and the maps wide
# enough to fill the blocks; WIDE below says where the row kernels win instead.
XB, JB = 4, 4
# Maps at least this wide take the register-blocked kernels, narrower ones the row kernels. Measured at 1 thread
# on an AVX2-only Zen 3, where LLVM leaves most of the blocked kernels' short channel loops scalar: the row kernels
# were 1.3-2.0x (forward) and 1.9-3.6x (weight gradient) faster on 14-32 wide maps at k = 7, 1.7-2.6x at 64 wide,
# level at k = 11 on 56 wide maps. The blocked kernels keep the wide (ImageNet) maps all the same: on an AVX-512
# machine they were measured at 40-51 GFLOP/s there, and the row kernels have not been measured on one
# (docs/performance.md).
WIDE = 48
ROW_TASKS = 64  # the forward's output rows are split into this many parallel tasks (any split gives the same bits)


@njit(fastmath=_FLAGS, cache=True)
def _pad_row(row: np.ndarray, s: np.ndarray, offset: int) -> None:  # pragma: no cover - jit
    """s[offset + x] = row[x] where it fits; the rest of s keeps its zeros (the padding)."""
    for x in range(max(0, -offset), min(row.shape[0], s.shape[0] - offset)):
        sx, rx = s[x + offset], row[x]
        for ch in range(rx.shape[0]):
            sx[ch] = rx[ch]


@njit(fastmath=_FLAGS, cache=True, inline="always")
def _taps_into_block(
    o: np.ndarray, s: np.ndarray, wi: np.ndarray, x: int, j0: int, nj: int
) -> None:  # pragma: no cover
    """o[x + q] += sum over jj < nj of wi[j0 + jj] * s[x + q + j0 + jj], for the XB = 4 outputs q, taps in order.

    Inlined where it is called with nj a compile-time constant, so the tap loop unrolls and the 4 accumulators
    stay in registers."""
    for ch in range(o.shape[1]):
        a0, a1, a2, a3 = o[x, ch], o[x + 1, ch], o[x + 2, ch], o[x + 3, ch]
        for jj in range(nj):
            j = j0 + jj
            wj = wi[j, ch]
            a0 += wj * s[x + j, ch]
            a1 += wj * s[x + j + 1, ch]
            a2 += wj * s[x + j + 2, ch]
            a3 += wj * s[x + j + 3, ch]
        o[x, ch], o[x + 1, ch], o[x + 2, ch], o[x + 3, ch] = a0, a1, a2, a3


@njit(fastmath=_FLAGS, cache=True, inline="always")
def _taps_from_block(
    ai: np.ndarray, d: np.ndarray, s: np.ndarray, x: int, j0: int, nj: int
) -> None:  # pragma: no cover
    """ai[j0 + jj] += sum over the XB = 4 pixels q of d[x + q] * s[x + q + j0 + jj], for jj < nj (q in order)."""
    for ch in range(d.shape[1]):
        e0, e1, e2, e3 = d[x, ch], d[x + 1, ch], d[x + 2, ch], d[x + 3, ch]
        for jj in range(nj):
            j = j0 + jj
            a = ai[j, ch]
            a += e0 * s[x + j, ch]
            a += e1 * s[x + j + 1, ch]
            a += e2 * s[x + j + 2, ch]
            a += e3 * s[x + j + 3, ch]
            ai[j, ch] = a


def _make_correlate(k: int) -> Callable[..., None]:
    """The kernel below for one kernel size k: a compile-time constant, so LLVM unrolls the tap blocks and keeps
    the accumulators in registers (1.6-2.9x a kernel with k as an argument). Each k compiles once (cached)."""
    k_main, k_rest = k - k % JB, k % JB

    @parallel_kernel(fastmath=_FLAGS)
    def correlate_k(src: np.ndarray, w: np.ndarray, out: np.ndarray, offset: int) -> None:  # pragma: no cover
        """out[n, y, x, :] += sum_{i,j} w[i, j, :] * src[n, y + i - offset, x + j - offset, :] (zero outside src).

        Output rows in ROW_TASKS parallel tasks. Each source row an output row reads is first copied into a
        zero-padded scratch row s, so s[x + j] is the tap (i, j) of output x with no bounds tests; the taps are then
        applied in (i, j) order, which is also the order of the sums (the same result, bit for bit, as one tap at a
        time). On small maps a block of taps that reads only padding for all XB outputs is skipped.
        """
        n_img, hs, ws, c = src.shape
        _, ho, wo, _ = out.shape
        rows = n_img * ho
        tasks = min(rows, ROW_TASKS)
        for task in prange(tasks):
            s = np.zeros((wo + k - 1 + XB, c), dtype=src.dtype)  # one scratch row per task, not per row
            for t in range(task * rows // tasks, (task + 1) * rows // tasks):
                n = t // ho
                y = t - n * ho
                o = out[n, y]
                for i in range(max(0, offset - y), min(k, hs + offset - y)):
                    _pad_row(src[n, y + i - offset], s, offset)
                    wi = w[i]
                    x = 0
                    while x + XB <= wo:
                        for jb in range(0, k_main, JB):
                            if x + jb + XB + JB - 2 < offset or x + jb >= offset + ws:
                                continue  # every tap of the block reads padding
                            _taps_into_block(o, s, wi, x, jb, JB)
                        _taps_into_block(o, s, wi, x, k_main, k_rest)  # the last k % JB taps
                        x += XB
                    for xr in range(x, wo):  # the last wo % XB outputs
                        ox = o[xr]
                        for j in range(k):
                            wj, sx = wi[j], s[xr + j]
                            for ch in range(c):
                                ox[ch] += wj[ch] * sx[ch]
                    # the next row's copy overwrites only the image columns: the padding columns stay zero

    return correlate_k


def _make_weight_grad(k: int) -> Callable[..., np.ndarray]:
    """The kernel below for one kernel size k (as :func:`_make_correlate`)."""
    k_main, k_rest = k - k % JB, k % JB

    @parallel_kernel(fastmath=_FLAGS)
    def weight_grad_k(dout: np.ndarray, src: np.ndarray, offset: int, blocks: int) -> np.ndarray:  # pragma: no cover
        """partials[b, i, j, c] = sum over the images of block b of dout[n, y, x, c] * src[n, y+i-off, x+j-off, c].

        The same scratch rows and XB x JB blocking as ``correlate``; each partial sums in (n, y, x) order.
        """
        n_img, ho, wo, c = dout.shape
        _, hs, ws, _ = src.shape
        x_main = wo - wo % XB
        partials = np.zeros((blocks, k, k, c), dtype=dout.dtype)
        for b in prange(blocks):
            acc = partials[b]
            s = np.zeros((wo + k - 1 + XB, c), dtype=src.dtype)
            for n in range(b * n_img // blocks, (b + 1) * n_img // blocks):
                for y in range(ho):
                    d = dout[n, y]
                    for i in range(max(0, offset - y), min(k, hs + offset - y)):
                        _pad_row(src[n, y + i - offset], s, offset)
                        ai = acc[i]
                        # Tap blocks outside, pixels inside: the other way round was 1.4x faster at k <= 11 but
                        # 3x slower from k = 13 (LLVM unrolls the tap blocks). dw[i, j] sums over x in order.
                        for jb in range(0, k_main, JB):
                            for x in range(0, x_main, XB):
                                if x + jb + XB + JB - 2 < offset or x + jb >= offset + ws:
                                    continue  # every tap of the block reads padding
                                _taps_from_block(ai, d, s, x, jb, JB)
                        for x in range(0, x_main, XB):
                            _taps_from_block(ai, d, s, x, k_main, k_rest)  # the last k % JB taps
                        for xr in range(x_main, wo):
                            dx_ = d[xr]
                            for j in range(k):
                                aj, sx = ai[j], s[xr + j]
                                for ch in range(c):
                                    aj[ch] += dx_[ch] * sx[ch]
        return partials

    return weight_grad_k


@njit(fastmath=_FLAGS, cache=True)
def _tile_taps(w: np.ndarray, wo: int) -> np.ndarray:  # pragma: no cover - jit
    """(k, k, wo * C): each tap's C weights repeated for wo pixels, so a row of taps is one flat multiply."""
    k, _, c = w.shape
    wt = np.empty((k, k, wo * c), dtype=w.dtype)
    for i in range(k):
        for j in range(k):
            for x in range(wo):
                wt[i, j, x * c : (x + 1) * c] = w[i, j]
    return wt


@njit(cache=True, inline="always")
def _tap_run(j: int, offset: int, wo: int, ws: int, c: int) -> tuple[int, int, int]:  # pragma: no cover - jit
    """(lo, hi, shift) for column tap j: the outputs x whose source column x + j - offset is inside the row are
    the flat (pixel x channel) range [lo, hi), and their source values start at lo + shift."""
    x0, x1 = max(0, offset - j), min(wo, ws + offset - j)
    return x0 * c, max(x0, x1) * c, (j - offset) * c


@njit(fastmath=_FLAGS, cache=True, inline="always")
def _multiply_add(acc: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:  # pragma: no cover - jit
    """acc += a * b over three 1-D arrays of one length: the row kernels' one vectorised loop."""
    for q in range(acc.shape[0]):
        acc[q] += a[q] * b[q]


@parallel_kernel(fastmath=_FLAGS)
def _correlate_rows(src: np.ndarray, w: np.ndarray, out: np.ndarray, offset: int) -> None:  # pragma: no cover - jit
    """``correlate`` a tap at a time over whole rows: for tap (i, j), the output pixels whose source pixel is
    inside the image form one contiguous run of (pixels x C) values, updated in one flat loop against the tiled
    weights. Taps on padding are never visited, and each output adds its taps in (i, j) order, as the blocked
    kernel does: the same bits. (One long loop vectorises on AVX2; the blocked kernel's per-pixel channel loops
    mostly stay scalar there.)"""
    n_img, hs, ws, c = src.shape
    _, ho, wo, _ = out.shape
    k = w.shape[0]
    wt = _tile_taps(w, wo)
    for t in prange(n_img * ho):
        n = t // ho
        y = t - n * ho
        o = out[n, y].reshape(wo * c)
        for i in range(max(0, offset - y), min(k, hs + offset - y)):
            row = src[n, y + i - offset].reshape(ws * c)
            for j in range(k):
                lo, hi, shift = _tap_run(j, offset, wo, ws, c)
                if hi == lo:
                    continue
                # slices, not shifted indices: Numba's index wraparound on q + shift would keep LLVM from
                # vectorising
                _multiply_add(o[lo:hi], wt[i, j, lo:hi], row[lo + shift : hi + shift])


@parallel_kernel(fastmath=_FLAGS)
def _weight_grad_rows(
    dout: np.ndarray, src: np.ndarray, k: int, offset: int, blocks: int
) -> np.ndarray:  # pragma: no cover
    """``weight_grad_partials`` a tap at a time over whole rows (as :func:`_correlate_rows`): each block of images
    sums its products per (tap, pixel column, channel) over (n, y), then over the columns in order."""
    n_img, ho, wo, c = dout.shape
    _, hs, ws, _ = src.shape
    partials = np.zeros((blocks, k, k, c), dtype=dout.dtype)
    for b in prange(blocks):
        lanes = np.zeros((k, k, wo * c), dtype=dout.dtype)
        for n in range(b * n_img // blocks, (b + 1) * n_img // blocks):
            for y in range(ho):
                d = dout[n, y].reshape(wo * c)
                for i in range(max(0, offset - y), min(k, hs + offset - y)):
                    row = src[n, y + i - offset].reshape(ws * c)
                    for j in range(k):
                        lo, hi, shift = _tap_run(j, offset, wo, ws, c)
                        if hi == lo:
                            continue
                        _multiply_add(lanes[i, j, lo:hi], d[lo:hi], row[lo + shift : hi + shift])
        acc = partials[b]
        for i in range(k):
            for j in range(k):
                for x in range(wo):
                    for ch in range(c):
                        acc[i, j, ch] += lanes[i, j, x * c + ch]
    return partials


@functools.cache
def _kernels(k: int) -> tuple[Callable[..., None], Callable[..., np.ndarray]]:
    return _make_correlate(k), _make_weight_grad(k)


def correlate(src: np.ndarray, w: np.ndarray, out: np.ndarray, offset: int) -> None:
    """out[n, y, x, :] += sum_{i,j} w[i, j, :] * src[n, y + i - offset, x + j - offset, :] (zero outside src);
    src (N, Hs, Ws, C), w (k, k, C), out (N, Ho, Wo, C)."""
    if out.shape[2] >= WIDE:
        _kernels(w.shape[0])[0](src, w, out, offset)
    else:
        _correlate_rows(src, w, out, offset)


def weight_grad_partials(dout: np.ndarray, src: np.ndarray, k: int, offset: int, blocks: int) -> np.ndarray:
    """(blocks, k, k, C): partials[b, i, j, c] = sum over the images of block b of
    dout[n, y, x, c] * src[n, y + i - offset, x + j - offset, c]."""
    if dout.shape[2] >= WIDE:
        return _kernels(k)[1](dout, src, offset, blocks)
    return _weight_grad_rows(dout, src, k, offset, blocks)


def depthwise_forward(x: np.ndarray, w_kkc: np.ndarray, b: np.ndarray | None, padding: int) -> np.ndarray:
    """x (N, H, W, C), w (k, k, C), b (C,) -> (N, H + 2p - k + 1, W + 2p - k + 1, C)."""
    n, h, wd, c = x.shape
    k = w_kkc.shape[0]
    out = np.empty((n, h + 2 * padding - k + 1, wd + 2 * padding - k + 1, c), dtype=x.dtype)
    out[...] = b if b is not None else 0
    correlate(x, w_kkc, out, padding)
    return out


def depthwise_backward(
    dout: np.ndarray,
    x: np.ndarray,
    w_kkc: np.ndarray,
    padding: int,
    with_bias: bool,
    dx_base: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(dx (N, H, W, C), dw (k, k, C), db (C,) or None) of ``depthwise_forward``.

    With ``dx_base`` (x's shape and dtype) dx is ``dx_base`` + the convolution's input gradient: a residual's
    identity path added in the same pass (the correlation accumulates into dx; it starts as a copy, not zeros).
    """
    k = w_kkc.shape[0]
    if dx_base is not None and (dx_base.shape != x.shape or dx_base.dtype != x.dtype):
        raise ValueError(f"depthwise_backward: dx_base must be {x.shape} {x.dtype} like x, got "
                         f"{dx_base.shape} {dx_base.dtype}")  # fmt: skip
    dx = np.zeros_like(x) if dx_base is None else np.array(dx_base, order="C", copy=True)
    correlate(dout, np.ascontiguousarray(w_kkc[::-1, ::-1]), dx, k - 1 - padding)
    blocks = min(WEIGHT_GRAD_BLOCKS, x.shape[0])
    dw = weight_grad_partials(dout, x, k, padding, blocks).sum(axis=0)  # fixed block order: deterministic
    db = channel_sums(dout.reshape(-1, dout.shape[-1])) if with_bias else None
    return dx, dw, db
