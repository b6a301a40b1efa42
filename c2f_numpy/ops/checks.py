"""Input validation shared by every op: one place that decides what is accepted and words the errors.

Every error names the op, what it expected and what it got, e.g.
``conv2d: w must have 4 dims (C_out, C_in/groups, kH, kW), got shape (8, 3, 3)``.

Policy
------
* Arrays must be ``np.ndarray`` of dtype float32 or float64 (the two dtypes the library computes in). Integer,
  bool, float16 and complex arrays are refused rather than silently cast: a cast hides a caller's bug and
  changes the numbers.
* Arrays must be C-contiguous. Views with negative strides (``x[:, ::-1]``) or transposed views are refused
  with a hint to pass ``np.ascontiguousarray(x)``; the fast kernels index memory directly and this keeps the
  two copies of each op on the same contract.
* All float operands of one op share one dtype; mixing float32 and float64 is an error, not an upcast.
* NaN and inf are not checked here. They propagate through every op exactly as IEEE arithmetic does (a
  full scan of every tensor would cost as much as the op); the loss reports a non-finite value and the
  training loop stops on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLOAT_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))


class OpInputError(ValueError):
    """Bad input to an op (shape, rank, contiguity, value). The message names op, expectation and input."""


class OpDTypeError(OpInputError, TypeError):
    """An array of a dtype the op does not compute in (ints, float16, ...)."""


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, np.ndarray) else type(x).__name__


def check_array(
    op: str,
    name: str,
    x: object,
    ndim: int | Sequence[int] | None = None,
    layout: str = "",
    dtype: np.dtype | None = None,
) -> np.ndarray:
    """Check that ``x`` is a C-contiguous float32/float64 ndarray of the given rank; return it.

    ``layout`` is a human description of the axes (e.g. "(N, C, H, W)") used in the error text. If ``dtype``
    is given, ``x`` must have exactly that dtype (the dtype of the op's main input).
    """
    if not isinstance(x, np.ndarray):
        raise OpInputError(f"{op}: {name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise OpDTypeError(
            f"{op}: {name} must be float32 or float64, got {x.dtype} (cast explicitly, e.g. x.astype(np.float32))"
        )
    if dtype is not None and x.dtype != dtype:
        raise OpDTypeError(f"{op}: {name} must have the same dtype as the input ({dtype}), got {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            dims = " or ".join(str(d) for d in allowed)
            raise OpInputError(f"{op}: {name} must have {dims} dims {layout}".rstrip() + f", got shape {x.shape}")
    if not x.flags.c_contiguous:
        what = "has negative strides" if any(s < 0 for s in x.strides) else "is not C-contiguous"
        raise OpInputError(f"{op}: {name} {what} (strides {x.strides}); pass np.ascontiguousarray({name}) instead")
    return x


def check_shape(op: str, name: str, x: np.ndarray, expected: tuple[int, ...], layout: str = "") -> None:
    """Require ``x.shape == expected``."""
    if tuple(x.shape) != tuple(expected):
        desc = f" {layout}" if layout else ""
        raise OpInputError(f"{op}: {name} must have shape {tuple(expected)}{desc}, got {tuple(x.shape)}")


def check_optional(
    op: str, name: str, x: object, expected: tuple[int, ...], dtype: np.dtype, layout: str = ""
) -> np.ndarray | None:
    """Validate an optional parameter (e.g. a bias): None, or an array of exactly this shape and dtype."""
    if x is None:
        return None
    arr = check_array(op, name, x, ndim=len(expected), layout=layout, dtype=dtype)
    check_shape(op, name, arr, expected, layout)
    return arr


def check_param(
    op: str, name: str, x: object, expected: tuple[int, ...], dtype: np.dtype, layout: str = ""
) -> np.ndarray:
    """Validate a required parameter array: exactly this shape and dtype."""
    arr = check_array(op, name, x, ndim=len(expected), layout=layout, dtype=dtype)
    check_shape(op, name, arr, expected, layout)
    return arr


def check_grad_out(op: str, dout: object, expected_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Validate the upstream gradient handed to a backward: the forward output's shape and dtype."""
    return check_param(op + "_backward", "dout", dout, expected_shape, dtype)


def check_same_size_depthwise(op: str, name: str, w: object, c: int) -> int:
    """Require a depthwise (c, 1, k, k) kernel with k odd, so padding k // 2 keeps H and W; return k."""
    if not isinstance(w, np.ndarray) or w.ndim != 4 or w.shape[:2] != (c, 1) or w.shape[2] != w.shape[3]:
        raise OpInputError(f"{op}: {name} must be a depthwise kernel ({c}, 1, k, k), got {_shape(w)}")
    k = int(w.shape[2])
    if k % 2 == 0:
        raise OpInputError(f"{op}: {name} must have an odd kernel size (padding k//2 keeps H, W), got k={k}")
    return k


def as_pair(op: str, name: str, v: int | Sequence[int], minimum: int) -> tuple[int, int]:
    """Turn an int or a pair of ints into a pair, checking each is an int >= ``minimum``."""
    pair = (v, v) if isinstance(v, int | np.integer) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, int | np.integer) and not isinstance(p, bool) for p in pair):
        raise OpInputError(f"{op}: {name} must be an int or a pair of ints, got {v!r}")
    if any(p < minimum for p in pair):
        raise OpInputError(f"{op}: {name} must be >= {minimum}, got {v!r}")
    return int(pair[0]), int(pair[1])
