"""The fast copy (c2f_numpy.kernels.nhwc, channels-last, Numba) against the teaching copy (c2f_numpy.ops).

Same problems as the op tests (tests/ops/cases.py): each is run through the teaching op in NCHW and through its
fast twin with every 4-d array moved to NHWC; outputs and gradients must agree to the dtype's tolerance.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from c2f_numpy import ops
from c2f_numpy.kernels import dense, nhwc
from c2f_numpy.ops.checks import resolve_padding
from c2f_numpy.testing import assert_close

from ..ops.cases import CASES, EDGE_CASES, OpCase, Problem, conv2d_problem

# ops with a channels-last twin, and which inputs are activations (moved to NHWC); weights keep their layout
ACTIVATIONS = {
    "conv2d": ("x",), "conv1x1": ("x",), "conv1x1_gelu": ("x",), "layer_norm": ("x",), "batch_norm2d": ("x",),
    "gelu": (), "modulate": ("a", "v"),
    "layer_scale": ("x",), "residual_branch": ("x", "y"),
    "global_avg_pool": ("x",), "convmod": ("x",), "pos_residual": ("h",), "mlp": ("x",),
}  # fmt: skip


@st.composite
def dense_conv_problems(draw: st.DrawFn) -> Problem:
    """Dense convolutions along the fast copy's own code paths, which the op tests' general draw
    (tests/ops/cases.py) reaches only now and then: non-overlapping patches (stride = kernel, no padding, sizes
    that leave rows or columns over), stride 1 with every padding form, and overlapping strided taps."""
    kh = draw(st.integers(1, 3))
    kw = kh if draw(st.booleans()) else draw(st.integers(1, 3))
    n, c, co = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(kh, 9)), draw(st.integers(kw, 9))
    path = draw(st.sampled_from(["patches", "stride1", "strided"]))
    padding: Any
    if path == "patches":
        stride, padding = (kh, kw), draw(st.sampled_from([0, "valid", (0, 0), (0, 0, 0, 0)]))
    elif path == "stride1":
        stride, padding = 1, draw(st.sampled_from([0, 1, 2, (1, 0), (0, 2, 1, 0), "same", "valid"]))
    else:
        stride, padding = draw(st.sampled_from([2, 3, (1, 2), (2, 1)])), draw(st.sampled_from([0, 1, (0, 1, 1, 0)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return conv2d_problem(rng, n, c, h, w, co, (kh, kw), stride=stride, padding=padding, bias=draw(st.booleans()))


_CONV2D = next(c for c in CASES if c.name == "conv2d")
_E = np.random.default_rng(2024)  # fixed inputs; shapes of the stem and downsampling convolutions, made small
DENSE_EDGES = (
    ("downsample_7x7_to_3x3", conv2d_problem(_E, 2, 4, 7, 7, 6, 2, stride=2)),  # drops the last row and column
    ("patches_batch1_channel1_no_bias", conv2d_problem(_E, 1, 1, 5, 6, 3, 2, stride=2, bias=False)),
    ("patches_2x3_odd", conv2d_problem(_E, 2, 2, 5, 8, 3, (2, 3), stride=(2, 3))),
    ("stem_3x3_channel1_batch1", conv2d_problem(_E, 1, 1, 6, 5, 4, 3, padding=1, bias=False)),
    ("k3_four_sided_padding", conv2d_problem(_E, 2, 3, 5, 4, 2, 3, padding=(0, 2, 1, 0))),
    ("padding_beyond_kernel", conv2d_problem(_E, 1, 2, 3, 3, 2, 1, padding=2)),  # whole rows of taps in padding
)

FAST_CASES = [pytest.param(c, id=c.name) for c in CASES if c.name in ACTIVATIONS] + [
    pytest.param(replace(_CONV2D, problems=dense_conv_problems()), id="conv2d_dense_paths")  # same op, other draw
]
FAST_EDGES = [(c, n, p) for c, n, p in EDGE_CASES if c.name in ACTIVATIONS] + [(_CONV2D, n, p) for n, p in DENSE_EDGES]


def to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def to_nchw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def supported(case: OpCase, p: Problem) -> bool:
    """What the fast copy implements: 4-d activations; convolutions as Conv2Former uses them."""
    acts = ACTIVATIONS[case.name]
    if any(p.arrays[a].ndim != 4 for a in acts):
        return False
    if case.name == "conv2d":
        kw, w, x = p.kwargs, p.arrays["w"], p.arrays["x"]
        if kw["dilation"] != 1:
            return False
        if kw["groups"] == 1:
            return True
        pads = resolve_padding("t", kw["padding"], w.shape[2:], (1, 1), (1, 1)) if kw["stride"] == 1 else None
        return (kw["groups"] == x.shape[1] == w.shape[0] and kw["stride"] == 1 and w.shape[2] == w.shape[3]
                and pads is not None and len(set(pads)) == 1)  # fmt: skip
    return True


def run_fast(case: OpCase, p: Problem) -> tuple[Any, Any]:
    """Run the problem through the fast twin: the case's runner over the nhwc namespace, activations moved."""
    acts = ACTIVATIONS[case.name]
    moved = p.with_arrays({k: (to_nhwc(v) if k in acts else v) for k, v in p.arrays.items()})
    out, backward = case.run(moved, nhwc)

    spatial_out = bool(acts) and isinstance(out, np.ndarray) and out.ndim == 4  # elementwise ops keep any layout

    def back(dout: Any) -> dict[str, np.ndarray]:
        d = to_nhwc(dout) if spatial_out else dout
        return {k: (to_nchw(g) if k in acts else g) for k, g in backward(d).items()}

    return (to_nchw(out) if spatial_out else out), back


def check_fast_against_teaching(case: OpCase, problem: Problem, dtype: type) -> None:
    p = problem.astype(dtype)
    out, backward = case.run(p)
    fast_out, fast_backward = run_fast(case, p)
    r = np.random.default_rng(5).standard_normal(np.shape(out)).astype(dtype)
    dout = r if isinstance(out, np.ndarray) else float(r)
    grads, fast_grads = backward(dout), fast_backward(dout)
    if isinstance(out, np.ndarray):
        assert fast_out.dtype == out.dtype
    assert_close(f"{case.name} out", np.asarray(fast_out), np.asarray(out), scale_floor=1.0)
    assert set(fast_grads) == set(grads)
    for k in grads:
        assert_close(f"{case.name} d{k}", fast_grads[k], grads[k], scale_floor=1.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", FAST_CASES)
# conv2d's general draw is mostly configurations the fast copy refuses (dilation, grouped, strided depthwise):
# often more than 80% are filtered, which hypothesis's health check flags now and then.
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_fast_twin_matches_teaching_copy(case: OpCase, dtype: type, data: st.DataObject) -> None:
    problem = data.draw(case.problems, label="problem")
    assume(supported(case, problem) and (dtype is np.float64 or not problem.two_value_norm))
    check_fast_against_teaching(case, problem, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("case", "name", "problem"), FAST_EDGES, ids=[f"{c.name}-{n}" for c, n, _ in FAST_EDGES])
def test_fast_twin_edge_cases(case: OpCase, name: str, problem: Problem, dtype: type) -> None:
    if not supported(case, problem):
        with pytest.raises(ops.OpInputError, match=r"\(nhwc\)"):  # unsupported configs say so, never guess
            run_fast(case, problem.astype(dtype))
        return
    check_fast_against_teaching(case, problem, dtype)


@pytest.mark.parametrize(
    ("c_in", "k", "width", "kwargs"),
    [(1, 11, 7, dict(padding=5, groups=32)), (1, 11, 20, dict(padding=5, groups=32)),
     (32, 3, 7, dict(padding=1)), (32, 3, 7, dict(stride=2, padding=1))],
    ids=["depthwise_k11_narrow", "depthwise_k11_wide", "dense_k3", "dense_k3_s2"],
)  # fmt: skip
def test_gradients_are_deterministic_and_thread_count_independent(
    c_in: int, k: int, width: int, kwargs: dict[str, Any]
) -> None:
    """The Numba kernels that sum (depthwise dw, both its pixel and its blocked form; the dense col2im behind
    dx) do so in a fixed order."""
    import numba

    rng = np.random.default_rng(0)
    x = rng.standard_normal((13, 9, width, 32)).astype(np.float32)
    w = rng.standard_normal((32, c_in, k, k)).astype(np.float32)
    out, cache = nhwc.conv2d_forward(x, w, None, **kwargs)
    d = rng.standard_normal(out.shape).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)  # the whole pool (the default may be 1: conftest)
        first = nhwc.conv2d_backward(d, cache)
        again = nhwc.conv2d_backward(d, cache)
        numba.set_num_threads(1)
        single = nhwc.conv2d_backward(d, cache)
    finally:
        numba.set_num_threads(before)
    for a, b, c in zip(first[:2], again[:2], single[:2], strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)


_BIG = np.random.default_rng(77)  # 3 x 13 x 17 = 663 rows: more than a row block of the GEMMs' or sums' splits
BLOCK_SUM_CASES = [
    ("layer_norm", Problem({"x": _BIG.standard_normal((3, 6, 13, 17)) + 2.0, "weight": _BIG.standard_normal(6),
                            "bias": _BIG.standard_normal(6)}, kwargs={"eps": 1e-6})),
    ("conv1x1_gelu", Problem({"x": _BIG.standard_normal((3, 5, 13, 17)), "w": _BIG.standard_normal((7, 5, 1, 1)),
                              "b": _BIG.standard_normal(7)})),
    ("residual_branch", Problem({"x": _BIG.standard_normal((3, 6, 13, 17)), "y": _BIG.standard_normal((3, 6, 13, 17)),
                                 "gamma": _BIG.standard_normal(6)},
                                kwargs={"drop_prob": 0.5, "training": True, "seed": 1})),
]  # fmt: skip


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("name", "problem"), BLOCK_SUM_CASES, ids=[n for n, _ in BLOCK_SUM_CASES])
def test_summed_gradients_on_many_rows_match_and_do_not_depend_on_threads(name: str, problem: Problem,
                                                                       dtype: type) -> None:  # fmt: skip
    """Gradients summed over hundreds of rows (LayerNorm's weight and bias, the GELU'd 1x1 convolution's weight
    and bias, layer scale's gamma through the residual branch): the teaching copy's result, bitwise the same at
    one thread and at the whole pool."""
    import numba

    case = next(c for c in CASES if c.name == name)
    check_fast_against_teaching(case, problem, dtype)
    p = problem.astype(dtype)
    dout = to_nchw(np.random.default_rng(3).standard_normal(to_nhwc(case.run(p)[0]).shape).astype(dtype))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = run_fast(case, p)[1](dout)
        numba.set_num_threads(1)
        one = run_fast(case, p)[1](dout)
    finally:
        numba.set_num_threads(before)
    assert all(np.array_equal(many[k], one[k]) for k in many)


def test_float32_gelu_is_within_float32_resolution_of_the_exact_form() -> None:
    """The fast float32 GELU uses an erf approximation (|error| <= 1.5e-7): check it over the whole range."""
    from scipy.special import erfc

    x = np.linspace(-12, 12, 200001).astype(np.float32)
    y, cache = nhwc.gelu_forward(x)
    dx = nhwc.gelu_backward(np.ones_like(x), cache)
    xd = x.astype(np.float64)
    exact = 0.5 * xd * erfc(-xd * np.sqrt(0.5))
    dexact = 0.5 * erfc(-xd * np.sqrt(0.5)) + xd * np.exp(-0.5 * xd * xd) / np.sqrt(2 * np.pi)
    assert np.abs(y - exact).max() < 5e-7 * 12 and np.abs(dx - dexact).max() < 5e-7
    assert (y[x < -6] <= 0).all() and (np.abs(y[x < -6]) < 1e-7).all()  # the far tail stays tiny and signed


@pytest.mark.parametrize("per_chunk", [1, 2, 5], ids=lambda p: f"{p}_images_per_chunk")  # 5 images: one chunk
@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, padding=1), dict(padding=(0, 2, 1, 0))])
def test_dense_conv_in_image_chunks_matches_teaching_copy(
    per_chunk: int, kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overlapping-tap convolutions gather their taps a few images at a time (dense.CHUNK_BYTES), in the forward
    and again in the backward: every way of cutting the batch (2 images per chunk: 2 + 2 + 1) gives the
    teaching copy's result."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 3, 9, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    out, cache = ops.conv2d_forward(x, w, b, **kwargs)
    image_bytes = out.shape[2] * out.shape[3] * 3 * 3 * 3 * x.itemsize  # its im2col rows
    monkeypatch.setattr(dense, "CHUNK_BYTES", per_chunk * image_bytes)
    assert len(dense.image_chunks(5, image_bytes)) == -(-5 // per_chunk)
    d = rng.standard_normal(out.shape)
    dx, dw, db = ops.conv2d_backward(d, cache)
    f_out, f_cache = nhwc.conv2d_forward(to_nhwc(x), w, b, **kwargs)
    f_dx, f_dw, f_db = nhwc.conv2d_backward(to_nhwc(d), f_cache)
    assert_close("dense out", to_nchw(f_out), out)
    assert_close("dense dx", to_nchw(f_dx), dx)
    assert_close("dense dw", f_dw, dw)
    assert f_db is not None
    assert_close("dense db", f_db, db)
