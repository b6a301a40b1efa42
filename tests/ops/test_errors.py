"""Bad input gets a clear error naming the op, what was expected and what came (c2f_numpy.ops.checks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from c2f_numpy import ops
from c2f_numpy.kernels import nhwc
from c2f_numpy.ops import OpDTypeError, OpInputError

R = np.random.default_rng(0)
X = R.standard_normal((2, 4, 6, 6))
W3 = R.standard_normal((4, 4, 3, 3))
DW = R.standard_normal((4, 1, 3, 3))
C4 = R.standard_normal(4)
BN = ops.BatchNormStats.initial(4, np.float64)
L = np.ascontiguousarray(X[:, :, 0, 0])  # (2, 4): logits, or features for linear


def convmod_params(c: int = 4, k: int = 3) -> dict[str, np.ndarray]:
    p = {k_: R.standard_normal((c,)) for k_ in ops.CONVMOD_KEYS if k_.endswith("bias") or k_.startswith("norm")}
    p |= {name: R.standard_normal((c, c, 1, 1)) for name in ("att.0.weight", "v.weight", "proj.weight")}
    p["att.2.weight"] = R.standard_normal((c, 1, k, k))
    return p


def _without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


CASES: list[tuple[str, Callable[[], Any], type[Exception], str]] = [
    # wrong rank
    ("conv2d x rank 3", lambda: ops.conv2d_forward(X[0], W3), OpInputError,
     r"conv2d: x must have 4 dims \(N, C, H, W\), got shape \(4, 6, 6\)"),
    ("conv2d w rank 3", lambda: ops.conv2d_forward(X, W3[0]), OpInputError, r"conv2d: w must have 4 dims"),
    ("conv1x1 x rank 2", lambda: ops.conv1x1_forward(X[0, :, 0], W3[:, :, :1, :1]), OpInputError,
     r"conv1x1: x must have 4 dims"),
    ("linear x rank 1", lambda: ops.linear_forward(C4, W3[:, :, 0, 0]), OpInputError,
     r"linear: x must have at least 2 dims"),
    ("batch_norm x rank 3", lambda: ops.batch_norm2d_forward(X[0], C4, C4, BN, training=True), OpInputError,
     r"batch_norm2d: x must have 4 dims"),
    ("pool x rank 2", lambda: ops.global_avg_pool_forward(X[0, 0]), OpInputError, r"global_avg_pool: x must have 4"),
    ("cross_entropy logits rank 1", lambda: ops.cross_entropy_forward(C4, np.array([0])), OpInputError,
     r"cross_entropy: logits must have 2 dims"),
    # channel / shape mismatch
    ("conv2d channel mismatch", lambda: ops.conv2d_forward(X, R.standard_normal((4, 3, 3, 3))), OpInputError,
     r"conv2d: channel mismatch: x has C_in=4, w expects C_in/groups=3 x groups=1 = 3"),
    ("conv2d groups do not divide", lambda: ops.conv2d_forward(X, DW[:3], groups=3), OpInputError,
     r"conv2d: groups=3 must divide C_in=4"),
    ("conv2d bias shape", lambda: ops.conv2d_forward(X, W3, C4[:3]), OpInputError,
     r"conv2d: b must have shape \(4,\) \(C_out,\), got \(3,\)"),
    ("conv1x1 channel mismatch", lambda: ops.conv1x1_forward(X, R.standard_normal((4, 5, 1, 1))), OpInputError,
     r"conv1x1: channel mismatch: x has C_in=4, w expects C_in=5"),
    ("conv1x1 3x3 kernel", lambda: ops.conv1x1_forward(X, W3), OpInputError, r"conv1x1: w must be a 1x1 kernel"),
    ("linear feature mismatch", lambda: ops.linear_forward(L, R.standard_normal((3, 5))),
     OpInputError, r"linear: feature mismatch: x has C_in=4, w expects C_in=5"),
    ("layer_norm weight shape", lambda: ops.layer_norm_forward(X, C4[:3], C4), OpInputError,
     r"layer_norm: weight must have shape \(4,\) \(C,\), got \(3,\)"),
    ("layer_scale gamma shape", lambda: ops.layer_scale_forward(X, C4[:2]), OpInputError,
     r"layer_scale: gamma must have shape \(4,\)"),
    ("modulate v shape", lambda: ops.modulate_forward(X, np.ascontiguousarray(X[:, :3])), OpInputError,
     r"modulate: v must have shape \(2, 4, 6, 6\) \(like a\), got \(2, 3, 6, 6\)"),
    ("modulate fast copy v dtype", lambda: nhwc.modulate_forward(X, X.astype(np.float32)), OpDTypeError,
     r"modulate \(nhwc\): v must have the same dtype as the input \(float64\)"),
    ("batch_norm running_var shape",
     lambda: ops.batch_norm2d_forward(X, C4, C4, ops.BatchNormStats(C4, C4[:3]), training=False), OpInputError,
     r"batch_norm2d: running_var must have shape \(4,\)"),
    ("cross_entropy target length", lambda: ops.cross_entropy_forward(L, np.array([0, 1, 2])),
     OpInputError, r"cross_entropy: target must have shape \(2,\)"),
    ("backward dout shape", lambda: ops.conv2d_backward(X[:1], ops.conv2d_forward(X, W3, padding=1)[1]),
     OpInputError, r"conv2d_backward: dout must have shape \(2, 4, 6, 6\)"),
    # dtype
    ("conv2d int input", lambda: ops.conv2d_forward(X.astype(np.int64), W3), OpDTypeError,
     r"conv2d: x must be float32 or float64, got int64"),
    ("gelu float16", lambda: ops.gelu_forward(X.astype(np.float16)), OpDTypeError,
     r"gelu: x must be float32 or float64, got float16"),
    ("layer_norm bool", lambda: ops.layer_norm_forward(X > 0, C4, C4), OpDTypeError, r"got bool"),
    ("conv2d mixed precision", lambda: ops.conv2d_forward(X.astype(np.float32), W3), OpDTypeError,
     r"conv2d: w must have the same dtype as the input \(float32\), got float64"),
    ("backward dout dtype", lambda: ops.gelu_backward(X.astype(np.float32), ops.gelu_forward(X)[1]), OpDTypeError,
     r"gelu_backward: dout must have the same dtype as the input \(float64\), got float32"),
    ("cross_entropy float labels", lambda: ops.cross_entropy_forward(L, np.array([0.0, 1.0])),
     OpDTypeError, r"cross_entropy: class-index target must have an integer dtype, got float64"),
    ("not an array", lambda: ops.gelu_forward([1.0, 2.0]), OpInputError,  # type: ignore[arg-type]
     r"gelu: x must be a numpy.ndarray, got list"),
    # memory layout
    ("conv2d transposed view", lambda: ops.conv2d_forward(X.transpose(0, 1, 3, 2), W3), OpInputError,
     r"conv2d: x is not C-contiguous .*np.ascontiguousarray\(x\)"),
    ("layer_norm negative strides", lambda: ops.layer_norm_forward(X[:, :, ::-1], C4, C4), OpInputError,
     r"layer_norm: x has negative strides"),
    ("conv1x1 strided weight", lambda: ops.conv1x1_forward(X, R.standard_normal((4, 8, 1, 1))[:, ::2]),
     OpInputError, r"conv1x1: w is not C-contiguous"),
    # options and values
    ("conv2d empty output", lambda: ops.conv2d_forward(X[:1], R.standard_normal((4, 4, 7, 7))),
     OpInputError, r"conv2d: input 6x6 with padding \(0, 0, 0, 0\) is smaller than the dilated kernel 7x7"),
    ("conv2d same with stride", lambda: ops.conv2d_forward(X, W3, stride=2, padding="same"), OpInputError,
     r"padding='same' needs stride 1"),
    ("conv2d negative padding", lambda: ops.conv2d_forward(X, W3, padding=-1), OpInputError,
     r"padding must be non-negative"),
    ("conv2d zero stride", lambda: ops.conv2d_forward(X, W3, stride=0), OpInputError, r"stride must be >= 1"),
    ("conv2d bad padding string", lambda: ops.conv2d_forward(X, W3, padding="full"), OpInputError,
     r"padding must be an int, a tuple, 'same' or 'valid'"),
    ("gelu unknown approximation", lambda: ops.gelu_forward(X, approximate="sigmoid"), OpInputError,
     r"gelu: approximate must be one of \('none', 'tanh'\)"),
    ("batch_norm train one value", lambda: ops.batch_norm2d_forward(np.ones((1, 4, 1, 1)), C4, C4, BN, training=True),
     OpInputError, r"more than 1 value per channel"),
    ("drop_path without rng", lambda: ops.drop_path_forward(X, 0.2, training=True), OpInputError,
     r"drop_path: an active drop path needs rng=np.random.Generator"),
    ("drop_path prob > 1", lambda: ops.drop_path_forward(X, 1.5, training=True), OpInputError,
     r"drop_prob must be in \[0, 1\]"),
    ("cross_entropy label out of range", lambda: ops.cross_entropy_forward(L, np.array([0, 4])),
     OpInputError, r"class indices must be in \[0, 4\), got min 0 and max 4"),
    ("cross_entropy smoothing", lambda: ops.cross_entropy_forward(L, np.array([0, 1]), 1.5),
     OpInputError, r"label_smoothing must be in \[0, 1\]"),
    ("convmod missing key", lambda: ops.convmod_forward(X, _without(convmod_params(), "v.bias")), OpInputError,
     r"convmod: params must have exactly the keys .* missing \['v.bias'\], unexpected \[\]"),
    ("convmod even kernel", lambda: ops.convmod_forward(X, convmod_params(k=4)), OpInputError,
     r"convmod: att.2.weight must have an odd kernel size"),
    ("convmod dense kernel", lambda: ops.convmod_forward(X, convmod_params() | {"att.2.weight": W3}),
     OpInputError, r"convmod: att.2.weight must be a depthwise kernel \(4, 1, k, k\), got \(4, 4, 3, 3\)"),
    ("convmod channel mismatch", lambda: ops.convmod_forward(X, convmod_params(c=3)), OpInputError,
     r"att.2.weight must be a depthwise kernel \(4, 1, k, k\)"),
    ("pos_residual dense kernel", lambda: ops.pos_residual_forward(X, W3, C4), OpInputError,
     r"pos_residual: w must be a depthwise kernel"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "call", "exc", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(what: str, call: Callable[[], Any], exc: type[Exception], message: str) -> None:
    with pytest.raises(exc, match=message):
        call()


def test_dtype_errors_are_also_type_errors() -> None:
    # callers that catch TypeError for dtype problems (as NumPy raises) still catch ours
    with pytest.raises(TypeError):
        ops.gelu_forward(X.astype(np.int32))


def test_nan_propagates_and_is_not_masked() -> None:
    """NaN policy: ops propagate NaN/inf as IEEE arithmetic does; the loss turns them into a NaN loss."""
    x = X.copy()
    x[0, 1, 2, 3] = np.nan
    out, cache = ops.conv2d_forward(x, DW, groups=4, padding=1)
    bad = np.isnan(out)
    assert bad[0, 1, 1:4, 2:5].all() and bad.sum() == 9  # exactly the 3x3 window of channel 1 that reads it
    _, dw, _ = ops.conv2d_backward(np.ones_like(out), cache)
    assert np.isnan(dw[1]).any() and not np.isnan(dw[0]).any()
    y, _ = ops.layer_norm_forward(x, C4, C4)
    assert np.isnan(y[0, :, 2, 3]).all() and np.isfinite(np.delete(y.reshape(2, 4, 36), 15, axis=2)).all()
    logits = L.copy()
    logits[1, 2] = np.inf
    loss, _ = ops.cross_entropy_forward(logits, np.array([0, 1]))
    assert np.isnan(loss)
