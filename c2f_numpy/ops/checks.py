"""Input validation shared by both copies of every op: one place that decides what is accepted and words
the errors. The teaching copy (:mod:`c2f_numpy.ops`, NCHW) and the fast copy (:mod:`c2f_numpy.kernels.nhwc`,
NHWC) call the same functions at each op's entry, with their own :class:`Layout`, so the same bad input gets
the same exception class and the same message in both (the fast copy's op names end in " (nhwc)").

Every error names the op, the argument, what was expected and what came, e.g.
``conv2d: w must have 4 dims (C_out, C_in/groups, kH, kW), got shape (8, 3, 3)``.

Policy
------
* Arrays must be non-empty ``np.ndarray`` of dtype float32 or float64 (the two dtypes the library computes in).
  Integer, bool, float16 and complex arrays are refused rather than silently cast: a cast hides a caller's bug
  and changes the numbers. A size-0 array is refused (no op here has a meaning for an empty batch or axis).
* Arrays must be C-contiguous. Views with negative strides (``x[:, ::-1]``) or transposed views are refused
  with a hint to pass ``np.ascontiguousarray(x)``; the fast kernels index memory directly and this keeps the
  two copies of each op on the same contract.
* All float operands of one op share one dtype; mixing float32 and float64 is an error, not an upcast.
* Shapes must match exactly: a parameter or upstream gradient that would broadcast is an error.
* Integer options (stride, padding, dilation, groups, kernel sizes) must be ints (``np.integer`` included);
  bools and floats are refused with :class:`OpTypeError` naming the argument (``stride=1.0`` is a bug).
* Float options are real numbers, not bools: ``eps`` finite and > 0, ``momentum`` in [0, 1] (or None,
  PyTorch's cumulative average), ``label_smoothing`` and ``drop_prob`` in [0, 1]; flags (``training``) are bools.
* NaN and inf inside arrays are not checked here. They propagate through every op exactly as IEEE arithmetic
  does (a full scan of every tensor would cost as much as the op); the loss reports a non-finite value and the
  training loop stops on it.
* Messages show at most a short ``reprlib`` form of a bad value, so a huge or deeply nested argument cannot
  make the error itself slow.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard, cast

import numpy as np

FLOAT_DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))
GELU_APPROXIMATIONS = ("none", "tanh")

Padding = int | Sequence[int] | str
"""int p (all sides), (ph, pw), (top, bottom, left, right), "valid" (0) or "same" (stride 1 only; an even
kernel puts the extra row/column at the bottom/right, as PyTorch does)."""


class OpInputError(ValueError):
    """Bad input to an op (shape, rank, contiguity, value). The message names op, argument, expectation and input."""


class OpTypeError(OpInputError, TypeError):
    """An argument of the wrong type: a float or bool where an int is needed, None where statistics are needed,
    something that is not an array where an array is. Also a ``TypeError``, as Python raises for such calls."""


class OpDTypeError(OpTypeError):
    """An array of a dtype the op does not compute in (ints, float16, ...) or of another operand's dtype."""


@dataclass(frozen=True)
class Layout:
    """Where a copy of the ops keeps the channels of its activations."""

    name: str  # the 4-d layout, for messages: "(N, C, H, W)"
    any_rank: str  # the same for ops that take any rank >= 2: "(N, C, ...)"
    channel_axis: int  # 1 (channels-first) or -1 (channels-last)

    def spatial(self, x: np.ndarray) -> tuple[int, int]:
        """(H, W) of a 4-d activation."""
        h, w = x.shape[2:] if self.channel_axis == 1 else x.shape[1:3]
        return int(h), int(w)


CHANNELS_FIRST = Layout("(N, C, H, W)", "(N, C, ...)", 1)  # the teaching copy, PyTorch's layout
CHANNELS_LAST = Layout("(N, H, W, C)", "(N, ..., C)", -1)  # the fast copy


class BatchNormStatsLike(Protocol):
    """What ``batch_norm2d`` reads from its ``stats`` (:class:`c2f_numpy.ops.BatchNormStats`)."""

    @property
    def running_mean(self) -> np.ndarray: ...
    @property
    def running_var(self) -> np.ndarray: ...
    @property
    def num_batches_tracked(self) -> int: ...


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 3
BRIEF_CHARS = 80


def _brief(v: object) -> str:
    """A short repr of a bad value for a message: at most BRIEF_CHARS, however big or deep the value is."""
    r = _REPR.repr(v)
    return f"{r if len(r) <= BRIEF_CHARS else r[: BRIEF_CHARS - 3] + '...'} ({type(v).__name__})"


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, np.ndarray) else type(x).__name__


def _is_int(v: object) -> TypeGuard[int | np.integer]:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _ints(values: Sequence[object]) -> tuple[int, ...] | None:
    """The values as Python ints if every one is an int (bools and floats are not); None otherwise."""
    return tuple(int(v) for v in values if _is_int(v)) if all(_is_int(v) for v in values) else None


# --------------------------------------------------------------------------------------------- arrays
def check_array(
    op: str,
    name: str,
    x: object,
    ndim: int | Sequence[int] | None = None,
    layout: str = "",
    dtype: np.dtype | None = None,
) -> np.ndarray:
    """Check that ``x`` is a non-empty C-contiguous float32/float64 ndarray of the given rank; return it.

    ``layout`` is a human description of the axes (e.g. "(N, C, H, W)") used in the error text. If ``dtype``
    is given, ``x`` must have exactly that dtype (the dtype of the op's main input).
    """
    if not isinstance(x, np.ndarray):
        raise OpTypeError(f"{op}: {name} must be a numpy.ndarray, got {type(x).__name__}")
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
    if x.size == 0:
        raise OpInputError(f"{op}: {name} must be non-empty, got shape {x.shape}")
    if not x.flags.c_contiguous:
        what = "has negative strides" if any(s < 0 for s in x.strides) else "is not C-contiguous"
        raise OpInputError(f"{op}: {name} {what} (strides {x.strides}); pass np.ascontiguousarray({name}) instead")
    return x


def check_min_rank(op: str, name: str, x: object, min_ndim: int, layout: str) -> np.ndarray:
    """:func:`check_array` for ops that take any rank >= ``min_ndim``."""
    x = check_array(op, name, x, layout=layout)
    if x.ndim < min_ndim:
        raise OpInputError(f"{op}: {name} must have at least {min_ndim} dims {layout}, got shape {x.shape}")
    return x


def check_shape(op: str, name: str, x: np.ndarray, expected: tuple[int, ...], layout: str = "") -> None:
    """Require ``x.shape == expected`` (no broadcasting)."""
    if tuple(x.shape) != tuple(expected):
        desc = f" {layout}" if layout else ""
        raise OpInputError(f"{op}: {name} must have shape {tuple(expected)}{desc}, got {tuple(x.shape)}")


def check_optional(
    op: str, name: str, x: object, expected: tuple[int, ...], dtype: np.dtype, layout: str = ""
) -> np.ndarray | None:
    """Validate an optional parameter (e.g. a bias): None, or an array of exactly this shape and dtype."""
    if x is None:
        return None
    return check_param(op, name, x, expected, dtype, layout)


def check_param(
    op: str, name: str, x: object, expected: tuple[int, ...], dtype: np.dtype, layout: str = ""
) -> np.ndarray:
    """Validate a required parameter array: exactly this shape and dtype."""
    if x is None:
        raise OpTypeError(f"{op}: {name} must be an array of shape {tuple(expected)} {layout}".rstrip() + ", got None")
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


# --------------------------------------------------------------------------------------------- scalar options
def check_int(op: str, name: str, v: object, minimum: int) -> int:
    """An int (or ``np.integer``, never a bool or a float) >= ``minimum``."""
    if not _is_int(v):
        raise OpTypeError(f"{op}: {name} must be an int, got {_brief(v)}")
    if int(v) < minimum:
        raise OpInputError(f"{op}: {name} must be >= {minimum}, got {_REPR.repr(v)}")
    return int(v)


def as_pair(op: str, name: str, v: object, minimum: int) -> tuple[int, int]:
    """Turn an int or a pair (tuple or list) of ints into a pair, checking each is an int >= ``minimum``."""
    pair = (v, v) if _is_int(v) else tuple(v) if isinstance(v, tuple | list) and len(v) == 2 else ()
    ints = _ints(pair)
    if not ints:
        raise OpTypeError(f"{op}: {name} must be an int or a pair of ints, got {_brief(v)}")
    if min(ints) < minimum:
        raise OpInputError(f"{op}: {name} must be >= {minimum}, got {_REPR.repr(v)}")
    return ints[0], ints[1]


def check_float(
    op: str, name: str, v: object, *, low: float, high: float | None = None, low_open: bool = False, extra: str = ""
) -> float:
    """A real number (int or float, never a bool), finite, in [low, high] (or (low, ...) if ``low_open``)."""
    if not isinstance(v, int | float | np.integer | np.floating) or isinstance(v, bool):
        raise OpTypeError(f"{op}: {name} must be a real number{extra}, got {_brief(v)}")
    f = float(v)
    if not math.isfinite(f):
        raise OpInputError(f"{op}: {name} must be finite, got {v!r}")
    if (f <= low if low_open else f < low) or (high is not None and f > high):
        if high is None:
            want = f"> {low:g}" if low_open else f">= {low:g}"
        else:
            want = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        raise OpInputError(f"{op}: {name} must be {want}{extra}, got {v!r}")
    return f


def check_eps(op: str, eps: object) -> float:
    """The normalisations' eps: finite and > 0 (eps <= 0 divides by zero or takes the root of a negative)."""
    return check_float(op, "eps", eps, low=0.0, low_open=True)


def check_flag(op: str, name: str, v: object) -> bool:
    """A bool (``np.bool_`` too); 0, 1, strings and None are refused."""
    if not isinstance(v, bool | np.bool_):
        raise OpTypeError(f"{op}: {name} must be a bool, got {_brief(v)}")
    return bool(v)


# --------------------------------------------------------------------------------------------- convolutions
def resolve_padding(
    op: str, padding: object, k: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Return (top, bottom, left, right) padding from any :data:`Padding` form."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise OpInputError(f"{op}: padding='same' needs stride 1, got stride {stride}")
            th, tw = dilation[0] * (k[0] - 1), dilation[1] * (k[1] - 1)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        raise OpInputError(f"{op}: padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    if _is_int(padding):
        given: tuple[object, ...] = (padding,) * 4
    elif isinstance(padding, tuple | list) and len(padding) in (2, 4):
        given = tuple(padding) if len(padding) == 4 else (padding[0], padding[0], padding[1], padding[1])
    else:
        raise OpTypeError(
            f"{op}: padding must be an int, (ph, pw), (top, bottom, left, right), 'same' or 'valid', "
            f"got {_brief(padding)}"
        )
    p = _ints(given)
    if p is None:
        raise OpTypeError(f"{op}: padding must hold ints, got {_brief(padding)}")
    if min(p) < 0:
        raise OpInputError(f"{op}: padding must be non-negative ints, got {_REPR.repr(padding)}")
    return p[0], p[1], p[2], p[3]


def conv_output_size(size: int, pad_total: int, k: int, stride: int, dilation: int) -> int:
    """Output length along one axis: floor((size + pads - dilation*(k-1) - 1) / stride) + 1."""
    return (size + pad_total - dilation * (k - 1) - 1) // stride + 1


@dataclass(frozen=True)
class ConvArgs:
    """A validated ``conv2d`` call: the arrays and every option in resolved form."""

    x: np.ndarray
    w: np.ndarray
    b: np.ndarray | None
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, bottom, left, right
    groups: int
    out_hw: tuple[int, int]


def conv2d_args(
    op: str,
    x: object,
    w: object,
    b: object,
    *,
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
    layout: Layout,
) -> ConvArgs:
    """Validate a ``conv2d`` call (both copies): ranks, dtypes, channels against groups, the bias, the int options,
    the padding, and an output of at least 1x1."""
    x = check_array(op, "x", x, 4, layout.name)
    w = check_array(op, "w", w, 4, "(C_out, C_in/groups, kH, kW)", dtype=x.dtype)
    c = x.shape[layout.channel_axis]
    h, wd = layout.spatial(x)
    co, cg, kh, kw = w.shape
    g = check_int(op, "groups", groups, 1)
    if c % g or co % g:
        raise OpInputError(f"{op}: groups={_REPR.repr(g)} must divide C_in={c} and C_out={co}")
    if cg * g != c:
        raise OpInputError(
            f"{op}: channel mismatch: x has C_in={c}, w expects C_in/groups={cg} x groups={g} = {cg * g}"
        )
    bias = check_optional(op, "b", b, (co,), x.dtype, "(C_out,)")
    s = as_pair(op, "stride", stride, 1)
    d = as_pair(op, "dilation", dilation, 1)
    pads = resolve_padding(op, padding, (kh, kw), s, d)
    ho = conv_output_size(h, pads[0] + pads[1], kh, s[0], d[0])
    wo = conv_output_size(wd, pads[2] + pads[3], kw, s[1], d[1])
    if ho < 1 or wo < 1:
        raise OpInputError(
            f"{op}: input {h}x{wd} with padding {pads} is smaller than the dilated kernel "
            f"{d[0] * (kh - 1) + 1}x{d[1] * (kw - 1) + 1}: the output would be empty"
        )
    return ConvArgs(x, w, bias, s, d, pads, g, (ho, wo))


def conv1x1_args(
    op: str, x: object, w: object, b: object, layout: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate a pointwise convolution: x 4-d, w (C_out, C_in, 1, 1) or (C_out, C_in), b (C_out,) or None."""
    x = check_array(op, "x", x, 4, layout.name)
    w = pointwise_weight(op, "w", w, x.shape[layout.channel_axis], x.dtype)
    return x, w, check_optional(op, "b", b, (w.shape[0],), x.dtype, "(C_out,)")


def pointwise_weight(
    op: str, name: str, w: object, c_in: int, dtype: np.dtype, *, c_out: int | None = None
) -> np.ndarray:
    """Validate a 1x1 conv weight (C_out, C_in, 1, 1) or (C_out, C_in) reading the ``c_in`` channels of x (and
    writing ``c_out``, when given)."""
    w = check_array(op, name, w, (2, 4), "(C_out, C_in, 1, 1) or (C_out, C_in)", dtype=dtype)
    if w.ndim == 4 and w.shape[2:] != (1, 1):
        raise OpInputError(f"{op}: {name} must be a 1x1 kernel (C_out, C_in, 1, 1), got shape {w.shape}")
    if c_out is not None:
        check_shape(op, name, w, (c_out, c_in, 1, 1)[: w.ndim])
    elif w.shape[1] != c_in:
        raise OpInputError(
            f"{op}: channel mismatch: x has C_in={c_in}, {name} expects C_in={w.shape[1]} ({name} shape {w.shape})"
        )
    return w


def pos_residual_args(op: str, h: object, w: object, layout: Layout) -> tuple[np.ndarray, int]:
    """Validate h + GELU(DWConv(h)): h 4-d, w a depthwise (C, 1, k, k) kernel with k odd; return (h, k)."""
    h = check_array(op, "h", h, 4, layout.name)
    return h, check_same_size_depthwise(op, "w", w, h.shape[layout.channel_axis])


# --------------------------------------------------------------------------------------------- norms, elementwise
def layer_norm_args(
    op: str, x: object, weight: object, bias: object, eps: object, layout: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Validate a LayerNorm over the channel axis: x of rank >= 2, weight and bias (C,), eps > 0."""
    x = check_min_rank(op, "x", x, 2, layout.any_rank)
    c = x.shape[layout.channel_axis]
    weight = check_param(op, "weight", weight, (c,), x.dtype, "(C,)")
    bias = check_param(op, "bias", bias, (c,), x.dtype, "(C,)")
    return x, weight, bias, check_eps(op, eps)


def batch_norm2d_args(
    op: str,
    x: object,
    weight: object,
    bias: object,
    stats: object,
    *,
    training: object,
    momentum: object,
    eps: object,
    layout: Layout,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None, float]:
    """Validate a BatchNorm2d call: x 4-d, weight/bias and both running statistics (C,) of x's dtype (both modes
    need them: eval normalises with them, train returns their update), training a bool, momentum in [0, 1] or
    None, eps > 0, and in train mode more than one value per channel. Returns (x, weight, bias, momentum, eps)."""
    x = check_array(op, "x", x, 4, layout.name)
    c = x.shape[layout.channel_axis]
    weight = check_param(op, "weight", weight, (c,), x.dtype, "(C,)")
    bias = check_param(op, "bias", bias, (c,), x.dtype, "(C,)")
    if stats is None or not all(hasattr(stats, a) for a in ("running_mean", "running_var", "num_batches_tracked")):
        raise OpTypeError(
            f"{op}: stats must be a BatchNormStats (running_mean, running_var, num_batches_tracked), got "
            f"{type(stats).__name__}; BatchNormStats.initial(C) gives PyTorch's initial buffers"
        )
    s = cast(BatchNormStatsLike, stats)
    check_param(op, "stats.running_mean", s.running_mean, (c,), x.dtype, "(C,)")
    check_param(op, "stats.running_var", s.running_var, (c,), x.dtype, "(C,)")
    check_int(op, "stats.num_batches_tracked", s.num_batches_tracked, 0)
    train = check_flag(op, "training", training)
    mom = None if momentum is None else check_float(op, "momentum", momentum, low=0.0, high=1.0, extra=" or None")
    e = check_eps(op, eps)
    if train and x.size // c < 2:
        raise OpInputError(
            f"{op}: train mode needs more than 1 value per channel (N*H*W > 1), got input shape {x.shape}"
        )
    return x, weight, bias, mom, e


def gelu_args(op: str, x: object, approximate: object) -> np.ndarray:
    """Validate a GELU call: x any rank (0-d included), approximate "none" or "tanh"."""
    x = check_array(op, "x", x)
    if not isinstance(approximate, str) or approximate not in GELU_APPROXIMATIONS:
        raise OpInputError(f"{op}: approximate must be one of {GELU_APPROXIMATIONS}, got {_brief(approximate)}")
    return x


def layer_scale_args(op: str, x: object, gamma: object, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Validate a per-channel scale: x of rank >= 2, gamma (C,) on the layout's channel axis."""
    x = check_min_rank(op, "x", x, 2, layout.any_rank)
    return x, check_param(op, "gamma", gamma, (x.shape[layout.channel_axis],), x.dtype, "(C,)")


def residual_branch_args(
    op: str, x: object, y: object, gamma: object, layout: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate out = x + drop_path(gamma * y): y like x (rank >= 2), gamma (C,) on the layout's channel axis."""
    x = check_min_rank(op, "x", x, 2, layout.any_rank)
    y = check_param(op, "y", y, x.shape, x.dtype, "(like x)")
    return x, y, check_param(op, "gamma", gamma, (x.shape[layout.channel_axis],), x.dtype, "(C,)")


def modulate_args(op: str, a: object, v: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate m = a * v: two arrays of one shape and dtype (any layout)."""
    a = check_array(op, "a", a)
    return a, check_param(op, "v", v, a.shape, a.dtype, "(like a)")
