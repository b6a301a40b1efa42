"""Depthwise convolution in channels-last (NHWC) layout, Numba kernels: the fast twin of ``ops.conv2d``
with ``groups = C``, stride 1.

Why NHWC: the channel axis is innermost, so every kernel tap is a contiguous multiply-add over C channels that
vectorises whatever the image size (Conv2Former's maps at 32x32 input are 8x8 down to 1x1: a loop along W
would have 8 lanes at most).

Two forms of each kernel, chosen by the map width (:func:`correlate`, :func:`weight_grad_partials`):
register-blocked kernels compiled per kernel size for maps at least 8 pixels wide (16 for the weight
gradient), and pixel-at-a-time kernels for narrower ones, which skip the taps that fall on the zero padding
(at 2x2 with k = 11 only 9 of the 121 taps touch the image). Both add the same products in the same order:
their results are the same bits (tests/kernels/test_depthwise_kernels.py).

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

# fastmath: only 'contract' (fused multiply-add); no reassociation, so every sum has a fixed order.
_FLAGS = {"contract"}
WEIGHT_GRAD_BLOCKS = 16  # images are split into this many fixed blocks for the weight gradient
# Register blocking: XB output pixels x JB kernel taps per pass. The loops over the block are fixed-length, so LLVM
# unrolls them and vectorises the channel loop inside: one load and one store of each of the XB accumulators per
# JB taps, and each source pixel loaded once for the XB outputs that read it (19 loads/stores per 16 vector FMAs,
# against 4 per FMA for a tap at a time). Measured at 1 thread on 28-56 wide maps: forward 1.3-3.3x the pixel
# loop at k >= 7, weight gradient 1.1-1.4x.
XB, JB = 4, 4
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

    @njit(parallel=True, fastmath=_FLAGS, cache=True)
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

    @njit(parallel=True, fastmath=_FLAGS, cache=True)
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


@njit(parallel=True, fastmath=_FLAGS, cache=True)
def _correlate_pixels(src: np.ndarray, w: np.ndarray, out: np.ndarray, offset: int) -> None:  # pragma: no cover - jit
    """``correlate`` one output pixel at a time, each visiting only its in-bounds taps: on maps narrower than
    2 XB the blocked kernel would spend most of its FMAs on padding."""
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
def _weight_grad_pixels(
    dout: np.ndarray, src: np.ndarray, k: int, offset: int, blocks: int
) -> np.ndarray:  # pragma: no cover
    """``weight_grad_partials`` a pixel at a time (for narrow maps, as :func:`_correlate_pixels`)."""
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


@functools.cache
def _kernels(k: int) -> tuple[Callable[..., None], Callable[..., np.ndarray]]:
    return _make_correlate(k), _make_weight_grad(k)


def correlate(src: np.ndarray, w: np.ndarray, out: np.ndarray, offset: int) -> None:
    """out[n, y, x, :] += sum_{i,j} w[i, j, :] * src[n, y + i - offset, x + j - offset, :] (zero outside src);
    src (N, Hs, Ws, C), w (k, k, C), out (N, Ho, Wo, C)."""
    if out.shape[2] >= 2 * XB:
        _kernels(w.shape[0])[0](src, w, out, offset)
    else:
        _correlate_pixels(src, w, out, offset)


def weight_grad_partials(dout: np.ndarray, src: np.ndarray, k: int, offset: int, blocks: int) -> np.ndarray:
    """(blocks, k, k, C): partials[b, i, j, c] = sum over the images of block b of
    dout[n, y, x, c] * src[n, y + i - offset, x + j - offset, c]."""
    if dout.shape[2] >= 4 * XB:  # the wider threshold was measured: at 8-14 pixels the pixel loop wins
        return _kernels(k)[1](dout, src, offset, blocks)
    return _weight_grad_pixels(dout, src, k, offset, blocks)


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
