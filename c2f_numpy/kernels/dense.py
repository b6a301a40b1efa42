"""Dense convolution in channels-last (NHWC) layout, the Numba half: moving pixels between an image and its
im2col matrix. The arithmetic is one BLAS GEMM in :func:`c2f_numpy.kernels.nhwc.conv2d_forward`; these
kernels only copy and add.

    gather (im2col)    cols[n, y, x, i, j, :] = x[n, y*sh + i - pt, x*sw + j - pl, :]   (0 in the padding)
    scatter (col2im)   dx[n, yy, xx, :] = sum of dcols[n, y, x, i, j, :] over the taps that read (yy, xx)

Why Numba and not NumPy slicing: with C = 24 channels a tap is a 96-byte copy, and the NumPy way (np.pad,
then one strided slice assignment per tap, kh*kw passes over the output) took about 9x longer than one pass
that writes ``cols`` once, in memory order (the stem's 3x3 conv, 24 channels at 28x28, batch 128, one
thread: 39 vs 4.4 ms; col2im 55 vs 6 ms). Rows, columns and taps that fall on the padding are found once per
output pixel (the ranges i0:i1, j0:j1) instead of tested per tap, so nothing is padded or copied beforehand.
Bottom/right padding needs no argument: it is whatever lies past the input's last row or column.

Both kernels only move values (the scatter adds a fixed set of terms in a fixed order), so their results do
not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .pool import parallel_kernel

# Inner loops copy one run of values between flat (1-d) views at offsets computed here, not through a view per
# row: with C = 1 a run is only kw values, and building a view for each cost as much as the copy itself.
# Offsets are unsigned on purpose: Numba wraps negative indices, and that per-element test on a signed index
# keeps LLVM from vectorising the copy (measured 5x slower at C = 24). Every offset here is >= 0 by construction.


@parallel_kernel()
def gather_taps(
    x: np.ndarray, cols: np.ndarray, pad_top: int, pad_left: int, stride_h: int, stride_w: int
) -> None:  # pragma: no cover - jit
    """Fill cols (N, Ho, Wo, kh, kw, C) from x (N, H, W, C): the kh*kw input pixels each output pixel reads."""
    n_img, h, w, c = x.shape
    _, ho, wo, kh, kw, _ = cols.shape
    x_flat, cols_flat = x.reshape(-1), cols.reshape(-1)
    for t in prange(n_img * ho):  # one output row per task: every task writes its own part of cols
        n = t // ho
        y = t - n * ho
        top = y * stride_h - pad_top  # input row under tap i = 0
        i0, i1 = max(0, -top), min(kh, h - top)  # the taps i that land inside the image
        for xo in range(wo):
            left = xo * stride_w - pad_left
            j0, j1 = max(0, -left), min(kw, w - left)
            if i1 - i0 < kh or j1 - j0 < kw:  # some taps read the padding: zero them all, then fill the rest
                cols[n, y, xo] = 0
            # taps j0:j1 of a kernel row read adjacent pixels: with C innermost, one contiguous run in both arrays
            run = np.uint64(max(0, j1 - j0) * c)
            for i in range(i0, i1):
                dst = np.uint64(((t * wo + xo) * kh + i) * kw * c + j0 * c)  # cols[n, y, xo, i, j0, 0]
                src = np.uint64(((n * h + top + i) * w + left + j0) * c)  # x[n, top + i, left + j0, 0]
                for e in range(run):
                    cols_flat[dst + e] = x_flat[src + e]


@parallel_kernel()
def scatter_add_taps(
    dcols: np.ndarray, dx: np.ndarray, pad_top: int, pad_left: int, stride_h: int, stride_w: int
) -> None:  # pragma: no cover - jit
    """dx (N, H, W, C) = the adjoint of :func:`gather_taps` applied to dcols (N, Ho, Wo, kh, kw, C).

    Overlapping taps (kernel larger than the stride) add into the same input pixel, so the work is split by
    image: one task owns all of dx[n], no two tasks write the same value, and each sum runs in the fixed
    order (y, x, i, j). dcols is read in memory order (about 2x faster than collecting the taps of one input
    pixel, which jumps between rows of dcols); gradients meant for the padding are dropped.
    """
    n_img, h, w, c = dx.shape
    _, ho, wo, kh, kw, _ = dcols.shape
    dx_flat, dcols_flat = dx.reshape(-1), dcols.reshape(-1)
    for n in prange(n_img):
        dx[n] = 0
        for y in range(ho):
            top = y * stride_h - pad_top
            i0, i1 = max(0, -top), min(kh, h - top)
            for xo in range(wo):
                left = xo * stride_w - pad_left
                j0, j1 = max(0, -left), min(kw, w - left)
                run = np.uint64(max(0, j1 - j0) * c)
                for i in range(i0, i1):
                    src = np.uint64((((n * ho + y) * wo + xo) * kh + i) * kw * c + j0 * c)  # dcols[n, y, xo, i, j0, 0]
                    dst = np.uint64(((n * h + top + i) * w + left + j0) * c)  # dx[n, top + i, left + j0, 0]
                    for e in range(run):
                        dx_flat[dst + e] += dcols_flat[src + e]
