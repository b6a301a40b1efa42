"""The GEMM the fast copy's kernels call: ``gemm(a, b, out)``, out = a @ b, one single-threaded BLAS call.

Why not Numba's ``np.dot``: it binds to SciPy's bundled OpenBLAS (0.3.30 in SciPy 1.17), whose products with a
transposed operand (every weight gradient, ``a.T @ b``) ran at 41-59 GFLOP/s on one core of an AMD Zen 3 on the
micro step's shapes, against 63-81 for OpenBLAS 0.3.34, the ``scipy-openblas32`` wheel (the same build, newer);
the plain products ran alike (docs/performance.md, "Round six"). That wheel is a dependency; its library is
loaded here with ``ctypes``, held at one thread (the Numba pool runs the calls, :mod:`.gemm`), and its
``cblas_sgemm`` / ``cblas_dgemm`` registered with LLVM under names of ours, so the kernels that call them can
still be cached (Numba refuses to cache a function that holds a ctypes pointer; a named external symbol is
resolved again when the cached code is loaded).

Side effect: a process that loads this library before SciPy's BLAS is first used runs SciPy's BLAS calls on it
too (measured: ``scipy.linalg.blas.sgemm`` at one thread after ``import c2f_numpy``), as it ran them at one thread
before, when the kernels held SciPy's own copy there; imported after ``scipy.linalg``, SciPy keeps its own.

Operands: 2-d float32 or float64 arrays, each C- or F-contiguous (a transposed view of a C-contiguous array is
F-contiguous: BLAS reads it as is, with its transpose flag); out C-contiguous. Row-major CBLAS throughout.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import llvmlite.binding as llvm
import numpy as np
import scipy_openblas32
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic, overload

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _load() -> ctypes.CDLL:
    path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))
    try:
        lib = ctypes.CDLL(path)
        # the wheel's symbols carry the prefix "scipy_" (as in SciPy's and NumPy's own copies)
        set_threads = lib.scipy_openblas_set_num_threads
        gemms = {name: getattr(lib, f"scipy_cblas_{name}") for name in ("sgemm", "dgemm")}
    except (OSError, AttributeError) as err:  # pragma: no cover - a broken install
        msg = f"c2f_numpy.kernels.blas: cannot load OpenBLAS from {path} (the scipy-openblas32 package): {err}"
        raise ImportError(msg) from err
    set_threads(1)  # its calls run inside the pool's threads
    for name, fn in gemms.items():
        llvm.add_symbol(f"c2f_cblas_{name}", ctypes.cast(fn, ctypes.c_void_p).value)
    return lib


LIBRARY = _load()  # kept referenced: the registered addresses live as long as the library stays loaded

_I = types.intc
_sgemm = types.ExternalFunction(
    "c2f_cblas_sgemm",
    types.void(_I, _I, _I, _I, _I, _I, types.float32, types.voidptr, _I, types.voidptr, _I, types.float32,
               types.voidptr, _I),
)  # fmt: skip
_dgemm = types.ExternalFunction(
    "c2f_cblas_dgemm",
    types.void(_I, _I, _I, _I, _I, _I, types.float64, types.voidptr, _I, types.voidptr, _I, types.float64,
               types.voidptr, _I),
)  # fmt: skip


@intrinsic
def _data(typingctx: Any, arr: Any) -> Any:
    """The array's data pointer as a void* (for the external call)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.bitcast(ary.data, ir.IntType(8).as_pointer())

    return types.voidptr(arr), codegen


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - implemented for Numba
    """out (M, N) = a (M, K) @ b (K, N), inside a Numba kernel (the overload below)."""
    raise NotImplementedError("blas.gemm is for Numba kernels; from Python use kernels.gemm.matmul")


@overload(gemm)
def _gemm_impl(a: Any, b: Any, out: Any) -> Any:
    """Chosen at compile time from the operands' types: sgemm or dgemm, each operand's transpose flag from its
    layout (C: as is; F: the transpose of a C-contiguous array)."""
    if not all(isinstance(t, types.Array) and t.ndim == 2 for t in (a, b, out)):
        return None
    if a.layout not in "CF" or b.layout not in "CF" or out.layout != "C" or not a.dtype == b.dtype == out.dtype:
        raise TypeError(f"blas.gemm: C- or F-contiguous operands, a C-contiguous out, one dtype; got {a}, {b}, {out}")
    call = {types.float32: _sgemm, types.float64: _dgemm}.get(a.dtype)
    if call is None:
        raise TypeError(f"blas.gemm: float32 or float64, got {a.dtype}")
    ta = _TRANS if a.layout == "F" else _NO_TRANS
    tb = _TRANS if b.layout == "F" else _NO_TRANS
    a_f, b_f = a.layout == "F", b.layout == "F"
    one = np.float32(1.0) if a.dtype == types.float32 else 1.0
    zero = np.float32(0.0) if a.dtype == types.float32 else 0.0

    def impl(a: Any, b: Any, out: Any) -> None:  # pragma: no cover - jit
        m, k = a.shape
        n = b.shape[1]
        if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
            raise ValueError("blas.gemm: the shapes of a, b and out do not chain")
        if m == 0 or n == 0:
            return
        if k == 0:
            out[:] = 0
            return
        lda = m if a_f else k  # row-major leading dimension of the stored (untransposed) matrix
        ldb = k if b_f else n
        call(_ROW_MAJOR, ta, tb, m, n, k, one, _data(a), lda, _data(b), ldb, zero, _data(out), n)  # type: ignore[call-overload, call-arg]  # Numba types

    return impl


@njit(cache=True)
def _gemm_py(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - jit
    gemm(a, b, out)


def gemm_py(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """:func:`gemm` from Python, for tests: one call on the calling thread."""
    _gemm_py(a, b, out)
