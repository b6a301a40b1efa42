"""Dense convolution in channels-last (NHWC) layout, the Numba half: moving pixels between an image and its
im2col matrix. The arithmetic is one BLAS GEMM in :func:`c2f_numpy.kernels.nhwc.conv2d_forward`; the code here
only copies and adds: the two Numba kernels and the plumbing around them (which rows, which chunks).

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


# ------------------------------------------------------------------------------- im2col / col2im plumbing
CHUNK_BYTES = 4 << 20  # im2col of the overlapping-tap convolutions, a few images at a time


def image_chunks(n: int, bytes_per_image: int) -> list[tuple[int, int]]:
    """Image ranges whose im2col matrix is about CHUNK_BYTES (at least one image each).

    The stem's 3x3 convolutions have 9x as many taps as pixels: at 28x28 with 16 channels and batch 128 the whole
    im2col matrix is 58 MB, written, read by the GEMM, kept for the weight gradient, and its twin dcols written
    and read again in the backward, each a fresh allocation that the kernel zeroes page by page. A chunk of a few
    MB stays in the caches and its buffer is reused; the backward gathers the taps again (a cheap pass). The
    chunks depend only on the shape, so the sums over them have a fixed order.
    """
    per = max(1, CHUNK_BYTES // max(1, bytes_per_image))
    return [(n0, min(n, n0 + per)) for n0 in range(0, n, per)]


def is_patchify(k: tuple[int, int], pads: tuple[int, int, int, int], s: tuple[int, int]) -> bool:
    """Stride = kernel and no padding (the 2x2 stride-2 downsampling layers): the taps cut the image into
    disjoint kh x kw patches, so im2col is a permutation of the input and col2im its inverse, with no adds."""
    return s == k and not any(pads)


def im2col(
    x: np.ndarray,
    k: tuple[int, int],
    pads: tuple[int, int, int, int],
    s: tuple[int, int],
    out_hw: tuple[int, int],
    buf: np.ndarray | None = None,
) -> np.ndarray:
    """im2col: (N*Ho*Wo, kh*kw*C), row (n, y, x) holding the kh*kw input pixels its output reads; written into
    the first rows of ``buf`` (a matrix of at least that many rows, returned whole) when given."""
    n, _, _, c = x.shape
    (kh, kw), (ho, wo) = k, out_hw
    rows = n * ho * wo
    if buf is None:
        buf = np.empty((rows, kh * kw * c), dtype=x.dtype)
    cols = buf[:rows].reshape(n, ho, wo, kh, kw, c)  # every value is written below: no zero fill
    if is_patchify(k, pads, s):
        # One transposing copy. Rows/columns that do not fill a patch are left out (7x7 -> 3x3 drops row and
        # column 6); splitting H and W into (patch, tap) is then a view.
        patches = x[:, : ho * kh, : wo * kw].reshape(n, ho, kh, wo, kw, c)
        np.copyto(cols, patches.transpose(0, 1, 3, 2, 4, 5))
    else:
        gather_taps(x, cols, pads[0], pads[2], s[0], s[1])
    return buf


def col2im_patches(dcols: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
    """col2im for non-overlapping patches, the inverse of :func:`im2col`' permutation: dx (N, H, W, C) from
    dcols (N, Ho, Wo, kh, kw, C) (the backward scatters overlapping taps chunk by chunk)."""
    n, _, _, c = x_shape
    _, ho, wo, kh, kw, _ = dcols.shape
    dx = np.empty(x_shape, dtype=dcols.dtype)
    dx[:, ho * kh :] = 0  # the rows and columns no patch reads
    dx[:, :, wo * kw :] = 0
    dx[:, : ho * kh, : wo * kw].reshape(n, ho, kh, wo, kw, c)[...] = dcols.transpose(0, 1, 3, 2, 4, 5)
    return dx
