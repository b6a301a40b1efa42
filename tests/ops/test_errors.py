"""Bad input gets a clear error naming the op, the argument, what was expected and what came.

Every case runs against both copies of the ops, the teaching copy (c2f_numpy.ops, NCHW) and the fast copy
(c2f_numpy.kernels.nhwc, NHWC): both validate through c2f_numpy.ops.checks, so the same bad call must raise
exactly the same exception class in both, with a message naming the op ("conv2d" / "conv2d (nhwc)") and the
argument. Ops the fast copy takes from the teaching copy (linear, drop path, cross-entropy, the ConvMod and MLP
compositions) carry the teaching copy's name in both.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from c2f_numpy import ops
from c2f_numpy.kernels import nhwc
from c2f_numpy.ops import OpDTypeError, OpInputError, OpTypeError

R = np.random.default_rng(0)
X = R.standard_normal((2, 4, 6, 6))  # NCHW; act() gives it in a copy's own layout
W3 = R.standard_normal((4, 4, 3, 3))
DW = R.standard_normal((4, 1, 3, 3))
W1 = R.standard_normal((4, 4, 1, 1))
C4 = R.standard_normal(4)
BN = ops.BatchNormStats.initial(4, np.float64)
L = np.ascontiguousarray(X[:, :, 0, 0])  # (2, 4): logits, or features for linear

COPIES = [pytest.param(ops, id="teaching"), pytest.param(nhwc, id="fast")]


def act(F: ModuleType, a: np.ndarray) -> np.ndarray:
    """A 4-d NCHW activation in the layout of the copy F (a fresh C-contiguous array either way)."""
    return np.ascontiguousarray(a if F is ops else a.transpose(0, 2, 3, 1))


def x(F: ModuleType) -> np.ndarray:
    return act(F, X)


def convmod_params(c: int = 4, k: int = 3) -> dict[str, np.ndarray]:
    p = {k_: R.standard_normal((c,)) for k_ in ops.CONVMOD_KEYS if k_.endswith("bias") or k_.startswith("norm")}
    p |= {name: R.standard_normal((c, c, 1, 1)) for name in ("att.0.weight", "v.weight", "proj.weight")}
    p["att.2.weight"] = R.standard_normal((c, 1, k, k))
    return p


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


def bn(F: ModuleType, stats: Any = BN, training: Any = True, **kw: Any) -> Any:
    return F.batch_norm2d_forward(x(F), C4, C4, stats, training=training, **kw)


def conv(F: ModuleType, **kw: Any) -> Any:
    return F.conv2d_forward(x(F), W3, None, **kw)


def backward_of(forward: Callable[[ModuleType], tuple[Any, Any]], backward: str, dout: Callable[[Any], Any]) -> Any:
    """A call that runs a valid forward, then its backward with a bad upstream gradient dout(out)."""

    def call(F: ModuleType) -> Any:
        out, cache = forward(F)
        return getattr(F, backward)(dout(out), cache)

    return call


# (id, call(F), exception class, message regex; "{F}" stands for " \(nhwc\)" in the fast copy, "" in the teaching one)
Case = tuple[str, Callable[[ModuleType], Any], type[Exception], str]
CASES: list[Case] = [
    # ---- wrong rank
    ("conv2d x rank 3", lambda F: F.conv2d_forward(x(F)[0], W3), OpInputError,
     r"conv2d{F}: x must have 4 dims \(N, [CHW, ]+\), got shape \(\d, 6, \d\)"),
    ("conv2d w rank 3", lambda F: F.conv2d_forward(x(F), W3[0]), OpInputError, r"conv2d{F}: w must have 4 dims"),
    ("conv1x1 x rank 3", lambda F: F.conv1x1_forward(x(F)[0], W1), OpInputError,
     r"conv1x1{F}: x must have 4 dims"),
    ("linear x rank 1", lambda F: F.linear_forward(C4, W3[:, :, 0, 0]), OpInputError,
     r"linear: x must have at least 2 dims \(N, ..., C_in\), got shape \(4,\)"),
    ("layer_norm x rank 1", lambda F: F.layer_norm_forward(C4, C4, C4), OpInputError,
     r"layer_norm{F}: x must have at least 2 dims"),
    ("layer_scale x rank 1", lambda F: F.layer_scale_forward(C4, C4), OpInputError,
     r"layer_scale{F}: x must have at least 2 dims"),
    ("residual_branch x rank 1", lambda F: F.residual_branch_forward(C4, C4, C4, 0.0, training=True), OpInputError,
     r"residual_branch{F}: x must have at least 2 dims"),
    ("batch_norm x rank 3", lambda F: F.batch_norm2d_forward(x(F)[0], C4, C4, BN, training=True), OpInputError,
     r"batch_norm2d{F}: x must have 4 dims"),
    ("pool x rank 2", lambda F: F.global_avg_pool_forward(X[0, 0]), OpInputError,
     r"global_avg_pool{F}: x must have 4 dims"),
    ("pos_residual h rank 3", lambda F: F.pos_residual_forward(x(F)[0], DW, C4), OpInputError,
     r"pos_residual{F}: h must have 4 dims"),
    ("cross_entropy logits rank 1", lambda F: F.cross_entropy_forward(C4, np.array([0])), OpInputError,
     r"cross_entropy: logits must have 2 dims"),
    # ---- channel / shape mismatch, no broadcasting
    ("conv2d channel mismatch", lambda F: F.conv2d_forward(x(F), R.standard_normal((4, 3, 3, 3))), OpInputError,
     r"conv2d{F}: channel mismatch: x has C_in=4, w expects C_in/groups=3 x groups=1 = 3"),
    ("conv2d groups do not divide", lambda F: F.conv2d_forward(x(F), DW[:3], groups=3), OpInputError,
     r"conv2d{F}: groups=3 must divide C_in=4"),
    ("conv2d bias shape", lambda F: F.conv2d_forward(x(F), W3, C4[:3]), OpInputError,
     r"conv2d{F}: b must have shape \(4,\) \(C_out,\), got \(3,\)"),
    ("conv2d bias that would broadcast", lambda F: F.conv2d_forward(x(F), W3, C4[:1]), OpInputError,
     r"conv2d{F}: b must have shape \(4,\)"),
    ("conv1x1 channel mismatch", lambda F: F.conv1x1_forward(x(F), R.standard_normal((4, 5, 1, 1))), OpInputError,
     r"conv1x1{F}: channel mismatch: x has C_in=4, w expects C_in=5"),
    ("conv1x1 3x3 kernel", lambda F: F.conv1x1_forward(x(F), W3), OpInputError,
     r"conv1x1{F}: w must be a 1x1 kernel"),
    ("conv1x1_gelu bias shape", lambda F: F.conv1x1_gelu_forward(x(F), W1, C4[:2]), OpInputError,
     r"conv1x1(_gelu)?{F}: b must have shape \(4,\)"),
    ("linear feature mismatch", lambda F: F.linear_forward(L, R.standard_normal((3, 5))), OpInputError,
     r"linear: feature mismatch: x has C_in=4, w expects C_in=5"),
    ("layer_norm weight shape", lambda F: F.layer_norm_forward(x(F), C4[:3], C4), OpInputError,
     r"layer_norm{F}: weight must have shape \(4,\) \(C,\), got \(3,\)"),
    ("layer_norm bias None", lambda F: F.layer_norm_forward(x(F), C4, None), OpTypeError,
     r"layer_norm{F}: bias must be an array of shape \(4,\) \(C,\), got None"),
    ("layer_scale gamma shape", lambda F: F.layer_scale_forward(x(F), C4[:2]), OpInputError,
     r"layer_scale{F}: gamma must have shape \(4,\)"),
    ("residual_branch y shape", lambda F: F.residual_branch_forward(x(F), x(F)[:1], C4, 0.0, training=True),
     OpInputError, r"residual_branch{F}: y must have shape \(2, \d, 6, \d\) \(like x\), got \(1, \d, 6, \d\)"),
    ("residual_branch gamma shape", lambda F: F.residual_branch_forward(x(F), x(F), C4[:2], 0.0, training=True),
     OpInputError, r"residual_branch{F}: gamma must have shape \(4,\)"),
    ("residual_branch y float32", lambda F: F.residual_branch_forward(x(F), x(F).astype(np.float32), C4, 0.0,
     training=True), OpDTypeError,
     r"residual_branch{F}: y must have the same dtype as the input \(float64\), got float32"),
    ("residual_branch drop path without rng", lambda F: F.residual_branch_forward(x(F), x(F), C4, 0.2, training=True),
     OpInputError, r"drop_path: an active drop path needs rng=np.random.Generator"),
    ("modulate v shape", lambda F: F.modulate_forward(x(F), x(F)[:1]), OpInputError,
     r"modulate{F}: v must have shape \(2, \d, 6, \d\) \(like a\), got \(1, \d, 6, \d\)"),
    ("batch_norm weight shape", lambda F: F.batch_norm2d_forward(x(F), C4[:3], C4, BN, training=True),
     OpInputError, r"batch_norm2d{F}: weight must have shape \(4,\)"),
    ("batch_norm running_var shape", lambda F: bn(F, ops.BatchNormStats(C4, C4[:3]), training=False), OpInputError,
     r"batch_norm2d{F}: stats.running_var must have shape \(4,\) \(C,\), got \(3,\)"),
    ("cross_entropy target length", lambda F: F.cross_entropy_forward(L, np.array([0, 1, 2])), OpInputError,
     r"cross_entropy: target must have shape \(2,\)"),
    ("cross_entropy soft target shape", lambda F: F.cross_entropy_forward(L, L[:, :3].copy()), OpInputError,
     r"cross_entropy: target must have shape \(2, 4\)"),
    ("conv2d backward dout shape",
     backward_of(lambda F: F.conv2d_forward(x(F), W3, padding=1), "conv2d_backward", lambda o: o[:1]),
     OpInputError, r"conv2d{F}_backward: dout must have shape \(2, \d, 6, \d\)"),
    ("layer_scale backward dout that would broadcast",
     backward_of(lambda F: F.layer_scale_forward(x(F), C4), "layer_scale_backward", lambda o: o[:1]),
     OpInputError, r"layer_scale{F}_backward: dout must have shape"),
    ("residual_branch backward dout that would broadcast",
     backward_of(lambda F: F.residual_branch_forward(x(F), x(F), C4, 0.0, training=True), "residual_branch_backward",
                 lambda o: o[:1]),
     OpInputError, r"residual_branch{F}_backward: dout must have shape"),
    ("pool backward dout that would broadcast",
     backward_of(lambda F: F.global_avg_pool_forward(x(F)), "global_avg_pool_backward", lambda o: o[:1]),
     OpInputError, r"global_avg_pool{F}_backward: dout must have shape \(2, 4\), got \(1, 4\)"),
    ("layer_norm backward dout shape",
     backward_of(lambda F: F.layer_norm_forward(x(F), C4, C4), "layer_norm_backward", lambda o: o[:1]),
     OpInputError, r"layer_norm{F}_backward: dout must have shape"),
    # ---- dtypes
    ("conv2d int input", lambda F: F.conv2d_forward(x(F).astype(np.int64), W3), OpDTypeError,
     r"conv2d{F}: x must be float32 or float64, got int64"),
    ("gelu float16", lambda F: F.gelu_forward(X.astype(np.float16)), OpDTypeError,
     r"gelu{F}: x must be float32 or float64, got float16"),
    ("layer_norm bool", lambda F: F.layer_norm_forward(x(F) > 0, C4, C4), OpDTypeError,
     r"layer_norm{F}: x must be float32 or float64, got bool"),
    ("conv2d mixed precision", lambda F: F.conv2d_forward(x(F).astype(np.float32), W3), OpDTypeError,
     r"conv2d{F}: w must have the same dtype as the input \(float32\), got float64"),
    ("batch_norm running stats of another dtype",
     lambda F: bn(F, ops.BatchNormStats.initial(4, np.float32), training=False), OpDTypeError,
     r"batch_norm2d{F}: stats.running_mean must have the same dtype as the input \(float64\), got float32"),
    ("modulate v dtype", lambda F: F.modulate_forward(x(F), x(F).astype(np.float32)), OpDTypeError,
     r"modulate{F}: v must have the same dtype as the input \(float64\)"),
    ("gelu backward dout dtype",
     backward_of(lambda F: F.gelu_forward(X), "gelu_backward", lambda o: o.astype(np.float32)), OpDTypeError,
     r"gelu{F}_backward: dout must have the same dtype as the input \(float64\), got float32"),
    ("cross_entropy float labels", lambda F: F.cross_entropy_forward(L, np.array([0.0, 1.0])), OpDTypeError,
     r"cross_entropy: class-index target must have an integer dtype, got float64"),
    ("not an array", lambda F: F.gelu_forward([1.0, 2.0]), OpTypeError,
     r"gelu{F}: x must be a numpy.ndarray, got list"),
    ("cross_entropy target not an array", lambda F: F.cross_entropy_forward(L, [0, 1]), OpTypeError,
     r"cross_entropy: target must be a numpy.ndarray, got list"),
    # ---- empty arrays
    ("conv2d empty batch", lambda F: F.conv2d_forward(x(F)[:0], W3), OpInputError,
     r"conv2d{F}: x must be non-empty, got shape \(0, \d, 6, \d\)"),
    ("gelu empty", lambda F: F.gelu_forward(np.zeros((3, 0))), OpInputError,
     r"gelu{F}: x must be non-empty, got shape \(3, 0\)"),
    ("layer_norm empty", lambda F: F.layer_norm_forward(np.zeros((0, 4)), C4, C4), OpInputError,
     r"layer_norm{F}: x must be non-empty"),
    ("cross_entropy empty", lambda F: F.cross_entropy_forward(np.zeros((0, 3)), np.zeros(0, int)), OpInputError,
     r"cross_entropy: logits must be non-empty"),
    # ---- memory layout
    ("conv2d transposed view", lambda F: F.conv2d_forward(x(F).transpose(0, 2, 1, 3), W3), OpInputError,
     r"conv2d{F}: x is not C-contiguous .*np.ascontiguousarray\(x\)"),
    ("layer_norm negative strides", lambda F: F.layer_norm_forward(x(F)[:, ::-1], C4, C4), OpInputError,
     r"layer_norm{F}: x has negative strides"),
    ("conv1x1 strided weight", lambda F: F.conv1x1_forward(x(F), R.standard_normal((4, 8, 1, 1))[:, ::2]),
     OpInputError, r"conv1x1{F}: w is not C-contiguous"),
    # ---- int options: ints only (np.integer too), never bools or floats, each named
    ("conv2d stride=1.0", lambda F: conv(F, stride=1.0), OpTypeError,
     r"conv2d{F}: stride must be an int or a pair of ints, got 1.0 \(float\)"),
    ("conv2d padding=1.0", lambda F: conv(F, padding=1.0), OpTypeError,
     r"conv2d{F}: padding must be an int, \(ph, pw\), \(top, bottom, left, right\), 'same' or 'valid', got 1.0"),
    ("conv2d padding (1.0, 1)", lambda F: conv(F, padding=(1.0, 1)), OpTypeError,
     r"conv2d{F}: padding must hold ints, got \(1.0, 1\)"),
    ("conv2d padding of 3", lambda F: conv(F, padding=(1, 1, 1)), OpTypeError, r"conv2d{F}: padding must be an int"),
    ("conv2d padding=True", lambda F: conv(F, padding=True), OpTypeError, r"conv2d{F}: padding must be an int"),
    ("conv2d dilation=1.5", lambda F: conv(F, dilation=1.5), OpTypeError,
     r"conv2d{F}: dilation must be an int or a pair of ints, got 1.5"),
    ("conv2d stride=(1, 2.0)", lambda F: conv(F, stride=(1, 2.0)), OpTypeError,
     r"conv2d{F}: stride must be an int or a pair of ints, got \(1, 2.0\)"),
    ("conv2d stride of 3", lambda F: conv(F, stride=(1, 1, 1)), OpTypeError,
     r"conv2d{F}: stride must be an int or a pair"),
    ("conv2d stride=True", lambda F: conv(F, stride=True), OpTypeError,
     r"conv2d{F}: stride must be an int or a pair of ints, got True \(bool\)"),
    ("conv2d groups=True", lambda F: conv(F, groups=True), OpTypeError,
     r"conv2d{F}: groups must be an int, got True \(bool\)"),
    ("conv2d groups=1.0", lambda F: conv(F, groups=1.0), OpTypeError, r"conv2d{F}: groups must be an int, got 1.0"),
    ("conv2d groups=0", lambda F: conv(F, groups=0), OpInputError, r"conv2d{F}: groups must be >= 1, got 0"),
    ("conv2d stride=0", lambda F: conv(F, stride=0), OpInputError, r"conv2d{F}: stride must be >= 1"),
    ("conv2d negative padding", lambda F: conv(F, padding=-1), OpInputError,
     r"conv2d{F}: padding must be non-negative ints, got -1"),
    ("conv2d bad padding string", lambda F: conv(F, padding="full"), OpInputError,
     r"conv2d{F}: padding must be an int, a tuple, 'same' or 'valid', got 'full'"),
    ("conv2d same with stride", lambda F: conv(F, stride=2, padding="same"), OpInputError,
     r"conv2d{F}: padding='same' needs stride 1"),
    ("conv2d empty output", lambda F: F.conv2d_forward(x(F)[:1], R.standard_normal((4, 4, 7, 7))), OpInputError,
     r"conv2d{F}: input 6x6 with padding \(0, 0, 0, 0\) is smaller than the dilated kernel 7x7"),
    # ---- float options and flags
    ("batch_norm stats None", lambda F: bn(F, None, training=False), OpTypeError,
     r"batch_norm2d{F}: stats must be a BatchNormStats .*, got NoneType"),
    ("batch_norm running_mean None", lambda F: bn(F, replace(BN, running_mean=None), training=False), OpTypeError,
     r"batch_norm2d{F}: stats.running_mean must be an array of shape \(4,\) \(C,\), got None"),
    ("batch_norm running_var None in train mode", lambda F: bn(F, replace(BN, running_var=None)), OpTypeError,
     r"batch_norm2d{F}: stats.running_var must be an array of shape \(4,\) \(C,\), got None"),
    ("batch_norm eps=0", lambda F: bn(F, eps=0.0), OpInputError, r"batch_norm2d{F}: eps must be > 0, got 0.0"),
    ("batch_norm eps=-1 in eval", lambda F: bn(F, training=False, eps=-1.0), OpInputError,
     r"batch_norm2d{F}: eps must be > 0, got -1.0"),
    ("batch_norm eps=nan", lambda F: bn(F, eps=float("nan")), OpInputError, r"batch_norm2d{F}: eps must be finite"),
    ("batch_norm eps as a string", lambda F: bn(F, eps="1e-5"), OpTypeError,
     r"batch_norm2d{F}: eps must be a real number, got '1e-5' \(str\)"),
    ("batch_norm momentum 1.5", lambda F: bn(F, momentum=1.5), OpInputError,
     r"batch_norm2d{F}: momentum must be in \[0, 1\] or None, got 1.5"),
    ("batch_norm momentum -0.1 in eval", lambda F: bn(F, training=False, momentum=-0.1), OpInputError,
     r"batch_norm2d{F}: momentum must be in \[0, 1\] or None, got -0.1"),
    ("batch_norm momentum=True", lambda F: bn(F, momentum=True), OpTypeError,
     r"batch_norm2d{F}: momentum must be a real number or None, got True \(bool\)"),
    ("batch_norm training as a string", lambda F: bn(F, training="eval"), OpTypeError,
     r"batch_norm2d{F}: training must be a bool, got 'eval' \(str\)"),
    ("batch_norm train one value",
     lambda F: F.batch_norm2d_forward(act(F, np.ones((1, 4, 1, 1))), C4, C4, BN, training=True), OpInputError,
     r"batch_norm2d{F}: train mode needs more than 1 value per channel"),
    ("layer_norm eps=0", lambda F: F.layer_norm_forward(x(F), C4, C4, 0.0), OpInputError,
     r"layer_norm{F}: eps must be > 0, got 0.0"),
    ("layer_norm eps=-1", lambda F: F.layer_norm_forward(x(F), C4, C4, -1.0), OpInputError,
     r"layer_norm{F}: eps must be > 0, got -1.0"),
    ("layer_norm eps=inf", lambda F: F.layer_norm_forward(x(F), C4, C4, np.inf), OpInputError,
     r"layer_norm{F}: eps must be finite"),
    ("gelu unknown approximation", lambda F: F.gelu_forward(X, approximate="sigmoid"), OpInputError,
     r"gelu{F}: approximate must be one of \('none', 'tanh'\), got 'sigmoid'"),
    ("gelu approximate=None", lambda F: F.gelu_forward(X, approximate=None), OpInputError,
     r"gelu{F}: approximate must be one of \('none', 'tanh'\), got None"),
    ("drop_path without rng", lambda F: F.drop_path_forward(x(F), 0.2, training=True), OpInputError,
     r"drop_path: an active drop path needs rng=np.random.Generator"),
    ("drop_path prob > 1", lambda F: F.drop_path_forward(x(F), 1.5, training=True), OpInputError,
     r"drop_path: drop_prob must be in \[0, 1\], got 1.5"),
    ("drop_path training=1", lambda F: F.drop_path_forward(x(F), 0.2, training=1), OpTypeError,
     r"drop_path: training must be a bool, got 1 \(int\)"),
    ("cross_entropy label out of range", lambda F: F.cross_entropy_forward(L, np.array([0, 4])), OpInputError,
     r"cross_entropy: class indices must be in \[0, 4\), got min 0 and max 4"),
    ("cross_entropy smoothing 1.5", lambda F: F.cross_entropy_forward(L, np.array([0, 1]), 1.5), OpInputError,
     r"cross_entropy: label_smoothing must be in \[0, 1\], got 1.5"),
    ("cross_entropy smoothing=True", lambda F: F.cross_entropy_forward(L, np.array([0, 1]), True), OpTypeError,
     r"cross_entropy: label_smoothing must be a real number, got True \(bool\)"),
    ("cross_entropy backward dloss None",
     lambda F: F.cross_entropy_backward(None, F.cross_entropy_forward(L, np.array([0, 1]))[1]), OpTypeError,
     r"cross_entropy_backward: dloss must be a real number, got None"),
    # ---- composites
    ("convmod missing key", lambda F: F.convmod_forward(x(F), _without(convmod_params(), "v.bias")), OpInputError,
     r"convmod: params must have exactly the keys .* missing \['v.bias'\], unexpected \[\]"),
    ("convmod even kernel", lambda F: F.convmod_forward(x(F), convmod_params(k=4)), OpInputError,
     r"convmod: att.2.weight must have an odd kernel size"),
    ("convmod dense kernel", lambda F: F.convmod_forward(x(F), convmod_params() | {"att.2.weight": W3}),
     OpInputError, r"convmod: att.2.weight must be a depthwise kernel \(4, 1, k, k\), got \(4, 4, 3, 3\)"),
    ("convmod channel mismatch", lambda F: F.convmod_forward(x(F), convmod_params(c=3)), OpInputError,
     r"convmod: att.2.weight must be a depthwise kernel \(4, 1, k, k\)"),
    ("mlp missing key", lambda F: F.mlp_forward(x(F), {}), OpInputError,
     r"mlp: params must have exactly the keys .* missing \['norm.weight', "),
    ("pos_residual dense kernel", lambda F: F.pos_residual_forward(x(F), W3, C4), OpInputError,
     r"pos_residual{F}: w must be a depthwise kernel"),
]  # fmt: skip


def expected_message(pattern: str, F: ModuleType) -> str:
    return pattern.replace("{F}", r" \(nhwc\)" if F is nhwc else "")


@pytest.mark.parametrize("F", COPIES)
@pytest.mark.parametrize(("what", "call", "exc", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_the_same_clear_error_in_both_copies(
    what: str, call: Callable[[ModuleType], Any], exc: type[Exception], message: str, F: ModuleType
) -> None:
    with pytest.raises(OpInputError) as info:
        call(F)
    assert type(info.value) is exc, f"{what}: {type(info.value).__name__} ({info.value}), expected {exc.__name__}"
    assert re.search(expected_message(message, F), str(info.value)), f"{what}: message {str(info.value)!r}"


def test_the_cases_cover_every_op_of_both_copies() -> None:
    """Each forward of the teaching copy, and every one the fast copy has, appears in a bad-input case."""
    source = inspect.getsource(sys.modules[__name__])
    forwards = [name for name in ops.__all__ if name.endswith("_forward")]
    assert all(hasattr(nhwc, name) for name in forwards), "the fast copy has every op of the teaching copy"
    missing = [name for name in forwards if f"F.{name}(" not in source]
    assert not missing, f"no bad-input case for {missing}"


def test_error_classes_are_value_and_type_errors() -> None:
    # callers that catch TypeError for wrong types (as Python raises) or ValueError for bad values catch ours
    assert issubclass(OpDTypeError, TypeError) and issubclass(OpTypeError, TypeError)
    assert issubclass(OpDTypeError, OpTypeError) and issubclass(OpTypeError, ValueError)
    with pytest.raises(TypeError):
        ops.gelu_forward(X.astype(np.int32))


@pytest.mark.parametrize("F", COPIES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_of_a_0d_array_is_a_0d_array(F: ModuleType, dtype: type, approximate: str) -> None:
    x0 = np.array(0.7, dtype=dtype)
    y, cache = F.gelu_forward(x0, approximate)
    dx = F.gelu_backward(np.array(1.0, dtype=dtype), cache)
    for v in (y, dx):
        assert isinstance(v, np.ndarray) and v.shape == () and v.dtype == dtype
    y1, cache1 = F.gelu_forward(x0.reshape(1), approximate)
    assert y == y1[0] and dx == F.gelu_backward(np.ones(1, dtype), cache1)[0]


@pytest.mark.parametrize("F", COPIES)
def test_modulate_of_0d_arrays_is_a_0d_array(F: ModuleType) -> None:
    m, cache = F.modulate_forward(np.array(2.0), np.array(3.0))
    da, dv = F.modulate_backward(np.array(1.0), cache)
    assert all(isinstance(v, np.ndarray) and v.shape == () for v in (m, da, dv))
    assert (float(m), float(da), float(dv)) == (6.0, 3.0, 2.0)


@pytest.mark.parametrize("F", COPIES)
def test_numpy_integers_are_ints(F: ModuleType) -> None:
    """Options that come from array arithmetic (np.int64) are accepted wherever an int is."""
    a, _ = F.conv2d_forward(x(F), W3, stride=np.int64(2), padding=(np.int32(1), 1), groups=np.int64(1))
    b, _ = F.conv2d_forward(x(F), W3, stride=2, padding=1)
    np.testing.assert_array_equal(a, b)


def test_nan_propagates_and_is_not_masked() -> None:
    """NaN policy: ops propagate NaN/inf as IEEE arithmetic does; the loss turns them into a NaN loss."""
    x_ = X.copy()
    x_[0, 1, 2, 3] = np.nan
    out, cache = ops.conv2d_forward(x_, DW, groups=4, padding=1)
    bad = np.isnan(out)
    assert bad[0, 1, 1:4, 2:5].all() and bad.sum() == 9  # exactly the 3x3 window of channel 1 that reads it
    _, dw, _ = ops.conv2d_backward(np.ones_like(out), cache)
    assert np.isnan(dw[1]).any() and not np.isnan(dw[0]).any()
    y, _ = ops.layer_norm_forward(x_, C4, C4)
    assert np.isnan(y[0, :, 2, 3]).all() and np.isfinite(np.delete(y.reshape(2, 4, 36), 15, axis=2)).all()
    logits = L.copy()
    logits[1, 2] = np.inf
    loss, _ = ops.cross_entropy_forward(logits, np.array([0, 1]))
    assert np.isnan(loss)


@pytest.mark.parametrize("F", COPIES)
def test_messages_stay_short_whatever_the_bad_value(F: ModuleType) -> None:
    """A huge or deeply nested option is shown in a bounded form (reprlib), not repr'd whole."""
    nested: list[Any] = []
    for _ in range(500):
        nested = [nested, nested]  # 2**500 leaves through shared structure: a full repr would never end
    calls = [lambda bad=bad: conv(F, stride=bad) for bad in (list(range(10**6)), nested, "s" * 10**6, -(10**4000))]
    calls += [lambda: conv(F, groups=10**4000), lambda: conv(F, padding=(-(10**4000), 0))]
    for call in calls:
        with pytest.raises(OpInputError) as info:
            call()
        assert len(str(info.value)) < 200, str(info.value)[:300]
