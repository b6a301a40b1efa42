"""The MLP branch of a Conv2Former block (``mlp`` in the model), with its 3x3 depthwise positional residual.

    n   = LN(x)                                 mlp.norm   (channels-first, eps 1e-6)
    h   = GELU(Conv1x1(n))                      mlp.fc1    C -> r*C (r = 4)
    h   = h + GELU(DWConv3x3(h))                mlp.pos    the positional residual (in the code, not the paper figure)
    out = Conv1x1(h)                            mlp.fc2    r*C -> C

Backward of the residual: dh_in = dh_out + DWConv3x3^T(GELU'(.) * dh_out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import Ops, teaching_ops
from .checks import check_array, pos_residual_args
from .composite import check_param_keys, layout_of, with_bias

MLP_KEYS = (
    "norm.weight",
    "norm.bias",
    "fc1.weight",
    "fc1.bias",
    "pos.weight",
    "pos.bias",
    "fc2.weight",
    "fc2.bias",
)
LN_EPS = 1e-6


@dataclass(frozen=True)
class PosResidualCache:
    conv: Any  # the namespace's conv2d cache
    act: Any  # its GELU cache


def pos_residual_forward(h: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, PosResidualCache]:
    """h + GELU(DWConv(h)), depthwise with odd kernel k and padding k//2 (k = 3 in Conv2Former).

    Shapes: h (N, C, H, W), w (C, 1, k, k), b (C,) -> out like h.
    """
    return pos_residual_forward_over(teaching_ops(), h, w, b)


def pos_residual_backward(
    dout: np.ndarray, cache: PosResidualCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Returns (dh, dw, db): the identity path plus the conv path."""
    return pos_residual_backward_over(teaching_ops(), dout, cache)


def pos_residual_forward_over(
    F: Ops, h: np.ndarray, w: np.ndarray, b: np.ndarray | None
) -> tuple[np.ndarray, PosResidualCache]:
    """:func:`pos_residual_forward` composed from the ops of ``F`` (either copy; h in ``F.LAYOUT``)."""
    h, k = pos_residual_args("pos_residual", h, w, layout_of(F))
    p, conv = F.conv2d_forward(h, w, b, padding=k // 2, groups=h.shape[F.CHANNEL_AXIS])
    g, act = F.gelu_forward(p)
    return h + g, PosResidualCache(conv, act)


def pos_residual_backward_over(
    F: Ops, dout: np.ndarray, cache: PosResidualCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`pos_residual_backward` composed from the ops of ``F``."""
    dp = F.gelu_backward(dout, cache.act)
    dh, dw, db = F.conv2d_backward(dp, cache.conv)
    return dout + dh, dw, db


@dataclass(frozen=True)
class MlpCache:
    # the caches of the namespace's own ops (teaching or fast copy)
    norm: Any
    fc1: Any  # the 1x1 conv and its GELU, one op
    pos: PosResidualCache
    fc2: Any


def mlp_forward(x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, MlpCache]:
    """MLP branch forward. Shapes: x (N, C, H, W) -> out (N, C, H, W); hidden width r*C is read from
    fc1.weight (r*C, C, 1, 1). ``params`` holds the official sub-keys (:data:`MLP_KEYS`)."""
    return mlp_forward_over(teaching_ops(), x, params)


def mlp_inference(x: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    """The MLP branch's output alone, for inference (nothing kept for a backward). Here simply
    :func:`mlp_forward`'s output; the fast copy runs it as one fused pass over groups of images."""
    return mlp_forward(x, params)[0]


def mlp_backward(dout: np.ndarray, cache: MlpCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Returns (dx, grads) with grads keyed like the params (:data:`MLP_KEYS`)."""
    return mlp_backward_over(teaching_ops(), dout, cache)


def mlp_forward_over(F: Ops, x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, MlpCache]:
    """:func:`mlp_forward` composed from the ops of ``F`` (either copy; x in ``F.LAYOUT``)."""
    op = "mlp"
    x = check_array(op, "x", x, 4, F.LAYOUT)
    check_param_keys(op, params, MLP_KEYS)
    p = params
    n_, ln = F.layer_norm_forward(x, p["norm.weight"], p["norm.bias"], LN_EPS)
    h, c1 = F.conv1x1_gelu_forward(n_, p["fc1.weight"], p["fc1.bias"])
    h, pos = F.pos_residual_forward(h, p["pos.weight"], p["pos.bias"])
    out, c2 = F.conv1x1_forward(h, p["fc2.weight"], p["fc2.bias"])
    return out, MlpCache(ln, c1, pos, c2)


def mlp_backward_over(F: Ops, dout: np.ndarray, cache: MlpCache) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`mlp_backward` composed from the ops of ``F``."""
    grads: dict[str, np.ndarray] = {}
    dh, grads["fc2.weight"], grads["fc2.bias"] = with_bias(F.conv1x1_backward(dout, cache.fc2))
    dh, grads["pos.weight"], grads["pos.bias"] = with_bias(F.pos_residual_backward(dh, cache.pos))
    dn, grads["fc1.weight"], grads["fc1.bias"] = with_bias(F.conv1x1_gelu_backward(dh, cache.fc1))
    dx, grads["norm.weight"], grads["norm.bias"] = F.layer_norm_backward(dn, cache.norm)
    return dx, {k: grads[k] for k in MLP_KEYS}
