"""The fused inference passes (kernels/fused.py) against the teaching copy's layer-by-layer branches.

Every case asserts which path it took, so a change to the path rule cannot turn these into tests of the
fallback alone.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from c2f_numpy import ops
from c2f_numpy.kernels import fused, nhwc
from c2f_numpy.models import create_model
from c2f_numpy.nn.module import Module
from c2f_numpy.testing import assert_close, randomize_for_parity

from ..ops.cases import convmod_problem, mlp_problem


def _nhwc_params(n: int, c: int, h: int, w: int, ratio: int, dtype: type, seed: int = 0, k: int = 3):
    p = mlp_problem(np.random.default_rng(seed), n, c, h, w, ratio).astype(dtype).arrays
    if k != 3:  # another odd positional kernel: the pass reads k from the weight
        p["pos.weight"] = np.random.default_rng(seed + 1).standard_normal((c * ratio, 1, k, k)).astype(dtype)
    x_nchw = p.pop("x")
    return x_nchw, np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)), p


def _convmod_nhwc(n: int, c: int, h: int, w: int, k: int, dtype: type, seed: int = 0):
    p = convmod_problem(np.random.default_rng(seed), n, c, h, w, k).astype(dtype).arrays
    x_nchw = p.pop("x")
    return x_nchw, np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)), p


FUSED_SHAPES = [  # (n, c, h, w, ratio, k): each takes the fused pass
    (16, 8, 14, 14, 4, 3),  # two images per group, micro's first stage in small
    (17, 4, 14, 14, 4, 3),  # a last group of one image
    (8, 5, 20, 21, 3, 3),  # one image per group, non-square, odd channels
    (64, 3, 7, 7, 2, 3),  # eight images per group
    (10, 6, 20, 20, 2, 5),  # a 5x5 positional kernel
    (8, 3, 21, 19, 1, 1),  # ratio 1, a 1x1 positional kernel
]
LAYERED_SHAPES = [(1, 8, 14, 14, 4, 3), (9, 4, 7, 7, 4, 3), (128, 8, 4, 4, 4, 3)]  # too few groups


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("n", "c", "h", "w", "ratio", "k"), FUSED_SHAPES + LAYERED_SHAPES)
def test_mlp_inference_matches_the_teaching_branch(n: int, c: int, h: int, w: int, ratio: int, k: int,
                                                   dtype: type) -> None:  # fmt: skip
    fused_path = (n, c, h, w, ratio, k) in FUSED_SHAPES
    assert (fused.images_per_group(n, h, w) > 0) == fused_path
    x_nchw, x, p = _nhwc_params(n, c, h, w, ratio, dtype, k=k)
    expected = ops.mlp_forward(x_nchw, p)[0]
    got = nhwc.mlp_inference(x, p)
    assert got.dtype == x.dtype and got.shape == x.shape
    assert_close("mlp_inference", got.transpose(0, 3, 1, 2), expected, scale_floor=1.0)
    assert_close("ops.mlp_inference", ops.mlp_inference(x_nchw, p), expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("n", "c", "h", "w", "ratio", "k"), FUSED_SHAPES + LAYERED_SHAPES)
def test_mlp_backward_matches_the_teaching_branch(n: int, c: int, h: int, w: int, ratio: int, k: int,
                                                  dtype: type) -> None:  # fmt: skip
    """The fast copy's MLP backward (fused over groups of images on FUSED_SHAPES) against ops.mlp_backward:
    dx and every parameter gradient."""
    x_nchw, x, p = _nhwc_params(n, c, h, w, ratio, dtype, k=k)
    out, cache = ops.mlp_forward(x_nchw, p)
    dout = np.random.default_rng(7).standard_normal(out.shape).astype(dtype)
    dx_expected, expected = ops.mlp_backward(dout, cache)
    dx, grads = nhwc.mlp_backward(np.ascontiguousarray(dout.transpose(0, 2, 3, 1)), nhwc.mlp_forward(x, p)[1])
    assert dx.dtype == x.dtype and dx.shape == x.shape
    assert_close("mlp_backward dx", dx.transpose(0, 3, 1, 2), dx_expected, scale_floor=1.0)
    assert list(grads) == list(expected)
    for key, value in expected.items():
        assert grads[key].dtype == value.dtype, key
        assert_close(f"mlp_backward {key}", grads[key], value, scale_floor=1.0)


def test_fused_mlp_backward_refuses_a_wrong_gradient() -> None:
    _, x, p = _nhwc_params(16, 8, 14, 14, 4, np.float32)
    _, cache = nhwc.mlp_forward(x, p)
    with pytest.raises(ops.OpInputError, match=r"mlp \(nhwc\).*dout must have shape \(16, 14, 14, 8\)"):
        nhwc.mlp_backward(np.zeros((16, 14, 14, 9), np.float32), cache)
    with pytest.raises(ops.OpDTypeError, match=r"mlp \(nhwc\)"):
        nhwc.mlp_backward(np.zeros((16, 14, 14, 8), np.float64), cache)


CONVMOD_FUSED = [(16, 8, 14, 14, 7), (17, 5, 14, 14, 3), (8, 3, 20, 21, 11), (64, 4, 7, 7, 1), (8, 6, 21, 19, 21)]
CONVMOD_LAYERED = [(1, 8, 14, 14, 7), (9, 4, 7, 7, 7)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("n", "c", "h", "w", "k"), CONVMOD_FUSED + CONVMOD_LAYERED)
def test_convmod_inference_matches_the_teaching_branch(n: int, c: int, h: int, w: int, k: int, dtype: type) -> None:
    assert (fused.images_per_group(n, h, w) > 0) == ((n, c, h, w, k) in CONVMOD_FUSED)
    x_nchw, x, p = _convmod_nhwc(n, c, h, w, k, dtype)
    expected = ops.convmod_forward(x_nchw, p)[0]
    got = nhwc.convmod_inference(x, p)
    assert got.dtype == x.dtype and got.shape == x.shape
    assert_close("convmod_inference", got.transpose(0, 3, 1, 2), expected, scale_floor=1.0)
    assert_close("ops.convmod_inference", ops.convmod_inference(x_nchw, p), expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("n", "c", "h", "w", "k"), CONVMOD_FUSED + CONVMOD_LAYERED)
def test_convmod_backward_matches_the_teaching_branch(n: int, c: int, h: int, w: int, k: int, dtype: type) -> None:
    """The fast copy's ConvMod backward (fused over groups of images on CONVMOD_FUSED) against
    ops.convmod_backward: dx and every parameter gradient."""
    x_nchw, x, p = _convmod_nhwc(n, c, h, w, k, dtype)
    out, cache = ops.convmod_forward(x_nchw, p)
    dout = np.random.default_rng(9).standard_normal(out.shape).astype(dtype)
    dx_expected, expected = ops.convmod_backward(dout, cache)
    dx, grads = nhwc.convmod_backward(np.ascontiguousarray(dout.transpose(0, 2, 3, 1)), nhwc.convmod_forward(x, p)[1])
    assert dx.dtype == x.dtype and dx.shape == x.shape
    assert_close("convmod_backward dx", dx.transpose(0, 3, 1, 2), dx_expected, scale_floor=1.0)
    assert list(grads) == list(expected)
    for key, value in expected.items():
        assert grads[key].dtype == value.dtype and grads[key].shape == value.shape, key
        assert_close(f"convmod_backward {key}", grads[key], value, scale_floor=1.0)


def test_fused_convmod_backward_refuses_a_wrong_gradient() -> None:
    _, x, p = _convmod_nhwc(16, 8, 14, 14, 7, np.float32)
    assert fused.images_per_group(16, 14, 14) > 0
    _, cache = nhwc.convmod_forward(x, p)
    with pytest.raises(ops.OpInputError, match=r"convmod \(nhwc\).*dout must have shape \(16, 14, 14, 8\)"):
        nhwc.convmod_backward(np.zeros((16, 14, 15, 8), np.float32), cache)


def test_fused_passes_do_not_depend_on_the_thread_count() -> None:
    _, x, p = _nhwc_params(16, 8, 14, 14, 4, np.float32)
    _, xc, pc = _convmod_nhwc(16, 8, 14, 14, 7, np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = nhwc.mlp_inference(x, p), nhwc.convmod_inference(xc, pc), *_gradients(x, p, xc, pc)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = nhwc.mlp_inference(x, p), nhwc.convmod_inference(xc, pc), *_gradients(x, p, xc, pc)
    finally:
        numba.set_num_threads(before)
    assert len(one) == len(many) == 2 + 2 + len(nhwc.MLP_KEYS) + len(nhwc.CONVMOD_KEYS)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a, b)


def _gradients(x: np.ndarray, p: dict, xc: np.ndarray, pc: dict) -> list[np.ndarray]:
    """dx and the parameter gradients of the MLP (x, p) and ConvMod (xc, pc) backwards."""
    out, cache = nhwc.mlp_forward(x, p)
    dx, grads = nhwc.mlp_backward(np.random.default_rng(5).standard_normal(out.shape).astype(x.dtype), cache)
    out_c, cache_c = nhwc.convmod_forward(xc, pc)
    dout_c = np.random.default_rng(6).standard_normal(out_c.shape).astype(xc.dtype)
    dxc, grads_c = nhwc.convmod_backward(dout_c, cache_c)
    return [dx, *grads.values(), dxc, *grads_c.values()]


@pytest.mark.parametrize(
    ("key", "value", "error", "match"),
    [
        ("v.weight", np.zeros((8, 7, 1, 1), np.float32), ops.OpInputError, r"v\.weight must have shape \(8, 8"),
        ("att.2.weight", np.zeros((8, 1, 7, 7), np.float64), ops.OpDTypeError, r"att\.2\.weight must have the same"),
        ("att.2.weight", np.zeros((8, 1, 4, 4), np.float32), ops.OpInputError, r"odd kernel size"),
        ("proj.bias", np.zeros(9, np.float32), ops.OpInputError, r"proj\.bias must have shape \(8,\)"),
        ("att.0.weight", np.zeros((8, 8, 3, 3), np.float32), ops.OpInputError, r"att\.0\.weight must be a 1x1 kernel"),
    ],
)  # fmt: skip
def test_bad_convmod_parameters_are_named(key: str, value: np.ndarray, error: type, match: str) -> None:
    _, x, p = _convmod_nhwc(16, 8, 14, 14, 7, np.float32)
    p[key] = value
    with pytest.raises(error, match=r"convmod_inference \(nhwc\).*" + match):
        nhwc.convmod_inference(x, p)


@pytest.mark.parametrize(
    ("key", "value", "error", "match"),
    [
        ("fc2.weight", np.zeros((8, 31, 1, 1), np.float32), ops.OpInputError, r"fc2\.weight must have shape \(8, 32"),
        ("pos.weight", np.zeros((32, 1, 3, 3), np.float64), ops.OpDTypeError, r"pos\.weight must have the same dtype"),
        ("pos.weight", np.zeros((32, 1, 2, 2), np.float32), ops.OpInputError, r"odd kernel size"),
        ("fc1.bias", np.zeros(33, np.float32), ops.OpInputError, r"fc1\.bias must have shape \(32,\)"),
        ("fc1.weight", np.zeros((32, 7, 1, 1), np.float32), ops.OpInputError,
         r"channel mismatch: x has C_in=8, fc1\.weight expects C_in=7"),
        ("norm.weight", np.zeros(7, np.float32), ops.OpInputError, r"norm\.weight must have shape \(8,\)"),
        ("fc2.bias", np.zeros((8, 1), np.float32), ops.OpInputError, r"fc2\.bias must have 1 dims"),
    ],
)  # fmt: skip
def test_bad_parameters_are_named_before_the_fused_pass_runs(key: str, value: np.ndarray, error: type,
                                                             match: str) -> None:  # fmt: skip
    _, x, p = _nhwc_params(16, 8, 14, 14, 4, np.float32)
    assert fused.images_per_group(16, 14, 14) > 0
    p[key] = value
    with pytest.raises(error, match=r"mlp_inference \(nhwc\).*" + match):
        nhwc.mlp_inference(x, p)


def test_missing_keys_and_a_channels_first_input_are_refused() -> None:
    _, x, p = _nhwc_params(16, 8, 14, 14, 4, np.float32)
    with pytest.raises(ops.OpInputError, match=r"missing \['fc2\.bias'\]"):
        nhwc.mlp_inference(x, {k: v for k, v in p.items() if k != "fc2.bias"})
    with pytest.raises(ops.OpInputError, match=r"weight must have shape \(14,\)"):  # C read from the last axis
        nhwc.mlp_inference(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), p)


def _micro(backend: str) -> Module:
    m = create_model("micro", in_chans=1, num_classes=10, dtype=np.float64)
    randomize_for_parity(m, seed=4)
    return m.set_backend(backend).eval()


def test_eval_mode_network_takes_the_fused_pass_and_its_backward_still_works() -> None:
    """At batch 16 micro's first stage (14x14) is fused; a backward after the eval forward (the ERF analysis)
    recomputes the branch's caches and gives the teaching copy's gradient."""
    x = np.random.default_rng(0).standard_normal((16, 1, 28, 28))
    assert fused.images_per_group(16, 14, 14) > 0
    fast, teaching = _micro("fast"), _micro("teaching")
    out, expected = fast(x), teaching(x)
    assert_close("micro eval logits", out, expected)
    dlogits = np.random.default_rng(1).standard_normal(out.shape)
    assert_close("micro eval dx", fast.backward(dlogits), teaching.backward(dlogits))
