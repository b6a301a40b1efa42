"""Every op as a test case: how to draw a problem, run it in c2f_numpy, and run it in PyTorch.

The generic tests in test_gradients.py (finite differences) and test_vs_torch.py (PyTorch cross-check) loop
over :data:`CASES`, so an op added here is checked both ways with hypothesis-generated shapes plus the
listed edge cases (batch 1, one channel, H or W = 1, kernel larger than the input).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from c2f_numpy import ops

Array = np.ndarray
Grads = dict[str, Array]
Backward = Callable[[Any], Grads]


@dataclass(frozen=True)
class Problem:
    """One input to an op: differentiable float arrays, other inputs (labels, BN statistics) and options."""

    arrays: dict[str, Array]
    aux: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    # A normalisation over exactly two values (LayerNorm with C = 2, BatchNorm over N*H*W = 2) is a sign
    # function with near-singular points where the two values meet: float32 results there are noise in every
    # library and central differences meet truncation errors of 1e5 times their rounding noise. Such problems
    # are checked against PyTorch in float64 (agreement ~1e-12), not in float32 and not by finite differences.
    two_value_norm: bool = False

    def astype(self, dtype: type) -> Problem:
        def cast(v: Any) -> Any:
            return v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v

        return replace(
            self, arrays={k: cast(v) for k, v in self.arrays.items()}, aux={k: cast(v) for k, v in self.aux.items()}
        )

    def with_arrays(self, arrays: Mapping[str, Array]) -> Problem:
        return replace(self, arrays=dict(arrays))

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        shapes = {k: v.shape for k, v in self.arrays.items()}
        return f"Problem(shapes={shapes}, aux={list(self.aux)}, kwargs={self.kwargs})"


@dataclass(frozen=True)
class OpCase:
    name: str
    problems: st.SearchStrategy[Problem]
    # c2f_numpy: (out, backward(dout) -> grads by array name), computed with the op namespace F (default: the
    # teaching copy c2f_numpy.ops; tests/kernels passes the fast copy c2f_numpy.kernels.nhwc)
    run: Callable[..., tuple[Any, Backward]]
    torch_fn: Callable[[dict[str, torch.Tensor], Problem], torch.Tensor]
    edge_cases: tuple[tuple[str, Problem], ...] = ()

    def __repr__(self) -> str:
        return self.name


def _rng(draw: st.DrawFn) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _xwb(dx: Array, dw: Array, db: Array | None, x_name: str = "x") -> Grads:
    """(dx, dw, db) of a layer with an optional bias, as grads named like the problem's arrays."""
    return {x_name: dx, "w": dw} | ({"b": db} if db is not None else {})


def _normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> Array:
    return rng.standard_normal(shape) * scale


# --------------------------------------------------------------------------------------------- conv2d
KERNELS = (1, 2, 3, 4, 5, 7, 11, 21)


def conv2d_problem(
    rng: np.random.Generator,
    n: int,
    c: int,
    h: int,
    w: int,
    co: int,
    k: int | tuple[int, int],
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    bias: bool = True,
) -> Problem:
    kh, kw = (k, k) if isinstance(k, int) else k
    arrays = {"x": _normal(rng, n, c, h, w), "w": _normal(rng, co, c // groups, kh, kw)}
    if bias:
        arrays["b"] = _normal(rng, co)
    return Problem(arrays, kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


@st.composite
def conv2d_problems(draw: st.DrawFn) -> Problem:
    if draw(st.booleans()):  # depthwise, possibly with a channel multiplier
        c = draw(st.integers(1, 4))
        groups, co = c, c * draw(st.integers(1, 2))
    else:
        groups = draw(st.integers(1, 3))
        c, co = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh = draw(st.sampled_from(KERNELS))
    kw = kh if draw(st.booleans()) else draw(st.sampled_from(KERNELS))
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    stride = draw(st.sampled_from([1, 1, 2, 3, (1, 2), (2, 1)]))
    dilation = draw(st.sampled_from([1, 1, 1, 2, (1, 2)]))
    dh, dw = _pair(dilation)
    # the least padding (per side, or in total for "four") that leaves a non-empty output
    need_h, need_w = max(0, dh * (kh - 1) + 1 - h), max(0, dw * (kw - 1) + 1 - w)
    mode = draw(st.sampled_from(["int", "pair", "four", "same", "valid"]))
    padding: Any
    if mode == "same" or (mode == "valid" and need_h == need_w == 0):
        padding = mode
        if mode == "same":
            stride = 1
    elif mode == "four":
        t, b, l, r = (draw(st.integers(0, 3)) for _ in range(4))
        padding = (t, b + max(0, need_h - t - b), l, r + max(0, need_w - l - r))
    else:
        ph = max(draw(st.integers(0, 3)), math.ceil(need_h / 2))
        pw = max(draw(st.integers(0, 3)), math.ceil(need_w / 2))
        padding = max(ph, pw) if mode in ("int", "valid") else (ph, pw)
    return conv2d_problem(
        _rng(draw), n, c, h, w, co, (kh, kw), stride=stride, padding=padding, dilation=dilation,
        groups=groups, bias=draw(st.booleans()),
    )  # fmt: skip


def _run_conv2d(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    a = p.arrays
    out, cache = F.conv2d_forward(a["x"], a["w"], a.get("b"), **p.kwargs)

    def backward(dout: Array) -> Grads:
        return _xwb(*F.conv2d_backward(dout, cache))

    return out, backward


def _torch_conv2d(t: dict[str, torch.Tensor], p: Problem) -> torch.Tensor:
    kw = dict(p.kwargs)
    x = t["x"]
    if isinstance(kw["padding"], tuple) and len(kw["padding"]) == 4:
        top, bottom, left, right = kw.pop("padding")
        x = F.pad(x, (left, right, top, bottom))
    return F.conv2d(x, t["w"], t.get("b"), **kw)


_E = np.random.default_rng(12345)  # fixed inputs for the edge cases
CONV2D_EDGES = (
    ("batch1_channel1", conv2d_problem(_E, 1, 1, 5, 4, 1, 3, padding=1)),
    ("H1", conv2d_problem(_E, 2, 2, 1, 6, 3, (1, 3), padding=(0, 1))),
    ("W1", conv2d_problem(_E, 2, 2, 6, 1, 2, 3, padding=1)),
    ("k21_on_5x5", conv2d_problem(_E, 1, 2, 5, 5, 2, 21, padding=10, groups=2)),
    ("k11_depthwise_3x4", conv2d_problem(_E, 2, 3, 3, 4, 3, 11, padding=5, groups=3)),
    ("patchify_k2_s2_odd", conv2d_problem(_E, 2, 3, 7, 9, 4, 2, stride=2)),
    ("stem_k3_s2", conv2d_problem(_E, 2, 3, 9, 8, 4, 3, stride=2, padding=1, bias=False)),
    ("even_k_same", conv2d_problem(_E, 1, 2, 5, 6, 2, 4, padding="same")),
)

# --------------------------------------------------------------------------------------------- conv1x1, linear


@st.composite
def conv1x1_problems(draw: st.DrawFn) -> Problem:
    rng = _rng(draw)
    n, c, co = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    wshape = (co, c, 1, 1) if draw(st.booleans()) else (co, c)
    arrays = {"x": _normal(rng, n, c, h, w), "w": _normal(rng, *wshape)}
    if draw(st.booleans()):
        arrays["b"] = _normal(rng, co)
    return Problem(arrays)


def _run_conv1x1(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    out, cache = F.conv1x1_forward(p.arrays["x"], p.arrays["w"], p.arrays.get("b"))

    def backward(dout: Array) -> Grads:
        return _xwb(*F.conv1x1_backward(dout, cache))

    return out, backward


def _torch_conv1x1(t: dict[str, torch.Tensor], p: Problem) -> torch.Tensor:
    w = t["w"]
    return F.conv2d(t["x"], w.reshape(w.shape[0], w.shape[1], 1, 1), t.get("b"))


def _run_conv1x1_gelu(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    out, cache = F.conv1x1_gelu_forward(p.arrays["x"], p.arrays["w"], p.arrays.get("b"))

    def backward(dout: Array) -> Grads:
        return _xwb(*F.conv1x1_gelu_backward(dout, cache))

    return out, backward


@st.composite
def linear_problems(draw: st.DrawFn) -> Problem:
    rng = _rng(draw)
    lead = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    ci, co = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    arrays = {"x": _normal(rng, *lead, ci), "w": _normal(rng, co, ci)}
    if draw(st.booleans()):
        arrays["b"] = _normal(rng, co)
    return Problem(arrays)


def _run_linear(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    out, cache = F.linear_forward(p.arrays["x"], p.arrays["w"], p.arrays.get("b"))

    def backward(dout: Array) -> Grads:
        return _xwb(*F.linear_backward(dout, cache))

    return out, backward


# --------------------------------------------------------------------------------------------- norms


@st.composite
def layer_norm_problems(draw: st.DrawFn) -> Problem:
    rng = _rng(draw)
    c = draw(st.integers(1, 8))
    spatial = draw(st.lists(st.integers(1, 5), min_size=0, max_size=2))
    x = _normal(rng, draw(st.integers(1, 3)), c, *spatial, scale=draw(st.sampled_from([0.1, 1.0, 10.0])))
    x += _normal(rng, 1, c, *([1] * len(spatial)), scale=3.0)  # per-channel offsets: a mean worth removing
    arrays = {"x": x, "weight": _normal(rng, c), "bias": _normal(rng, c)}
    return Problem(arrays, kwargs={"eps": draw(st.sampled_from([1e-6, 1e-5, 0.1]))}, two_value_norm=c == 2)


def _run_layer_norm(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    a = p.arrays
    out, cache = F.layer_norm_forward(a["x"], a["weight"], a["bias"], **p.kwargs)

    def backward(dout: Array) -> Grads:
        dx, dw, db = F.layer_norm_backward(dout, cache)
        return {"x": dx, "weight": dw, "bias": db}

    return out, backward


def _torch_layer_norm(t: dict[str, torch.Tensor], p: Problem) -> torch.Tensor:
    # torch's own LayerNorm kernel over the last axis, with the channel axis moved there and back
    x = t["x"].movedim(1, -1)
    return F.layer_norm(x, (x.shape[-1],), t["weight"], t["bias"], p.kwargs["eps"]).movedim(-1, 1)


def batch_norm_problem(
    rng: np.random.Generator, n: int, c: int, h: int, w: int, training: bool, momentum: float | None = 0.1
) -> Problem:
    x = _normal(rng, n, c, h, w) + _normal(rng, 1, c, 1, 1, scale=2.0)
    stats = ops.BatchNormStats(_normal(rng, c), rng.uniform(0.5, 2.0, c), int(rng.integers(0, 5)))
    arrays = {"x": x, "weight": _normal(rng, c), "bias": _normal(rng, c)}
    kwargs = {"training": training, "momentum": momentum, "eps": 1e-5}
    return Problem(arrays, {"stats": stats}, kwargs, two_value_norm=training and n * h * w == 2)


@st.composite
def batch_norm_problems(draw: st.DrawFn) -> Problem:
    training = draw(st.booleans())
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    if training and n * h * w < 2:
        n = 2
    return batch_norm_problem(_rng(draw), n, draw(st.integers(1, 5)), h, w, training)


def _bn_stats(p: Problem) -> ops.BatchNormStats:
    s = p.aux["stats"]
    dtype = p.arrays["x"].dtype
    return ops.BatchNormStats(s.running_mean.astype(dtype), s.running_var.astype(dtype), s.num_batches_tracked)


def _run_batch_norm(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    a = p.arrays
    out, cache, _ = F.batch_norm2d_forward(a["x"], a["weight"], a["bias"], _bn_stats(p), **p.kwargs)

    def backward(dout: Array) -> Grads:
        dx, dw, db = F.batch_norm2d_backward(dout, cache)
        return {"x": dx, "weight": dw, "bias": db}

    return out, backward


def _torch_batch_norm(t: dict[str, torch.Tensor], p: Problem) -> torch.Tensor:
    s = _bn_stats(p)
    return F.batch_norm(
        t["x"],
        torch.tensor(s.running_mean),
        torch.tensor(s.running_var),
        t["weight"],
        t["bias"],
        training=p.kwargs["training"],
        momentum=p.kwargs["momentum"] or 0.1,
        eps=p.kwargs["eps"],
    )  # fmt: skip  (F.batch_norm has no cumulative mode; momentum only moves the stats, tested in test_norm.py)


# --------------------------------------------------------------------------------------------- elementwise


@st.composite
def gelu_problems(draw: st.DrawFn) -> Problem:
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    x = _normal(_rng(draw), *shape, scale=draw(st.sampled_from([0.5, 3.0, 8.0])))
    return Problem({"x": x}, kwargs={"approximate": draw(st.sampled_from(["none", "tanh"]))})


def _run_gelu(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    out, cache = F.gelu_forward(p.arrays["x"], **p.kwargs)
    return out, lambda dout: {"x": F.gelu_backward(dout, cache)}


@st.composite
def modulate_problems(draw: st.DrawFn) -> Problem:
    rng = _rng(draw)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    return Problem({"a": _normal(rng, *shape), "v": _normal(rng, *shape)})


def _run_modulate(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    out, cache = F.modulate_forward(p.arrays["a"], p.arrays["v"])

    def backward(dout: Array) -> Grads:
        da, dv = F.modulate_backward(dout, cache)
        return {"a": da, "v": dv}

    return out, backward


@st.composite
def layer_scale_problems(draw: st.DrawFn) -> Problem:
    rng = _rng(draw)
    c = draw(st.integers(1, 6))
    spatial = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2))
    return Problem({"x": _normal(rng, draw(st.integers(1, 3)), c, *spatial), "gamma": _normal(rng, c)})


def _run_layer_scale(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    out, cache = F.layer_scale_forward(p.arrays["x"], p.arrays["gamma"])

    def backward(dout: Array) -> Grads:
        dx, dg = F.layer_scale_backward(dout, cache)
        return {"x": dx, "gamma": dg}

    return out, backward


def _torch_layer_scale(t: dict[str, torch.Tensor], p: Problem) -> torch.Tensor:
    x, g = t["x"], t["gamma"]
    return g.reshape(g.shape + (1,) * (x.ndim - 2)) * x


@st.composite
def drop_path_problems(draw: st.DrawFn) -> Problem:
    shape = (draw(st.integers(1, 8)), draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kwargs = {
        "drop_prob": draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])),
        "training": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }
    return Problem({"x": _normal(_rng(draw), *shape)}, kwargs=kwargs)


def _run_drop_path(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    kw = p.kwargs
    rng = np.random.default_rng(kw["seed"])
    out, cache = F.drop_path_forward(p.arrays["x"], kw["drop_prob"], training=kw["training"], rng=rng)
    return out, lambda dout: {"x": F.drop_path_backward(dout, cache)}


def _torch_drop_path(t: dict[str, torch.Tensor], p: Problem) -> torch.Tensor:
    # timm's drop_path (scale_by_keep=True): x * bernoulli(keep) / keep per sample; the mask is the documented
    # draw rng.random(N) < keep from the same seed, so both sides drop the same samples.
    x, kw = t["x"], p.kwargs
    keep = 1.0 - kw["drop_prob"]
    if not kw["training"] or kw["drop_prob"] == 0.0:
        return x * 1.0
    mask = np.random.default_rng(kw["seed"]).random(x.shape[0]) < keep
    random_tensor = torch.tensor(mask, dtype=x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    if keep > 0:
        random_tensor = random_tensor / keep
    return x * random_tensor


@st.composite
def pool_problems(draw: st.DrawFn) -> Problem:
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    return Problem({"x": _normal(_rng(draw), *shape)})


def _run_pool(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    out, cache = F.global_avg_pool_forward(p.arrays["x"])
    return out, lambda dout: {"x": F.global_avg_pool_backward(dout, cache)}


# --------------------------------------------------------------------------------------------- loss


@st.composite
def cross_entropy_problems(draw: st.DrawFn) -> Problem:
    rng = _rng(draw)
    n, k = draw(st.integers(1, 6)), draw(st.integers(1, 10))
    logits = _normal(rng, n, k, scale=draw(st.sampled_from([1.0, 5.0, 50.0])))
    smoothing = draw(st.sampled_from([0.0, 0.1, 0.37, 1.0]))
    kind = draw(st.sampled_from(["index", "probabilities", "unnormalised"]))
    target: Array
    if kind == "index":
        target = rng.integers(0, k, n)
    elif kind == "probabilities":  # mixup-style targets, rows summing to 1
        target = rng.dirichlet(np.ones(k), n)
    else:  # soft targets whose rows do not sum to 1 (the gradient needs their row sums)
        target = rng.uniform(0.0, 2.0, (n, k))
    return Problem({"logits": logits}, {"target": target}, {"label_smoothing": smoothing})


def _run_cross_entropy(p: Problem, F: Any = ops) -> tuple[float, Backward]:
    loss, cache = F.cross_entropy_forward(p.arrays["logits"], p.aux["target"], **p.kwargs)
    return loss, lambda dloss: {"logits": F.cross_entropy_backward(dloss, cache)}


def _torch_cross_entropy(t: dict[str, torch.Tensor], p: Problem) -> torch.Tensor:
    target = torch.tensor(p.aux["target"])
    return F.cross_entropy(t["logits"], target, label_smoothing=p.kwargs["label_smoothing"])


# --------------------------------------------------------------------------------------------- composites


def convmod_problem(rng: np.random.Generator, n: int, c: int, h: int, w: int, k: int) -> Problem:
    shapes = {
        "norm.weight": (c,), "norm.bias": (c,), "att.0.weight": (c, c, 1, 1), "att.0.bias": (c,),
        "att.2.weight": (c, 1, k, k), "att.2.bias": (c,), "v.weight": (c, c, 1, 1), "v.bias": (c,),
        "proj.weight": (c, c, 1, 1), "proj.bias": (c,),
    }  # fmt: skip
    arrays = {"x": _normal(rng, n, c, h, w)} | {name: _normal(rng, *s) for name, s in shapes.items()}
    return Problem(arrays, two_value_norm=c == 2)


@st.composite
def convmod_problems(draw: st.DrawFn) -> Problem:
    dims = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    return convmod_problem(_rng(draw), *dims, k=draw(st.sampled_from([1, 3, 5, 7, 11, 21])))


def _run_convmod(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    params = {k: p.arrays[k] for k in F.CONVMOD_KEYS}
    out, cache = F.convmod_forward(p.arrays["x"], params)

    def backward(dout: Array) -> Grads:
        dx, grads = F.convmod_backward(dout, cache)
        return {"x": dx} | grads

    return out, backward


def torch_convmod(t: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ConvMod as the official code computes it (attn.norm, attn.att.0/1/2, attn.v, attn.proj)."""
    c = x.shape[1]
    n = F.layer_norm(x.movedim(1, -1), (c,), t["norm.weight"], t["norm.bias"], 1e-6).movedim(-1, 1)
    k = t["att.2.weight"].shape[-1]
    a = F.conv2d(F.gelu(F.conv2d(n, t["att.0.weight"], t["att.0.bias"])), t["att.2.weight"], t["att.2.bias"],
                 padding=k // 2, groups=c)  # fmt: skip
    return F.conv2d(a * F.conv2d(n, t["v.weight"], t["v.bias"]), t["proj.weight"], t["proj.bias"])


@st.composite
def pos_residual_problems(draw: st.DrawFn) -> Problem:
    rng = _rng(draw)
    n, c, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    k = draw(st.sampled_from([1, 3, 5]))
    return Problem({"h": _normal(rng, n, c, h, w), "w": _normal(rng, c, 1, k, k), "b": _normal(rng, c)})


def _run_pos_residual(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    a = p.arrays
    out, cache = F.pos_residual_forward(a["h"], a["w"], a["b"])

    def backward(dout: Array) -> Grads:
        return _xwb(*F.pos_residual_backward(dout, cache), x_name="h")

    return out, backward


def torch_pos_residual(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return h + F.gelu(F.conv2d(h, w, b, padding=w.shape[-1] // 2, groups=h.shape[1]))


def mlp_problem(rng: np.random.Generator, n: int, c: int, h: int, w: int, ratio: int) -> Problem:
    hid = c * ratio
    shapes = {
        "norm.weight": (c,), "norm.bias": (c,), "fc1.weight": (hid, c, 1, 1), "fc1.bias": (hid,),
        "pos.weight": (hid, 1, 3, 3), "pos.bias": (hid,), "fc2.weight": (c, hid, 1, 1), "fc2.bias": (c,),
    }  # fmt: skip
    arrays = {"x": _normal(rng, n, c, h, w)} | {name: _normal(rng, *s) for name, s in shapes.items()}
    return Problem(arrays, two_value_norm=c == 2)


@st.composite
def mlp_problems(draw: st.DrawFn) -> Problem:
    dims = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    return mlp_problem(_rng(draw), *dims, ratio=draw(st.integers(1, 4)))


def _run_mlp(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    out, cache = F.mlp_forward(p.arrays["x"], {k: p.arrays[k] for k in F.MLP_KEYS})

    def backward(dout: Array) -> Grads:
        dx, grads = F.mlp_backward(dout, cache)
        return {"x": dx} | grads

    return out, backward


def torch_mlp(t: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The MLP branch as the official code computes it (mlp.norm, fc1, GELU, pos residual, fc2)."""
    c = x.shape[1]
    n = F.layer_norm(x.movedim(1, -1), (c,), t["norm.weight"], t["norm.bias"], 1e-6).movedim(-1, 1)
    h = F.gelu(F.conv2d(n, t["fc1.weight"], t["fc1.bias"]))
    return F.conv2d(torch_pos_residual(h, t["pos.weight"], t["pos.bias"]), t["fc2.weight"], t["fc2.bias"])


@st.composite
def residual_branch_problems(draw: st.DrawFn) -> Problem:
    rng = _rng(draw)
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    kwargs = {
        "drop_prob": draw(st.sampled_from([0.0, 0.2, 0.5, 1.0])),
        "training": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }
    arrays = {"x": _normal(rng, *shape), "y": _normal(rng, *shape), "gamma": _normal(rng, shape[1])}
    return Problem(arrays, kwargs=kwargs)


def _run_residual_branch(p: Problem, F: Any = ops) -> tuple[Array, Backward]:
    a, kw = p.arrays, p.kwargs
    rng = np.random.default_rng(kw["seed"])
    out, cache = F.residual_branch_forward(a["x"], a["y"], a["gamma"], kw["drop_prob"], training=kw["training"],
                                           rng=rng)  # fmt: skip

    def backward(dout: Array) -> Grads:
        dy, dg = F.residual_branch_backward(dout, cache)
        return {"x": dout, "y": dy, "gamma": dg}  # the identity path: dx is dout, by the op's contract

    return out, backward


def _torch_residual_branch(t: dict[str, torch.Tensor], p: Problem) -> torch.Tensor:
    return t["x"] + _torch_drop_path({"x": _torch_layer_scale({"x": t["y"], "gamma": t["gamma"]}, p)}, p)


E2 = np.random.default_rng(54321)
CASES = (
    OpCase("conv2d", conv2d_problems(), _run_conv2d, _torch_conv2d, CONV2D_EDGES),
    OpCase(
        "conv1x1", conv1x1_problems(), _run_conv1x1, _torch_conv1x1,
        (("batch1_channel1_1x1", Problem({"x": _normal(E2, 1, 1, 1, 1), "w": _normal(E2, 3, 1, 1, 1)})),),
    ),
    OpCase(
        "conv1x1_gelu", conv1x1_problems(), _run_conv1x1_gelu, lambda t, p: F.gelu(_torch_conv1x1(t, p)),
        (("batch1_channel1_1x1", Problem({"x": _normal(E2, 1, 1, 1, 1), "w": _normal(E2, 3, 1, 1, 1)})),),
    ),
    OpCase("linear", linear_problems(), _run_linear, lambda t, p: F.linear(t["x"], t["w"], t.get("b"))),
    OpCase("layer_norm", layer_norm_problems(), _run_layer_norm, _torch_layer_norm),
    OpCase(
        "batch_norm2d", batch_norm_problems(), _run_batch_norm, _torch_batch_norm,
        (("train_batch1_H1", batch_norm_problem(E2, 1, 3, 1, 4, True)),
         ("eval_batch1_1x1", batch_norm_problem(E2, 1, 2, 1, 1, False)),
         ("cumulative_momentum", batch_norm_problem(E2, 2, 2, 2, 3, True, momentum=None))),
    ),
    OpCase("gelu", gelu_problems(), _run_gelu, lambda t, p: F.gelu(t["x"], approximate=p.kwargs["approximate"])),
    OpCase("modulate", modulate_problems(), _run_modulate, lambda t, p: t["a"] * t["v"]),
    OpCase("layer_scale", layer_scale_problems(), _run_layer_scale, _torch_layer_scale),
    OpCase("drop_path", drop_path_problems(), _run_drop_path, _torch_drop_path),
    OpCase(
        "residual_branch", residual_branch_problems(), _run_residual_branch, _torch_residual_branch,
        (("batch1_channel1_dropped", Problem({"x": _normal(E2, 1, 1, 2, 1), "y": _normal(E2, 1, 1, 2, 1),
                                              "gamma": _normal(E2, 1)},
                                             kwargs={"drop_prob": 1.0, "training": True, "seed": 3})),),
    ),
    OpCase("global_avg_pool", pool_problems(), _run_pool, lambda t, p: t["x"].mean(dim=(2, 3))),
    OpCase("cross_entropy", cross_entropy_problems(), _run_cross_entropy, _torch_cross_entropy),
    OpCase(
        "convmod", convmod_problems(), _run_convmod, lambda t, p: torch_convmod(t, t["x"]),
        (("k11_on_3x2_batch1_channel1", convmod_problem(E2, 1, 1, 3, 2, 11)),
         ("k21_H1", convmod_problem(E2, 2, 3, 1, 5, 21)),
         ("k7_official_small", convmod_problem(E2, 2, 8, 6, 6, 7))),
    ),
    OpCase(
        "pos_residual", pos_residual_problems(), _run_pos_residual,
        lambda t, p: torch_pos_residual(t["h"], t["w"], t["b"]),
    ),
    OpCase(
        "mlp", mlp_problems(), _run_mlp, lambda t, p: torch_mlp(t, t["x"]),
        (("batch1_1x1", mlp_problem(E2, 1, 3, 1, 1, 4)), ("W1_ratio4", mlp_problem(E2, 2, 3, 5, 1, 4))),
    ),
)  # fmt: skip

EDGE_CASES = [(case, name, problem) for case in CASES for name, problem in case.edge_cases]
