"""The checks themselves: a wrong gradient fails the FD check, a wrong value fails the comparison.

A test harness that cannot fail proves nothing; these plant known mistakes and require them to be caught.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from c2f_numpy import ops
from c2f_numpy.gradcheck import directional_check, numerical_gradient
from c2f_numpy.testing import TOLERANCES, compare, tolerance

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 5, 5))
W = RNG.standard_normal((3, 1, 3, 3))
R = RNG.standard_normal((2, 3, 5, 5))


def _loss(a: Mapping[str, np.ndarray]) -> float:
    return float(np.sum(ops.conv2d_forward(a["x"], a["w"], padding=1, groups=3)[0] * R))


def _grads() -> dict[str, np.ndarray]:
    _, cache = ops.conv2d_forward(X, W, padding=1, groups=3)
    dx, dw, _ = ops.conv2d_backward(R, cache)
    return {"x": dx, "w": dw}


def _bump(g: np.ndarray, index: int, rel: float) -> np.ndarray:
    """A copy of g with one entry scaled by (1 + rel): the smallest plausible gradient bug."""
    out = g.copy()
    out.flat[index] *= 1 + rel
    return out


def test_correct_gradients_pass() -> None:
    assert all(r.ok for r in directional_check(_loss, {"x": X, "w": W}, _grads(), np.random.default_rng(1)))


@pytest.mark.parametrize(
    "mistake",
    [
        ("flipped kernel", lambda g: g["w"][:, :, ::-1, ::-1]),
        ("one entry off by 1%", lambda g: _bump(g["w"], 4, 0.01)),
        ("transposed dx", lambda g: g["x"].transpose(0, 1, 3, 2)),
        ("gradient of half the batch", lambda g: np.concatenate([g["x"][:1], 0 * g["x"][1:]])),
    ],
    ids=lambda m: m[0],
)  # fmt: skip
def test_planted_gradient_mistakes_are_caught(mistake: tuple) -> None:
    name, corrupt = mistake
    grads = _grads()
    key = "w" if "kernel" in name or "entry" in name else "x"
    grads = {key: np.ascontiguousarray(corrupt(grads))}
    results = directional_check(_loss, {"x": X, "w": W}, grads, np.random.default_rng(1))
    assert not results[0].ok, f"{name} was not caught: {results[0]}"


def test_numerical_gradient_matches_analytic_on_every_entry() -> None:
    x = RNG.standard_normal((1, 2, 3, 3))
    r = RNG.standard_normal((1, 2, 3, 3))
    w, b = RNG.standard_normal(2), RNG.standard_normal(2)
    _, cache = ops.layer_norm_forward(x, w, b)
    dx, _, _ = ops.layer_norm_backward(r, cache)
    numeric = numerical_gradient(lambda z: float(np.sum(ops.layer_norm_forward(z, w, b)[0] * r)), x)
    assert compare("layer_norm dx", dx, numeric, tol=1e-7, scale_floor=1.0).ok


def test_compare_flags_nan_inf_and_real_differences() -> None:
    a = np.array([1.0, 2.0, 3.0])
    assert compare("same", a, a.copy()).ok
    assert not compare("nan", np.array([1.0, np.nan, 3.0]), a).ok
    assert not compare("inf", np.array([1.0, np.inf, 3.0]), a).ok
    assert compare("both nan", np.array([np.nan]), np.array([np.nan])).ok
    assert not compare("1e-8 off in float64", a + 1e-8 * 3, a).ok
    assert compare("1e-8 off, float32 tolerance", (a + 3e-8).astype(np.float32), a.astype(np.float32)).ok
    with pytest.raises(ValueError, match="shape"):
        compare("shape", a, a[:2])


def test_tolerance_table_is_the_one_place() -> None:
    assert tolerance(np.float64) == TOLERANCES["float64"] < tolerance(np.float32) == TOLERANCES["float32"]
    assert tolerance(np.int64) == tolerance(np.bool_) == 0.0  # counters and labels match exactly
    assert not compare("counter", np.array(3), np.array(4)).ok and compare("counter", np.array(3), np.array(3)).ok
    with pytest.raises(ValueError, match="no tolerance for dtype float16"):
        tolerance(np.float16)
