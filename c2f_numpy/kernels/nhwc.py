"""The fast copy of the ops: the same names and signatures as :mod:`c2f_numpy.ops`, arrays channels-last.

Both satisfy :class:`c2f_numpy.backend.Ops`, the list of ops the model calls (checked by mypy and by
tests/test_backend_contract.py).

Activations are (N, H, W, C); weights stay in the checkpoint layout ((C_out, C_in/groups, kH, kW)) and are
rearranged here (they are small). What runs where:

* 1x1 convolutions and the dense convolutions of the stem and downsampling layers are one GEMM each over all
  N*H*W pixels (BLAS); the dense kxk case gathers its k*k taps first (im2col; k <= 3 here) with a Numba
  kernel (:mod:`.dense`), which also scatters the taps' gradients back (col2im), or, for non-overlapping
  patches (stride = kernel), with one transposing copy each way.
* depthwise convolutions, LayerNorm and GELU are Numba kernels (:mod:`.depthwise`, :mod:`.elementwise`).
* ops that do not depend on the layout (linear, drop path, cross-entropy) are the teaching copy's own.

Every op is checked against its teaching twin in tests/kernels (same inputs, transposed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import ops
from ..backend import fast_ops
from ..ops import mlp, modulation
from ..ops.checks import (
    CHANNELS_LAST,
    OpInputError,
    Padding,
    batch_norm2d_args,
    check_array,
    check_grad_out,
    check_optional,
    check_param,
    check_same_size_depthwise,
    conv1x1_args,
    conv2d_args,
    gelu_args,
    layer_norm_args,
    layer_scale_args,
    modulate_args,
    pointwise_weight,
    pos_residual_args,
    residual_branch_args,
)
from ..ops.composite import check_param_keys
from ..ops.norm import BatchNormStats, update_running_stats
from ..ops.regularize import drop_path_scale
from . import fused
from .channels import batch_norm_rows, batch_norm_rows_backward, channel_dot_sums, channel_mean_var, channel_sums
from .dense import col2im_patches, im2col, image_chunks, is_patchify, scatter_add_taps
from .depthwise import depthwise_backward, depthwise_forward
from .elementwise import (
    add_bias_rows,
    bias_gelu_rows,
    bias_gelu_rows_backward,
    gelu_add_flat,
    gelu_flat_f32,
    gelu_flat_f32_backward,
    gelu_flat_f64,
    gelu_flat_f64_backward,
    layer_norm_rows,
    layer_norm_rows_backward,
    mul_flat,
    mul_flat_backward,
    scaled_add_rows,
    scaled_add_rows_backward,
)
from .gemm import matmul, matmul_tn

NHWC = "(N, H, W, C)"
LN_EPS = 1e-6
CHANNEL_AXIS = -1  # read by the shared composites (ConvMod, MLP)
LAYOUT = NHWC

# Layout-free ops: the teaching copy's own functions.
linear_forward, linear_backward = ops.linear_forward, ops.linear_backward
drop_path_forward, drop_path_backward = ops.drop_path_forward, ops.drop_path_backward
cross_entropy_forward, cross_entropy_backward = ops.cross_entropy_forward, ops.cross_entropy_backward


# --------------------------------------------------------------------------------------------- convolutions
@dataclass(frozen=True)
class Conv2dCache:
    x: np.ndarray  # the input, or for non-overlapping patches the gathered taps (N*Ho*Wo, kh*kw*C_in)
    w: np.ndarray
    has_bias: bool
    x_shape: tuple[int, ...]
    pads: tuple[int, int, int, int]
    stride: tuple[int, int]
    depthwise: bool
    out_shape: tuple[int, ...]
    w_kkc: np.ndarray | None = None  # depthwise: the weight as (k, k, C), built once in the forward
    w_mat: np.ndarray | None = None  # dense: the weight as the GEMM's (kh*kw*C_in, C_out) matrix, ditto


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
    """Channels-last ``conv2d``: x (N, H, W, C_in), w (C_out, C_in/groups, kH, kW) -> (N, H_out, W_out, C_out).

    Supports what Conv2Former uses: dense convolutions (groups 1, any stride and padding) and depthwise
    convolutions (groups = C_in = C_out, stride 1, square odd kernel, equal padding on all sides).
    """
    op = "conv2d (nhwc)"
    a = conv2d_args(op, x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, layout=CHANNELS_LAST)
    x, w, b, s, d, pads, groups, (ho, wo) = a.x, a.w, a.b, a.stride, a.dilation, a.pads, a.groups, a.out_hw
    n, _, _, c = x.shape
    co, _, kh, kw = w.shape
    if d != (1, 1):
        raise OpInputError(f"{op}: the fast copy has no dilation; use the teaching copy (ops.conv2d)")
    depthwise = groups == c == co and groups > 1
    if depthwise:
        if s != (1, 1) or kh != kw or len(set(pads)) != 1:
            raise OpInputError(f"{op}: depthwise needs stride 1, a square kernel and equal padding, got "
                               f"stride {s}, kernel {kh}x{kw}, padding {pads}")  # fmt: skip
        w_kkc = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
        out = depthwise_forward(x, w_kkc, b, pads[0])
        return out, Conv2dCache(x, w, b is not None, x.shape, pads, s, True, out.shape, w_kkc)
    if groups != 1:
        raise OpInputError(f"{op}: grouped (not depthwise) convolution is not in the fast copy; use ops.conv2d")
    # Rows (i, j, c) to match the columns of cols. Both operands C-contiguous and of x's dtype: one sgemm/dgemm
    # per chunk, no hidden copy or upcast.
    w_mat = np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(kh * kw * c, co))
    out = np.empty((n, ho, wo, co), dtype=x.dtype)
    if is_patchify((kh, kw), pads, s):  # the taps are a permutation of x: one copy, one GEMM, kept for dw
        cols = im2col(x, (kh, kw), pads, s, (ho, wo))
        matmul(cols, w_mat, out=out.reshape(-1, co))
        cache_x = cols
    else:  # overlapping taps: im2col a chunk of images at a time (see dense.image_chunks), kept: x itself
        buf = None
        for n0, n1 in image_chunks(n, ho * wo * kh * kw * c * x.itemsize):
            buf = im2col(x[n0:n1], (kh, kw), pads, s, (ho, wo), buf)
            matmul(buf[: (n1 - n0) * ho * wo], w_mat, out=out[n0:n1].reshape(-1, co))
        cache_x = x
    if b is not None:
        out += b
    return out, Conv2dCache(cache_x, w, b is not None, x.shape, pads, s, False, (n, ho, wo, co), w_mat=w_mat)


def conv2d_backward(dout: np.ndarray, cache: Conv2dCache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(dx, dw, db) of the channels-last ``conv2d_forward``; dw in the checkpoint layout."""
    w = cache.w
    co, _, kh, kw = w.shape
    if cache.depthwise:
        dout = check_grad_out("conv2d (nhwc)", dout, cache.out_shape, cache.x.dtype)
        return _depthwise_conv_backward(dout, cache)
    n, _, _, c = cache.x_shape
    _, ho, wo, _ = cache.out_shape
    dout = check_grad_out("conv2d (nhwc)", dout, cache.out_shape, cache.x.dtype)
    assert cache.w_mat is not None
    d2 = dout.reshape(-1, co)
    w_mat_t = cache.w_mat.T  # the transposed operands are views that BLAS reads as they are (a flag, no copy)
    if is_patchify((kh, kw), cache.pads, cache.stride):  # cache.x is the im2col matrix (N*Ho*Wo, kh*kw*C_in)
        dw_mat = matmul_tn(cache.x, d2)
        dx = col2im_patches(matmul(d2, w_mat_t).reshape(n, ho, wo, kh, kw, c), cache.x_shape)
    else:  # cache.x is the input: the forward's chunks again, their taps gathered anew
        dx = np.empty(cache.x_shape, dtype=d2.dtype)
        dw_mat = np.zeros((kh * kw * c, co), dtype=d2.dtype)
        buf = dbuf = None
        for n0, n1 in image_chunks(n, ho * wo * kh * kw * c * d2.itemsize):
            rows = slice(0, (n1 - n0) * ho * wo)
            buf = im2col(cache.x[n0:n1], (kh, kw), cache.pads, cache.stride, (ho, wo), buf)
            d2c = d2[n0 * ho * wo : n1 * ho * wo]
            dw_mat += matmul_tn(buf[rows], d2c)  # chunk by chunk, in order: a fixed sum
            dbuf = np.empty_like(buf) if dbuf is None else dbuf
            matmul(d2c, w_mat_t, out=dbuf[rows])
            dcols = dbuf[rows].reshape(n1 - n0, ho, wo, kh, kw, c)
            scatter_add_taps(dcols, dx[n0:n1], cache.pads[0], cache.pads[2], *cache.stride)  # zeroes, then adds
    dw = dw_mat.reshape(kh, kw, c, co).transpose(3, 2, 0, 1)
    db = channel_sums(d2) if cache.has_bias else None
    return dx, np.ascontiguousarray(dw), db


def _depthwise_conv_backward(
    dout: np.ndarray, cache: Conv2dCache, dx_base: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(dx (+ dx_base), dw in the checkpoint layout (C, 1, k, k), db) of a depthwise ``conv2d_forward``."""
    assert cache.w_kkc is not None
    dx, dw_kkc, db = depthwise_backward(dout, cache.x, cache.w_kkc, cache.pads[0], cache.has_bias, dx_base)
    return dx, np.ascontiguousarray(dw_kkc.transpose(2, 0, 1))[:, None], db


@dataclass(frozen=True)
class Conv1x1Cache:
    x: np.ndarray
    w: np.ndarray
    has_bias: bool


def conv1x1_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray, Conv1x1Cache]:
    """Pointwise convolution as one GEMM over all pixels: (N*H*W, C_in) @ (C_in, C_out)."""
    x, w, b = conv1x1_args("conv1x1 (nhwc)", x, w, b, CHANNELS_LAST)
    co, ci = w.shape[:2]
    out = matmul(x.reshape(-1, ci), w.reshape(co, ci).T)
    if b is not None:
        add_bias_rows(out, b)
    return out.reshape(*x.shape[:3], co), Conv1x1Cache(x, w, b is not None)


def conv1x1_backward(dout: np.ndarray, cache: Conv1x1Cache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x, w = cache.x, cache.w
    co, ci = w.shape[:2]
    dout = check_grad_out("conv1x1 (nhwc)", dout, (*x.shape[:3], co), x.dtype)
    d2 = dout.reshape(-1, co)
    dx = matmul(d2, w.reshape(co, ci)).reshape(x.shape)
    dw = matmul_tn(d2, x.reshape(-1, ci)).reshape(w.shape)
    return dx, dw, (channel_sums(d2) if cache.has_bias else None)


@dataclass(frozen=True)
class Conv1x1GeluCache:
    conv: Conv1x1Cache  # without bias: the bias is added in the GELU pass
    h: np.ndarray  # x @ W (N, H, W, C_out), before the bias
    b: np.ndarray  # the bias, zeros if the layer has none
    has_bias: bool

    @property
    def pre_activation(self) -> np.ndarray:
        """Conv1x1(x) + b, the GELU's input (computed on demand: only an observer asks for it)."""
        return self.h + self.b


def conv1x1_gelu_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
) -> tuple[np.ndarray, Conv1x1GeluCache]:
    """GELU(Conv1x1(x) + b): the GEMM, then bias and GELU in one pass. The biased pre-activation is never
    stored; the backward adds the bias again inside its own pass (two memory streams here instead of four)."""
    h, conv = conv1x1_forward(x, w, None)
    co = h.shape[-1]
    b = check_optional("conv1x1_gelu (nhwc)", "b", b, (co,), x.dtype, "(C_out,)")
    bias = np.zeros(co, h.dtype) if b is None else b
    y = np.empty_like(h)
    bias_gelu_rows(h.reshape(-1, co), bias, y.reshape(-1, co))
    return y, Conv1x1GeluCache(conv, h, bias, b is not None)


def conv1x1_gelu_backward(
    dout: np.ndarray, cache: Conv1x1GeluCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    h = cache.h
    co = h.shape[-1]
    dout = check_grad_out("conv1x1_gelu (nhwc)", dout, h.shape, h.dtype)
    dh = np.empty_like(h)
    bias_gelu_rows_backward(h.reshape(-1, co), cache.b, dout.reshape(-1, co), dh.reshape(-1, co))
    dx, dw, _ = conv1x1_backward(dh, cache.conv)
    return dx, dw, (channel_sums(dh.reshape(-1, co)) if cache.has_bias else None)


# --------------------------------------------------------------------------------------------- norms, activations
@dataclass(frozen=True)
class LayerNormCache:
    xhat: np.ndarray  # (M, C)
    rstd: np.ndarray  # (M,)
    weight: np.ndarray
    shape: tuple[int, ...]


def layer_norm_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = LN_EPS
) -> tuple[np.ndarray, LayerNormCache]:
    """LayerNorm over the last (channel) axis of a channels-last tensor: the same math as the channels-first
    ``ops.layer_norm``, which normalises over axis 1 of NCHW."""
    x, weight, bias, eps = layer_norm_args("layer_norm (nhwc)", x, weight, bias, eps, CHANNELS_LAST)
    c = x.shape[-1]
    x2 = x.reshape(-1, c)
    y, xhat = np.empty_like(x2), np.empty_like(x2)
    rstd = np.empty(x2.shape[0], dtype=x.dtype)
    layer_norm_rows(x2, weight, bias, eps, y, xhat, rstd)
    return y.reshape(x.shape), LayerNormCache(xhat, rstd, weight, x.shape)


def layer_norm_backward(dout: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dout = check_grad_out("layer_norm (nhwc)", dout, cache.shape, cache.xhat.dtype)
    d2 = dout.reshape(cache.xhat.shape)
    dx = np.empty_like(d2)
    layer_norm_rows_backward(d2, cache.xhat, cache.rstd, cache.weight, dx)
    return dx.reshape(cache.shape), *channel_dot_sums(d2, cache.xhat)


@dataclass(frozen=True)
class GeluCache:
    x: np.ndarray
    approximate: str
    teaching: ops.activation.GeluCache | None  # the tanh form runs in the teaching copy


def gelu_forward(x: np.ndarray, approximate: str = "none") -> tuple[np.ndarray, GeluCache]:
    x = gelu_args("gelu (nhwc)", x, approximate)
    if approximate != "none":
        y, c = ops.gelu_forward(x, approximate)
        return y, GeluCache(x, approximate, c)
    y = np.empty_like(x)
    (gelu_flat_f64 if x.dtype == np.float64 else gelu_flat_f32)(x.reshape(-1), y.reshape(-1))
    return y, GeluCache(x, approximate, None)


def gelu_backward(dout: np.ndarray, cache: GeluCache) -> np.ndarray:
    if cache.teaching is not None:
        return ops.gelu_backward(dout, cache.teaching)
    dout = check_grad_out("gelu (nhwc)", dout, cache.x.shape, cache.x.dtype)
    dx = np.empty_like(dout)
    kernel = gelu_flat_f64_backward if dout.dtype == np.float64 else gelu_flat_f32_backward
    kernel(cache.x.reshape(-1), dout.reshape(-1), dx.reshape(-1))
    return dx


@dataclass(frozen=True)
class BatchNormCache:
    xhat: np.ndarray  # (M, C)
    rstd: np.ndarray
    weight: np.ndarray
    training: bool
    shape: tuple[int, ...]


def batch_norm2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    stats: BatchNormStats,
    *,
    training: bool,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, BatchNormCache, BatchNormStats]:
    """Channels-last ``batch_norm2d``: statistics per channel over all N*H*W pixels (the last axis is C)."""
    x, weight, bias, momentum, eps = batch_norm2d_args(
        "batch_norm2d (nhwc)", x, weight, bias, stats, training=training, momentum=momentum, eps=eps,
        layout=CHANNELS_LAST,
    )  # fmt: skip
    c = x.shape[-1]
    x2 = x.reshape(-1, c)
    if training:
        m = x2.shape[0]
        mean, var = channel_mean_var(x2)
        new = update_running_stats(stats, mean, var, m, momentum)
    else:
        mean, var, new = stats.running_mean.astype(x.dtype), stats.running_var, stats
    rstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    xhat, y = np.empty_like(x2), np.empty_like(x2)
    batch_norm_rows(np.ascontiguousarray(x2), mean, rstd, weight, bias, xhat, y)
    return y.reshape(x.shape), BatchNormCache(xhat, rstd, weight, training, x.shape), new


def batch_norm2d_backward(dout: np.ndarray, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dout = check_grad_out("batch_norm2d (nhwc)", dout, cache.shape, cache.xhat.dtype)
    d2 = dout.reshape(cache.xhat.shape)
    d2 = np.ascontiguousarray(d2)
    dweight, dbias = channel_dot_sums(d2, cache.xhat)
    # Train mode: the batch mean and variance depend on every x, which subtracts dy's mean and its projection on
    # xhat (docs/derivations): mean(dy) = dbias / M, mean(dy * xhat) = dweight / M.
    m = cache.xhat.shape[0]
    mean_d, mean_dx = (dbias / m, dweight / m) if cache.training else (np.zeros_like(dbias), np.zeros_like(dbias))
    dx = np.empty_like(d2)
    batch_norm_rows_backward(d2, cache.xhat, (cache.weight * cache.rstd).astype(d2.dtype), mean_d, mean_dx, dx)
    return dx.reshape(cache.shape), dweight, dbias


# --------------------------------------------------------------------------------------------- small ops
@dataclass(frozen=True)
class LayerScaleCache:
    x: np.ndarray
    gamma: np.ndarray
    scale: np.ndarray  # (N,): drop path's m / keep per sample; ones for layer scale alone


def _rows3(a: np.ndarray) -> np.ndarray:
    """(N, ..., C) as (N, P, C), C-contiguous (the scaled-add kernels' view)."""
    return np.ascontiguousarray(a).reshape(a.shape[0], -1, a.shape[-1])


def _scaled_add(base: np.ndarray | None, y: np.ndarray, gamma: np.ndarray, scale: np.ndarray) -> np.ndarray:
    y3 = _rows3(y)
    out = np.empty(y.shape, dtype=y.dtype)
    scaled_add_rows(None if base is None else _rows3(base), y3, gamma, scale, out.reshape(y3.shape))
    return out


def _scaled_add_backward(dout: np.ndarray, cache: LayerScaleCache) -> tuple[np.ndarray, np.ndarray]:
    y3 = _rows3(cache.x)
    dy = np.empty(cache.x.shape, dtype=cache.x.dtype)
    partial = np.empty((y3.shape[0], y3.shape[2]), dtype=np.float64)
    scaled_add_rows_backward(_rows3(dout), y3, cache.gamma, cache.scale, dy.reshape(y3.shape), partial)
    return dy, partial.sum(axis=0).astype(cache.x.dtype)


def layer_scale_forward(x: np.ndarray, gamma: np.ndarray) -> tuple[np.ndarray, LayerScaleCache]:
    """y = gamma * x with gamma (C,) on the last axis (the residual branch's kernel without the add)."""
    x, gamma = layer_scale_args("layer_scale (nhwc)", x, gamma, CHANNELS_LAST)
    ones = np.ones(x.shape[0], dtype=x.dtype)
    return _scaled_add(None, x, gamma, ones), LayerScaleCache(x, gamma, ones)


def layer_scale_backward(dout: np.ndarray, cache: LayerScaleCache) -> tuple[np.ndarray, np.ndarray]:
    dout = check_grad_out("layer_scale (nhwc)", dout, cache.x.shape, cache.x.dtype)
    return _scaled_add_backward(dout, cache)


def residual_branch_forward(
    x: np.ndarray,
    y: np.ndarray,
    gamma: np.ndarray,
    drop_prob: float,
    *,
    training: bool,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, LayerScaleCache]:
    """out = x + drop_path(gamma * y) in one parallel pass (the teaching copy: three). x, y (N, H, W, C)."""
    x, y, gamma = residual_branch_args("residual_branch (nhwc)", x, y, gamma, CHANNELS_LAST)
    scale = drop_path_scale("drop_path", y.shape[0], y.dtype, drop_prob, training=training, rng=rng)
    if scale is None:
        scale = np.ones(y.shape[0], dtype=y.dtype)
    return _scaled_add(x, y, gamma, scale), LayerScaleCache(y, gamma, scale)


def residual_branch_backward(dout: np.ndarray, cache: LayerScaleCache) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dgamma) in one parallel pass; the gradient of x is ``dout`` itself."""
    dout = check_grad_out("residual_branch (nhwc)", dout, cache.x.shape, cache.x.dtype)
    return _scaled_add_backward(dout, cache)


@dataclass(frozen=True)
class GlobalAvgPoolCache:
    shape: tuple[int, ...]
    dtype: np.dtype


def global_avg_pool_forward(x: np.ndarray) -> tuple[np.ndarray, GlobalAvgPoolCache]:
    """(N, H, W, C) -> (N, C)."""
    x = check_array("global_avg_pool (nhwc)", "x", x, 4, CHANNELS_LAST.name)
    return x.mean(axis=(1, 2)), GlobalAvgPoolCache(x.shape, x.dtype)


def global_avg_pool_backward(dout: np.ndarray, cache: GlobalAvgPoolCache) -> np.ndarray:
    n, h, w, c = cache.shape
    dout = check_grad_out("global_avg_pool (nhwc)", dout, (n, c), cache.dtype)
    dx = np.empty(cache.shape, dtype=cache.dtype)
    dx[...] = (dout / (h * w))[:, None, None, :]
    return dx


def modulate_forward(a: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, modulation.ModulateCache]:
    """m = a * v, one parallel pass."""
    a, v = modulate_args("modulate (nhwc)", a, v)
    m = np.empty_like(a)
    mul_flat(a.reshape(-1), v.reshape(-1), m.reshape(-1))
    return m, modulation.ModulateCache(a, v)


def modulate_backward(dm: np.ndarray, cache: modulation.ModulateCache) -> tuple[np.ndarray, np.ndarray]:
    """(da, dv) = (dm * v, dm * a) in one pass."""
    a, v = cache.a, cache.v
    dm = check_grad_out("modulate (nhwc)", dm, a.shape, a.dtype)
    da, dv = np.empty_like(a), np.empty_like(v)
    mul_flat_backward(dm.reshape(-1), a.reshape(-1), v.reshape(-1), da.reshape(-1), dv.reshape(-1))
    return da, dv


# --------------------------------------------------------------------------------------------- composites
# The compositions are the teaching copy's own (written once), run over this namespace's ops (fast_ops()).
CONVMOD_KEYS, MLP_KEYS = modulation.CONVMOD_KEYS, mlp.MLP_KEYS


def convmod_forward(x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, modulation.ConvModCache]:
    """Channels-last ConvMod: ``ops.convmod_forward`` over the fast copy's ops."""
    return modulation.convmod_forward_over(fast_ops(), x, params)


def convmod_inference(x: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """ConvMod for inference: one fused pass over groups of images (:mod:`.fused`) where the shape makes it pay,
    else the layer-by-layer :func:`convmod_forward` (which keeps the caches a backward needs)."""
    op = "convmod_inference (nhwc)"
    x = check_array(op, "x", x, 4, NHWC)
    check_param_keys(op, params, CONVMOD_KEYS)
    per = fused.images_per_group(*x.shape[:3])
    if per == 0 or any(params[key] is None for key in CONVMOD_KEYS):  # a missing bias: the layered ops handle it
        return convmod_forward(x, params)[0]
    c = x.shape[-1]
    checked = {**_named_norm(op, params, c, x.dtype), **_named_pointwise(op, params, "att.0", c, c, x.dtype),
               **_named_depthwise(op, params, "att.2", c, x.dtype), **_named_pointwise(op, params, "v", c, c, x.dtype),
               **_named_pointwise(op, params, "proj", c, c, x.dtype)}  # fmt: skip
    return fused.convmod_inference(x, checked, LN_EPS, per)


def convmod_backward(dout: np.ndarray, cache: modulation.ConvModCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """ConvMod's backward: one fused pass over groups of images (:func:`.fused.convmod_backward`) where the
    shape makes it pay (the inference pass's rule), else ``ops.convmod_backward``'s composition over this
    namespace's ops. Both read the caches of the layer-by-layer forward."""
    att0, att2, v_conv, proj = cache.att0, cache.att2, cache.v_conv, cache.proj
    x_shape = att0.conv.x.shape
    per = fused.images_per_group(*x_shape[:3])
    with_biases = att0.has_bias and att2.has_bias and v_conv.has_bias and proj.has_bias  # the composition's
    if per == 0 or not with_biases or not att2.depthwise:
        return modulation.convmod_backward_over(fast_ops(), dout, cache)
    dout = check_grad_out("convmod (nhwc)", dout, x_shape, att0.h.dtype)
    params = {"norm.weight": cache.norm.weight, "att.0.weight": att0.conv.w, "att.0.bias": att0.b,
              "att.2.weight": att2.w, "v.weight": v_conv.w, "proj.weight": proj.w}  # fmt: skip
    acts = {"norm": att0.conv.x, "hpre": att0.h, "gact": att2.x, "a": cache.mod.a, "v": cache.mod.v, "m": proj.x}
    dx, grads = fused.convmod_backward(dout, cache.norm.xhat, cache.norm.rstd, params, acts, per)
    return dx, {key: grads[key] for key in CONVMOD_KEYS}


def pos_residual_forward(h: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, mlp.PosResidualCache]:
    """h + GELU(DWConv(h)): the depthwise kernel, then GELU and the residual add in one pass."""
    h, k = pos_residual_args("pos_residual (nhwc)", h, w, CHANNELS_LAST)
    p, conv = conv2d_forward(h, w, b, padding=k // 2, groups=h.shape[-1])
    out = np.empty_like(h)
    gelu_add_flat(p.reshape(-1), h.reshape(-1), out.reshape(-1))
    return out, mlp.PosResidualCache(conv, GeluCache(p, "none", None))


def pos_residual_backward(
    dout: np.ndarray, cache: mlp.PosResidualCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(dh, dw, db) = (dout + DWConv^T(GELU'(p) * dout), ...): the teaching composite's math, with the identity
    path added inside the depthwise kernel's pass (dx starts as dout) instead of a separate sum."""
    if not cache.conv.depthwise:  # one channel: conv2d_forward took the dense path, so the plain composite
        return mlp.pos_residual_backward_over(fast_ops(), dout, cache)
    dp = gelu_backward(dout, cache.act)  # checks dout against the cached shape and dtype
    return _depthwise_conv_backward(dp, cache.conv, dx_base=dout)


def mlp_forward(x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, mlp.MlpCache]:
    """Channels-last MLP branch: ``ops.mlp_forward`` over the fast copy's ops."""
    return mlp.mlp_forward_over(fast_ops(), x, params)


def mlp_inference(x: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """The MLP branch for inference: one fused pass over groups of images (:mod:`.fused`) where the shape makes
    it pay, else the layer-by-layer :func:`mlp_forward` (which keeps the caches a backward needs)."""
    op = "mlp_inference (nhwc)"
    x = check_array(op, "x", x, 4, NHWC)
    check_param_keys(op, params, MLP_KEYS)
    per = fused.images_per_group(*x.shape[:3])
    if per == 0 or any(params[key] is None for key in MLP_KEYS):  # a missing bias: the layered ops handle it
        return mlp_forward(x, params)[0]
    return fused.mlp_inference(x, _fused_mlp_params(op, x, params), LN_EPS, per)


def _fused_mlp_params(op: str, x: np.ndarray, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The MLP parameters checked as the layered ops check them (shapes, x's dtype, contiguity), each error
    naming its checkpoint key."""
    c = x.shape[-1]
    fc1 = _named_pointwise(op, params, "fc1", c, None, x.dtype)
    d = fc1["fc1.weight"].shape[0]
    return {**_named_norm(op, params, c, x.dtype), **fc1, **_named_depthwise(op, params, "pos", d, x.dtype),
            **_named_pointwise(op, params, "fc2", d, c, x.dtype)}  # fmt: skip


def _named_norm(op: str, p: Mapping[str, np.ndarray], c: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    """A branch's LayerNorm weight and bias (C,)."""
    return {key: check_param(op, key, p[key], (c,), dtype, "(C,)") for key in ("norm.weight", "norm.bias")}


def _named_pointwise(op: str, p: Mapping[str, np.ndarray], name: str, c_in: int, c_out: int | None,
                     dtype: np.dtype) -> dict[str, np.ndarray]:  # fmt: skip
    """A 1x1 conv's weight and bias (the fused pass needs the bias; a None took the layered path)."""
    w = pointwise_weight(op, f"{name}.weight", p[f"{name}.weight"], c_in, dtype, c_out=c_out)
    b = check_param(op, f"{name}.bias", p[f"{name}.bias"], (w.shape[0],), dtype, "(C_out,)")
    return {f"{name}.weight": w, f"{name}.bias": b}


def _named_depthwise(op: str, p: Mapping[str, np.ndarray], name: str, c: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    """A same-size depthwise conv's weight (C, 1, k, k), k odd, and bias (C,)."""
    check_same_size_depthwise(op, f"{name}.weight", p[f"{name}.weight"], c)
    w = check_array(op, f"{name}.weight", p[f"{name}.weight"], 4, "(C, 1, k, k)", dtype=dtype)
    b = check_param(op, f"{name}.bias", p[f"{name}.bias"], (c,), dtype, "(C,)")
    return {f"{name}.weight": w, f"{name}.bias": b}


def mlp_backward(dout: np.ndarray, cache: mlp.MlpCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The MLP branch's backward: one fused pass over groups of images (:func:`.fused.mlp_backward`) where
    the shape makes it pay (the inference pass's rule), else ``ops.mlp_backward``'s composition over this
    namespace's ops. Both read the caches of the layer-by-layer forward."""
    fc1, pos, fc2 = cache.fc1, cache.pos, cache.fc2
    x_shape = fc1.conv.x.shape
    per = fused.images_per_group(*x_shape[:3])
    with_biases = fc1.has_bias and pos.conv.has_bias and fc2.has_bias  # the composition requires them
    if per == 0 or not with_biases or not pos.conv.depthwise or pos.act.teaching is not None:
        return mlp.mlp_backward_over(fast_ops(), dout, cache)
    dout = check_grad_out("mlp (nhwc)", dout, x_shape, fc1.h.dtype)
    params = {"norm.weight": cache.norm.weight, "fc1.weight": fc1.conv.w, "fc1.bias": fc1.b, "pos.weight": pos.conv.w,
              "fc2.weight": fc2.w}  # fmt: skip
    acts = {"norm": fc1.conv.x, "h1pre": fc1.h, "h1": pos.conv.x, "ppre": pos.act.x, "z": fc2.x}
    dx, grads = fused.mlp_backward(dout, cache.norm.xhat, cache.norm.rstd, params, acts, per)
    return dx, {key: grads[key] for key in MLP_KEYS}
