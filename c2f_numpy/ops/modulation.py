"""Convolutional modulation (ConvMod), the "attention" branch of a Conv2Former block (``attn`` in the model).

    n   = LN(x)                               layer_norm, channels-first, eps 1e-6      attn.norm
    a   = DWConv_k(GELU(Conv1x1(n)))          1x1 conv, exact GELU, depthwise k x k     attn.att.0, attn.att.2
    v   = Conv1x1(n)                                                                    attn.v
    out = Conv1x1(a * v)                      the Hadamard product is the "modulation"  attn.proj

The large-kernel depthwise output ``a`` plays the role of attention weights: it modulates the value ``v``
pixel by pixel, as softmax(QK^T) modulates V in self-attention, at a cost linear in the number of pixels.

Backward is the product rule through both branches: with dm = d(a*v),
da = dm * v and dv = dm * a; n receives the sum of the gradients of both branches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import Ops, teaching_ops
from .checks import check_array, check_grad_out, check_same_size_depthwise, modulate_args
from .composite import check_param_keys, with_bias

CONVMOD_KEYS = (
    "norm.weight",
    "norm.bias",
    "att.0.weight",
    "att.0.bias",
    "att.2.weight",
    "att.2.bias",
    "v.weight",
    "v.bias",
    "proj.weight",
    "proj.bias",
)
LN_EPS = 1e-6


@dataclass(frozen=True)
class ModulateCache:
    a: np.ndarray
    v: np.ndarray


def modulate_forward(a: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ModulateCache]:
    """The modulation m = a * v (elementwise; a and v of one shape and dtype, any layout)."""
    a, v = modulate_args("modulate", a, v)
    return np.multiply(a, v, out=np.empty_like(a)), ModulateCache(a, v)  # out=: an array even when 0-d


def modulate_backward(dm: np.ndarray, cache: ModulateCache) -> tuple[np.ndarray, np.ndarray]:
    """Returns (da, dv) = (dm * v, dm * a)."""
    dm = check_grad_out("modulate", dm, cache.a.shape, cache.a.dtype)
    return np.multiply(dm, cache.v, out=np.empty_like(dm)), np.multiply(dm, cache.a, out=np.empty_like(dm))


@dataclass(frozen=True)
class ConvModCache:
    # the caches of the namespace's own ops (teaching or fast copy)
    norm: Any
    att0: Any  # the 1x1 conv and its GELU, one op
    att2: Any
    v_conv: Any
    mod: ModulateCache
    proj: Any


def convmod_forward(x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ConvModCache]:
    """ConvMod forward. Shapes: x (N, C, H, W) -> out (N, C, H, W).

    ``params`` holds the official sub-keys (:data:`CONVMOD_KEYS`): norm.weight/bias (C,), att.0.weight
    (C, C, 1, 1), att.2.weight (C, 1, k, k) with k odd (padding k // 2 keeps H, W), v.weight and
    proj.weight (C, C, 1, 1), and a (C,) bias for each conv.
    """
    return convmod_forward_over(teaching_ops(), x, params)


def convmod_inference(x: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """ConvMod's output alone, for inference (nothing kept for a backward). Here simply :func:`convmod_forward`'s
    output; the fast copy runs it as one fused pass over groups of images."""
    return convmod_forward(x, params)[0]


def convmod_backward(dout: np.ndarray, cache: ConvModCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Returns (dx, grads) with grads keyed like the params (:data:`CONVMOD_KEYS`)."""
    return convmod_backward_over(teaching_ops(), dout, cache)


def convmod_forward_over(F: Ops, x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ConvModCache]:
    """:func:`convmod_forward` composed from the ops of ``F`` (either copy; x in ``F.LAYOUT``)."""
    op = "convmod"
    x = check_array(op, "x", x, 4, F.LAYOUT)
    check_param_keys(op, params, CONVMOD_KEYS)
    c = x.shape[F.CHANNEL_AXIS]
    k = check_same_size_depthwise(op, "att.2.weight", params["att.2.weight"], c)
    p = params
    n_, ln = F.layer_norm_forward(x, p["norm.weight"], p["norm.bias"], LN_EPS)
    g, c0 = F.conv1x1_gelu_forward(n_, p["att.0.weight"], p["att.0.bias"])
    a, c2 = F.conv2d_forward(g, p["att.2.weight"], p["att.2.bias"], padding=k // 2, groups=c)
    v, cv = F.conv1x1_forward(n_, p["v.weight"], p["v.bias"])
    m, cm = F.modulate_forward(a, v)
    out, cp = F.conv1x1_forward(m, p["proj.weight"], p["proj.bias"])
    return out, ConvModCache(ln, c0, c2, cv, cm, cp)


def convmod_backward_over(F: Ops, dout: np.ndarray, cache: ConvModCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`convmod_backward` composed from the ops of ``F``."""
    grads: dict[str, np.ndarray] = {}
    dm, grads["proj.weight"], grads["proj.bias"] = with_bias(F.conv1x1_backward(dout, cache.proj))
    da, dv = F.modulate_backward(dm, cache.mod)
    dn_v, grads["v.weight"], grads["v.bias"] = with_bias(F.conv1x1_backward(dv, cache.v_conv))
    dg, grads["att.2.weight"], grads["att.2.bias"] = with_bias(F.conv2d_backward(da, cache.att2))
    dn_a, grads["att.0.weight"], grads["att.0.bias"] = with_bias(F.conv1x1_gelu_backward(dg, cache.att0))
    dx, grads["norm.weight"], grads["norm.bias"] = F.layer_norm_backward(dn_a + dn_v, cache.norm)
    return dx, {k: grads[k] for k in CONVMOD_KEYS}
