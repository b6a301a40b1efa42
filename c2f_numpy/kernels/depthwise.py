"""Depthwise convolution in channels-last (NHWC) layout, Numba kernels: the fast twin of ``ops.conv2d``
with ``groups = C``, stride 1.

Why NHWC: the channel axis is innermost, so every kernel tap is a contiguous multiply-add over C channels that
vectorises whatever the image size (Conv2Former's maps at 32x32 input are 8x8 down to 1x1: a loop along W
would have 8 lanes at most).

The correlation (the forward, and the input gradient with flipped weights) is one row kernel for every map: it
applies one tap at a time to the whole run of output pixels whose source pixel is inside the image (one long
vectorisable loop; taps on the padding are never visited: at 2x2 with k = 11 only 9 of the 121 taps touch the
image). The weight gradient has two forms, chosen by the map width (:func:`weight_grad_partials`): a
register-blocked kernel compiled per kernel size for maps at least WIDE pixels wide, and the row form for
narrower ones. The two weight gradients sum in different (fixed) orders (tests/kernels/test_depthwise_kernels.py).

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
# The blocked weight gradient: XB pixels x JB kernel taps per pass. The loops over the block are fixed-length, so
# LLVM unrolls them and vectorises the channel loop inside, and each source pixel is loaded once for the XB pixels
# that read it.
XB, JB = 4, 4
# Maps at least this wide take the blocked weight gradient, narrower ones the row form. Measured at 1 thread on an
# AVX2-only Zen 3: the row form was 1.9-3.6x faster on 14-32 wide maps at k = 7. On a Zen 5 (AVX-512), at 48-112
# wide, the row form was 0.75-1.7x the blocked one, slower at 48x48 with 96 channels (docs/performance.md, "The
# depthwise forward"). The forward has no blocked form: the row kernel was level with it or faster on both CPUs.
WIDE = 48


@njit(fastmath=_FLAGS, cache=True)
def _pad_row(row: np.ndarray, s: np.ndarray, offset: int) -> None:  # pragma: no cover - jit
    """s[offset + x] = row[x] where it fits; the rest of s keeps its zeros (the padding)."""
    for x in range(max(0, -offset), min(row.shape[0], s.shape[0] - offset)):
        sx, rx = s[x + offset], row[x]
        for ch in range(rx.shape[0]):
            sx[ch] = rx[ch]


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


@functools.cache
def _blocked_weight_grad(k: int) -> Callable[..., np.ndarray]:
    """The kernel below for one kernel size k: a compile-time constant, so LLVM unrolls the tap blocks and keeps
    the accumulators in registers. Each k compiles once (cached)."""
    k_main, k_rest = k - k % JB, k % JB

    @parallel_kernel(fastmath=_FLAGS)
    def weight_grad_k(dout: np.ndarray, src: np.ndarray, offset: int, blocks: int) -> np.ndarray:  # pragma: no cover
        """partials[b, i, j, c] = sum over the images of block b of dout[n, y, x, c] * src[n, y+i-off, x+j-off, c].

        Each source row an image row reads is first copied into a zero-padded scratch row s, so s[x + j] is the
        tap (i, j) of pixel x with no bounds tests; XB pixels x JB taps per block. Each partial sums in (n, y, x)
        order.
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


@njit(fastmath=_FLAGS, cache=True, inline="always")
def correlate_row(src: np.ndarray, wt: np.ndarray, o: np.ndarray, start: np.ndarray, y: int,
                  offset: int) -> None:  # pragma: no cover - jit  # fmt: skip
    """Output row y of one image: o (Wo * C,) = start, then for each tap (i, j) inside src (Hs, Ws, C) the
    multiply-add of its run against the tiled weights wt (k, k, Wo * C) (:func:`_tile_taps`), in (i, j) order."""
    hs, ws, c = src.shape
    k = wt.shape[0]
    wo = o.shape[0] // c
    for q in range(wo * c):  # the row's start written here, by its task: no separate pass over out
        o[q] = start[q]
    for i in range(max(0, offset - y), min(k, hs + offset - y)):
        row = src[y + i - offset].reshape(ws * c)
        for j in range(k):
            lo, hi, shift = _tap_run(j, offset, wo, ws, c)
            if hi == lo:
                continue
            # slices, not shifted indices: Numba's index wraparound on q + shift would keep LLVM from
            # vectorising
            _multiply_add(o[lo:hi], wt[i, j, lo:hi], row[lo + shift : hi + shift])


@parallel_kernel(fastmath=_FLAGS)
def _correlate_rows(src: np.ndarray, w: np.ndarray, out: np.ndarray, offset: int, bias: np.ndarray,
                    base: np.ndarray, from_base: bool) -> None:  # pragma: no cover - jit  # fmt: skip
    """``correlate`` a tap at a time over whole rows: each output row starts as ``base``'s row (``from_base``) or
    as ``bias`` at every pixel; then for tap (i, j), the output pixels whose source pixel is inside the image form
    one contiguous run of (pixels x C) values, updated in one flat loop against the tiled weights. Taps on padding
    are never visited, and each output adds its taps in (i, j) order. One output row per parallel task, so any
    thread count gives the same bits."""
    n_img, _, _, c = src.shape
    _, ho, wo, _ = out.shape
    wt = _tile_taps(w, wo)
    bias_row = _tile_taps(bias.reshape(1, 1, c), wo)[0, 0]
    for t in prange(n_img * ho):
        n = t // ho
        y = t - n * ho
        start = base[n, y].reshape(wo * c) if from_base else bias_row
        correlate_row(src[n], wt, out[n, y].reshape(wo * c), start, y, offset)


@parallel_kernel(fastmath=_FLAGS)
def _weight_grad_rows(
    dout: np.ndarray, src: np.ndarray, k: int, offset: int, blocks: int
) -> np.ndarray:  # pragma: no cover
    """``weight_grad_partials`` a tap at a time over whole rows (as :func:`_correlate_rows`): each block of images
    sums its products per (tap, pixel column, channel) over (n, y), then over the columns in order."""
    n_img, ho, wo, c = dout.shape
    partials = np.zeros((blocks, k, k, c), dtype=dout.dtype)
    for b in prange(blocks):
        lanes = np.zeros((k, k, wo * c), dtype=dout.dtype)
        for n in range(b * n_img // blocks, (b + 1) * n_img // blocks):
            for y in range(ho):
                weight_grad_row(lanes, dout[n, y].reshape(wo * c), src[n], y, offset)
        reduce_lanes(lanes, partials[b])
    return partials


@njit(fastmath=_FLAGS, cache=True, inline="always")
def weight_grad_row(lanes: np.ndarray, d: np.ndarray, src: np.ndarray, y: int,
                    offset: int) -> None:  # pragma: no cover - jit  # fmt: skip
    """Output row y's share of the weight gradient: lanes (k, k, Wo * C) += d (Wo * C,) times each tap's run of
    src (Hs, Ws, C) (the runs of :func:`correlate_row`), per (tap, pixel column, channel)."""
    hs, ws, c = src.shape
    k = lanes.shape[0]
    wo = d.shape[0] // c
    for i in range(max(0, offset - y), min(k, hs + offset - y)):
        row = src[y + i - offset].reshape(ws * c)
        for j in range(k):
            lo, hi, shift = _tap_run(j, offset, wo, ws, c)
            if hi == lo:
                continue
            _multiply_add(lanes[i, j, lo:hi], d[lo:hi], row[lo + shift : hi + shift])


@njit(fastmath=_FLAGS, cache=True, inline="always")
def reduce_lanes(lanes: np.ndarray, acc: np.ndarray) -> None:  # pragma: no cover - jit
    """acc (k, k, C) += lanes (k, k, Wo * C) summed over the pixel columns, in column order."""
    k, _, c = acc.shape
    wo = lanes.shape[2] // c
    for i in range(k):
        for j in range(k):
            for x in range(wo):
                for ch in range(c):
                    acc[i, j, ch] += lanes[i, j, x * c + ch]


def correlate(src: np.ndarray, w: np.ndarray, out: np.ndarray, offset: int, start: np.ndarray | None = None) -> None:
    """out[n, y, x, :] = start + sum_{i,j} w[i, j, :] * src[n, y + i - offset, x + j - offset, :] (zero outside
    src), the taps added in (i, j) order; src (N, Hs, Ws, C), w (k, k, C), out (N, Ho, Wo, C) (every value is
    written). ``start``: None (zeros), a (C,) vector (the bias), or an array of out's shape and dtype."""
    c = out.shape[-1]
    if start is None:
        _correlate_rows(src, w, out, offset, np.zeros(c, out.dtype), out, False)  # out stands in for the unused base
    elif start.shape == (c,):
        _correlate_rows(src, w, out, offset, np.ascontiguousarray(start, dtype=out.dtype), out, False)
    elif start.shape == out.shape and start.dtype == out.dtype:
        _correlate_rows(src, w, out, offset, np.zeros(c, out.dtype), np.ascontiguousarray(start), True)
    else:
        raise ValueError(f"correlate: start must be None, ({c},) or {out.shape} {out.dtype} like out, got "
                         f"{start.shape} {start.dtype}")  # fmt: skip


def weight_grad_partials(dout: np.ndarray, src: np.ndarray, k: int, offset: int, blocks: int) -> np.ndarray:
    """(blocks, k, k, C): partials[b, i, j, c] = sum over the images of block b of
    dout[n, y, x, c] * src[n, y + i - offset, x + j - offset, c]."""
    if dout.shape[2] >= WIDE:
        return _blocked_weight_grad(k)(dout, src, offset, blocks)
    return _weight_grad_rows(dout, src, k, offset, blocks)


def depthwise_forward(x: np.ndarray, w_kkc: np.ndarray, b: np.ndarray | None, padding: int) -> np.ndarray:
    """x (N, H, W, C), w (k, k, C), b (C,) -> (N, H + 2p - k + 1, W + 2p - k + 1, C)."""
    n, h, wd, c = x.shape
    k = w_kkc.shape[0]
    out = np.empty((n, h + 2 * padding - k + 1, wd + 2 * padding - k + 1, c), dtype=x.dtype)
    correlate(x, w_kkc, out, padding, b)
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
    identity path added in the same pass (each row of dx starts as dx_base's, not zeros).
    """
    k = w_kkc.shape[0]
    if dx_base is not None and (dx_base.shape != x.shape or dx_base.dtype != x.dtype):
        raise ValueError(f"depthwise_backward: dx_base must be {x.shape} {x.dtype} like x, got "
                         f"{dx_base.shape} {dx_base.dtype}")  # fmt: skip
    dx = np.empty(x.shape, dtype=x.dtype)
    correlate(dout, np.ascontiguousarray(w_kkc[::-1, ::-1]), dx, k - 1 - padding, dx_base)
    blocks = min(WEIGHT_GRAD_BLOCKS, x.shape[0])
    dw = weight_grad_partials(dout, x, k, padding, blocks).sum(axis=0)  # fixed block order: deterministic
    db = channel_sums(dout.reshape(-1, dout.shape[-1])) if with_bias else None
    return dx, dw, db
