"""Convolutions: dense/grouped/depthwise ``conv2d``, the 1x1 convolution and ``linear`` as GEMMs.

Layout is NCHW (PyTorch's), weights are (C_out, C_in/groups, kH, kW). Convolution here is cross-correlation,
as in every deep-learning library:

    out[n, o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] * xp[n, g(o)*Cg + c, y*sh + i*dh, x*sw + j*dw]

where xp is the zero-padded input and g(o) the group of output channel o.

The teaching formulation: a kH x kW convolution is the sum of kH*kW 1x1 convolutions, each applied to the
input shifted by one kernel tap (i, j). Each tap is a (batched) matrix product, so BLAS does the dense work
and no im2col buffer of size N*C*k*k*H*W is ever built (at k=21 that buffer would take gigabytes).
The backward follows tap by tap from the same sum:

    dw[o, c, i, j]   = sum_{n, y, x} dout[n, o, y, x] * xp[n, c, y*sh + i*dh, x*sw + j*dw]
    dxp[n, c, y*sh + i*dh, x*sw + j*dw] += sum_o w[o, c, i, j] * dout[n, o, y, x]
    db[o]            = sum_{n, y, x} dout[n, o, y, x]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .activation import GeluCache, gelu_backward, gelu_forward
from .checks import (
    CHANNELS_FIRST,
    OpInputError,
    Padding,
    check_array,
    check_grad_out,
    check_min_rank,
    check_optional,
    conv1x1_args,
    conv2d_args,
)

# Padding forms, their resolution and the output size are part of the validation both copies share; imported
# here too, where callers (the nn layers, the fast copy) have always found them.
from .checks import conv_output_size as conv_output_size
from .checks import resolve_padding as resolve_padding


@dataclass(frozen=True)
class Conv2dCache:
    xp: np.ndarray  # zero-padded input, (N, C, H + pt + pb, W + pl + pr)
    w: np.ndarray
    has_bias: bool
    x_hw: tuple[int, int]
    pads: tuple[int, int, int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    out_hw: tuple[int, int]

    @property
    def x(self) -> np.ndarray:
        """The forward's input (a view into the padded copy)."""
        pt, _, pl, _ = self.pads
        h, w = self.x_hw
        return self.xp[:, :, pt : pt + h, pl : pl + w]


def _tap(
    i: int, j: int, out_hw: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[slice, slice]:
    """The (rows, cols) slices of the padded input that kernel tap (i, j) reads for every output pixel."""
    (ho, wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    return slice(i * dh, i * dh + sh * (ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)


def conv2d_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    stride: int | Sequence[int] = 1,
    padding: Padding = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> tuple[np.ndarray, Conv2dCache]:
    """2-D convolution (cross-correlation), matching ``torch.nn.functional.conv2d``.

    Shapes: x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW), b (C_out,) or None
    -> out (N, C_out, H_out, W_out), H_out = floor((H + pt + pb - dh*(kH-1) - 1)/sh) + 1.
    Depthwise convolution is ``groups = C_in`` with w of shape (C_in*m, 1, kH, kW).
    """
    a = conv2d_args(
        "conv2d", x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, layout=CHANNELS_FIRST
    )
    x, w, b, s, d, pads, (ho, wo) = a.x, a.w, a.b, a.stride, a.dilation, a.pads, a.out_hw
    n, _, h, wd = x.shape
    co, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])))
    g, og = a.groups, co // a.groups
    xg = xp.reshape(n, g, cg, *xp.shape[2:])
    wg = w.reshape(g, og, cg, kh, kw)
    out = np.zeros((n, g, og, ho * wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap(i, j, (ho, wo), s, d)
            tap = xg[:, :, :, rows, cols].reshape(n, g, cg, ho * wo)
            out += wg[:, :, :, i, j] @ tap  # (G, og, cg) @ (N, G, cg, P) -> (N, G, og, P)
    out = out.reshape(n, co, ho, wo)
    if b is not None:
        out += b[:, None, None]
    return out, Conv2dCache(xp, w, b is not None, (h, wd), pads, s, d, a.groups, (ho, wo))


def conv2d_backward(dout: np.ndarray, cache: Conv2dCache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of ``conv2d_forward``: returns (dx, dw, db); db is None when the forward had no bias."""
    xp, w = cache.xp, cache.w
    n = xp.shape[0]
    co, cg, kh, kw = w.shape
    ho, wo = cache.out_hw
    dout = check_grad_out("conv2d", dout, (n, co, ho, wo), xp.dtype)
    g, og = cache.groups, co // cache.groups
    xg = xp.reshape(n, g, cg, *xp.shape[2:])
    wg = w.reshape(g, og, cg, kh, kw)
    dg = dout.reshape(n, g, og, ho * wo)

    dw = np.empty_like(wg)
    dxp = np.zeros_like(xg)
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap(i, j, cache.out_hw, cache.stride, cache.dilation)
            tap = xg[:, :, :, rows, cols].reshape(n, g, cg, ho * wo)
            dw[:, :, :, i, j] = (dg @ tap.transpose(0, 1, 3, 2)).sum(axis=0)
            dxp[:, :, :, rows, cols] += (wg[:, :, :, i, j].transpose(0, 2, 1) @ dg).reshape(n, g, cg, ho, wo)
    pt, _, pl, _ = cache.pads
    h, wd = cache.x_hw
    dx = np.ascontiguousarray(dxp.reshape(xp.shape)[:, :, pt : pt + h, pl : pl + wd])
    db = dout.sum(axis=(0, 2, 3)) if cache.has_bias else None
    return dx, dw.reshape(w.shape), db


@dataclass(frozen=True)
class Conv1x1Cache:
    x: np.ndarray
    w: np.ndarray  # as given: (C_out, C_in, 1, 1) or (C_out, C_in)
    has_bias: bool


def conv1x1_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray, Conv1x1Cache]:
    """Pointwise convolution as one GEMM per image: out[n] = W @ x[n].reshape(C_in, H*W) + b.

    Shapes: x (N, C_in, H, W), w (C_out, C_in, 1, 1) (checkpoint layout) or (C_out, C_in), b (C_out,)
    -> out (N, C_out, H, W). Equals ``conv2d`` with a 1x1 kernel; written as a GEMM because these layers
    carry most of Conv2Former's FLOPs.
    """
    x, w, b = conv1x1_args("conv1x1", x, w, b, CHANNELS_FIRST)
    n, c, h, wd = x.shape
    co, ci = w.shape[:2]
    out = w.reshape(co, ci) @ x.reshape(n, c, h * wd)
    if b is not None:
        out += b[:, None]
    return out.reshape(n, co, h, wd), Conv1x1Cache(x, w, b is not None)


def conv1x1_backward(dout: np.ndarray, cache: Conv1x1Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """dx[n] = W^T @ dout[n];  dW = sum_n dout[n] @ x[n]^T;  db = sum over (n, h, w) of dout."""
    x, w = cache.x, cache.w
    n, c, h, wd = x.shape
    co = w.shape[0]
    dout = check_grad_out("conv1x1", dout, (n, co, h, wd), x.dtype)
    d3 = dout.reshape(n, co, h * wd)
    w2 = w.reshape(co, c)
    dx = (w2.T @ d3).reshape(x.shape)
    dw = np.tensordot(d3, x.reshape(n, c, h * wd), axes=([0, 2], [0, 2]))  # one GEMM over (n, pixel)
    db = d3.sum(axis=(0, 2)) if cache.has_bias else None
    return dx, dw.reshape(w.shape), db


@dataclass(frozen=True)
class Conv1x1GeluCache:
    conv: Conv1x1Cache
    act: GeluCache

    @property
    def pre_activation(self) -> np.ndarray:
        """Conv1x1(x) + b, the GELU's input (what an observer records as the conv's output)."""
        return self.act.x


def conv1x1_gelu_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
) -> tuple[np.ndarray, Conv1x1GeluCache]:
    """GELU(Conv1x1(x) + b), the first layer of both Conv2Former branches (attn.att.0 and mlp.fc1).

    Here simply the two ops; one op so that the fast copy can add the bias and apply GELU in one pass.
    """
    h, conv = conv1x1_forward(x, w, b)
    y, act = gelu_forward(h)
    return y, Conv1x1GeluCache(conv, act)


def conv1x1_gelu_backward(
    dout: np.ndarray, cache: Conv1x1GeluCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Returns (dx, dw, db): GELU's backward, then the convolution's."""
    return conv1x1_backward(gelu_backward(dout, cache.act), cache.conv)


@dataclass(frozen=True)
class LinearCache:
    x: np.ndarray
    w: np.ndarray
    has_bias: bool


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray, LinearCache]:
    """Fully connected layer, ``torch.nn.functional.linear``: out = x @ W^T + b.

    Shapes: x (..., C_in) with at least one leading axis, w (C_out, C_in), b (C_out,) -> out (..., C_out).
    """
    op = "linear"
    x = check_min_rank(op, "x", x, 2, "(N, ..., C_in)")
    w = check_array(op, "w", w, 2, "(C_out, C_in)", dtype=x.dtype)
    if w.shape[1] != x.shape[-1]:
        raise OpInputError(
            f"{op}: feature mismatch: x has C_in={x.shape[-1]}, w expects C_in={w.shape[1]} (w shape {w.shape})"
        )
    b = check_optional(op, "b", b, (w.shape[0],), x.dtype, "(C_out,)")
    out = x @ w.T
    if b is not None:
        out += b
    return out, LinearCache(x, w, b is not None)


def linear_backward(dout: np.ndarray, cache: LinearCache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """dx = dout @ W;  dW = dout^T @ x (leading axes flattened);  db = dout summed over leading axes."""
    x, w = cache.x, cache.w
    dout = check_grad_out("linear", dout, (*x.shape[:-1], w.shape[0]), x.dtype)
    d2 = dout.reshape(-1, w.shape[0])
    dx = dout @ w
    dw = d2.T @ x.reshape(-1, w.shape[1])
    db = d2.sum(axis=0) if cache.has_bias else None
    return dx, dw, db
