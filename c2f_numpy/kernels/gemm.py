"""The fast copy's matrix products on the Numba pool: fixed blocks, one single-threaded BLAS call each.

    matmul(a, b)     (M, K) @ (K, N)     rows of a in blocks (row_block(M)), one BLAS call per block
    matmul_tn(a, b)  (M, K)^T @ (M, N)   the sum over M split into an even number of fixed chunks (about
                                         TN_CHUNK_ROWS rows each), one BLAS call per chunk on the transposed
                                         view, the partial products added in chunk order

Why not ``a @ b``: NumPy's OpenBLAS runs its own pool of threads beside Numba's, and on a busy machine the two
pools wait for each other's descheduled threads (:mod:`.pool`). Here the Numba pool hands out the blocks and
each block is one call into the kernels' own OpenBLAS (:mod:`.blas`), held at one thread.

Determinism: the blocks and chunks depend only on the shapes, each block is computed by one single-threaded
BLAS call, and ``matmul_tn`` adds its partial products in chunk order, so the results are bitwise the same at any
thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .blas import gemm
from .pool import parallel_kernel

# Rows per BLAS call: about M/4, so the small maps of the last stages (M = 256..1024 rows, the widest GEMMs) still
# give two threads two or more blocks; at least 128 (with fewer rows each call re-packs all of b for too little
# work: 256x256x256 in 32-row blocks took 2x as long as in 128-row blocks), at most 512 (a block of a and out
# stays in the caches; a 28x28 batch-128 map has ~200 blocks).
MIN_ROW_BLOCK, MAX_ROW_BLOCK, TARGET_BLOCKS = 128, 512, 4
# matmul_tn splits the sum, never the output: a weight gradient's output is small (K x N <= 2048 x 512 here) and
# its sum long (M = N*H*W pixels). Splitting the output instead (K rows in row_block(K) blocks, after copying a^T)
# gave one or two blocks for K = 128..512, so one thread, and ran at 26-75 GFLOP/s on the micro step's shapes
# against 110-185 with the sum split (benchmarks/bench.py --profile, 2026-12-06). An even chunk count keeps two
# threads equally busy; about 2048 rows per chunk was as fast as 1024 and 4096 and faster than 512.
TN_CHUNK_ROWS = 2048  # rows of the sum per partial product, about
TN_MAX_CHUNKS = 32  # at most this many partials (their memory: chunks x K x N values)


def row_block(rows: int) -> int:
    """Rows per block for a GEMM with this many output rows: a function of the shape only (determinism)."""
    per = -(-rows // TARGET_BLOCKS)
    return min(MAX_ROW_BLOCK, max(MIN_ROW_BLOCK, -(-per // 8) * 8))


@parallel_kernel()
def _matmul_blocks(a: np.ndarray, b: np.ndarray, out: np.ndarray, block: int) -> None:  # pragma: no cover - jit
    m = a.shape[0]
    for i in prange((m + block - 1) // block):
        r0 = i * block
        r1 = min(m, r0 + block)
        gemm(a[r0:r1], b, out[r0:r1])


@parallel_kernel()
def _matmul_tn_chunks(a: np.ndarray, b: np.ndarray, parts: np.ndarray, per: int) -> None:  # pragma: no cover - jit
    m = a.shape[0]
    for i in prange(parts.shape[0]):
        r0 = i * per
        r1 = min(m, r0 + per)
        gemm(a[r0:r1].T, b[r0:r1], parts[i])


def _operand(x: np.ndarray) -> np.ndarray:
    """BLAS reads C- or F-contiguous matrices as they are (a transposed view is a flag); anything else is copied."""
    return x if x.flags.c_contiguous or x.flags.f_contiguous else np.ascontiguousarray(x)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a @ b for a (M, K) and b (K, N) of one float dtype; ``out`` (M, N), C-contiguous, if given."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or a.dtype != b.dtype:
        raise ValueError(f"matmul: a {a.shape} {a.dtype} and b {b.shape} {b.dtype} do not chain")
    if out is None:
        out = np.empty((m, n), dtype=a.dtype)
    elif out.shape != (m, n) or out.dtype != a.dtype or not out.flags.c_contiguous:
        raise ValueError(f"matmul: out must be a C-contiguous ({m}, {n}) {a.dtype} array, got {out.shape} {out.dtype}")
    if m and n:
        _matmul_blocks(np.ascontiguousarray(a), _operand(b), out, row_block(m))
    return out


def tn_chunks(rows: int) -> int:
    """Partial products of a ``matmul_tn`` summing this many rows: even (two threads, equal shares), about
    TN_CHUNK_ROWS rows each, at most TN_MAX_CHUNKS; a function of the shape only (determinism)."""
    chunks = min(TN_MAX_CHUNKS, max(2, -(-rows // TN_CHUNK_ROWS)))
    return chunks + chunks % 2


def matmul_tn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a.T @ b for a (M, K) and b (M, N): the weight gradient of a GEMM, summed over the M rows (the pixels)."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != m or a.dtype != b.dtype:
        raise ValueError(f"matmul_tn: a {a.shape} {a.dtype} and b {b.shape} {b.dtype} do not share their rows")
    if m == 0:
        return np.zeros((k, n), dtype=a.dtype)
    per = -(-m // tn_chunks(m))
    parts = np.empty((-(-m // per), k, n), dtype=a.dtype)  # fewer than tn_chunks(m) when m is tiny
    _matmul_tn_chunks(np.ascontiguousarray(a), np.ascontiguousarray(b), parts, per)
    out = parts[0]
    for part in parts[1:]:  # in chunk order: a fixed sum. NumPy's add: a Numba kernel's launch cost more here
        out += part
    return out
