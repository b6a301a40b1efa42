"""How c2f_numpy compares numbers: the one tolerance table, by dtype, and the error metric.

The metric is the *scaled* max error ``max|a - b| / max|b|``: the largest absolute difference relative to the
largest magnitude of the reference tensor. Elementwise relative error is meaningless for entries that are
sums cancelling to near zero (a gradient entry of 1e-9 computed in a different summation order may differ by
100% while the tensor is right to 1e-15); the scaled error stays meaningful for every entry.

Why these numbers. Two correct implementations differ by rounding only, which grows with the length of the
reductions and the depth of the computation: roughly eps * sqrt(terms) per reduction, compounded through the
layers. float64 (eps 2.2e-16) leaves six orders of magnitude of room below 1e-10; float32 (eps 1.2e-7) leaves
about three below 1e-4 at the reduction lengths the model has (up to 21*21 kernel taps, 1280 channels,
N*H*W batch statistics). A wrong gradient rule, a transposed kernel or a wrong eps misses these by orders of
magnitude, not by a factor of two.

float32 is judged against the float64 reference computed from the same (float32-rounded) inputs, not
against another float32 implementation: where one library is exact and the other rounds (LayerNorm over one
channel: ours gives dx = 0 exactly, PyTorch's float32 gives 5e-4), float32-vs-float32 would blame the exact
one. One family of problems is ill-conditioned in float32 whoever computes it: a normalisation over exactly
two values (LayerNorm with C = 2, BatchNorm with N*H*W = 2) is a sign function, and its backward is pure
cancellation amplified by 1/sqrt(eps) (1000 at eps = 1e-6): both c2f_numpy and PyTorch are off by 1e-3 there.
Such problems are checked in float64 and by finite differences, not in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .nn import Module

# The tolerance table (scaled max error), one entry per dtype; everything that compares arrays reads it here.
TOLERANCES: dict[str, float] = {
    "float64": 1e-10,
    "float32": 1e-4,
}

# Central differences in float64 with step h: truncation error ~h^2 * f''' and rounding ~eps * |L| / h, together
# about 1e-9..1e-7 of the gradient's norm on the tests' problems (worst seen 1.2e-7 over 3250 hypothesis draws).
# A wrong gradient rule misses by 1e-2 or more (tests/test_gradcheck.py). Normalisations over exactly two values
# have near-singular points that finite differences cannot resolve; the tests check those against PyTorch instead.
FD_STEP = 1e-6
FD_TOLERANCE = 1e-6


def tolerance(dtype: np.dtype | type) -> float:
    """The scaled-error tolerance for arrays of this dtype (the less precise of two dtypes when comparing).

    Integer and bool arrays (counters such as num_batches_tracked, labels) must match exactly: tolerance 0.
    """
    if np.dtype(dtype).kind in "biu":
        return 0.0
    name = np.dtype(dtype).name
    if name not in TOLERANCES:
        raise ValueError(f"no tolerance for dtype {name}; c2f_numpy computes in {sorted(TOLERANCES)}")
    return TOLERANCES[name]


@dataclass(frozen=True)
class Comparison:
    """The result of comparing ``actual`` with ``expected``."""

    name: str
    max_abs: float
    scale: float  # max(max |expected|, scale_floor)
    scaled: float  # max_abs / scale (max_abs when scale is 0)
    tol: float

    @property
    def ok(self) -> bool:
        return self.scaled <= self.tol

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "NOT OK"
        return (
            f"{self.name:<28s} max abs err {self.max_abs:9.3e}  max|ref| {self.scale:9.3e}  "
            f"scaled {self.scaled:9.3e}  tol {self.tol:.0e}  {verdict}"
        )


def compare(
    name: str, actual: np.ndarray, expected: np.ndarray, tol: float | None = None, scale_floor: float = 0.0
) -> Comparison:
    """Compare two arrays of the same shape; ``tol`` defaults to the table entry of the less precise dtype.

    ``scale_floor`` is the smallest scale the error is measured against: when the tensors come from inputs of
    a known magnitude (the tests use unit-scale inputs, floor 1), a tensor whose exact value is zero and whose
    computed value is rounding noise (LayerNorm over one channel has dx = 0) is compared absolutely.
    A NaN or inf in either array (where the other has a different value) is never OK.
    """
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise ValueError(f"{name}: shape {actual.shape} != expected shape {expected.shape}")
    if tol is None:
        tol = max(tolerance(actual.dtype), tolerance(expected.dtype))
    a64, e64 = actual.astype(np.float64), expected.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        same = (a64 == e64) | (np.isnan(a64) & np.isnan(e64))
        diff = np.where(same, 0.0, np.abs(a64 - e64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    max_abs = float(diff.max()) if diff.size else 0.0
    finite = e64[np.isfinite(e64)]
    scale = max(float(np.abs(finite).max()) if finite.size else 0.0, scale_floor)
    scaled = max_abs / scale if scale > 0 else max_abs
    return Comparison(name, max_abs, scale, scaled, tol)


def assert_close(
    name: str, actual: np.ndarray, expected: np.ndarray, tol: float | None = None, scale_floor: float = 0.0
) -> Comparison:
    """``compare`` and raise AssertionError with the full line when the arrays differ beyond ``tol``."""
    result = compare(name, actual, expected, tol, scale_floor)
    if not result.ok:
        raise AssertionError(str(result))
    return result


def randomize_for_parity(model: Module, seed: int = 0) -> None:
    """Give every parameter and BatchNorm statistic an O(1), non-trivial value, in place.

    The official initialisation sets both layer scales of every block to 1e-6, so each block is the identity
    to six digits and a comparison of two implementations would not see a wrong block at all. This draws:
    layer scales uniform in [0.5, 1.5]; norm scales 1 + 0.2 N(0, 1); biases and running means 0.1 N(0, 1);
    running variances uniform in [0.5, 2]; conv and linear weights N(0, 1/fan_in) (unit gain, so activations
    stay O(1) through the depth of the network).
    """
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for key, value in state.items():
        if value.dtype.kind != "f":
            continue
        if key.endswith(("layer_scale_1", "layer_scale_2")):
            new = rng.uniform(0.5, 1.5, value.shape)
        elif key.endswith("running_var"):
            new = rng.uniform(0.5, 2.0, value.shape)
        elif key.endswith(("running_mean", "bias")):
            new = 0.1 * rng.standard_normal(value.shape)
        elif value.ndim == 1:  # LayerNorm / BatchNorm scale
            new = 1.0 + 0.2 * rng.standard_normal(value.shape)
        else:
            new = rng.standard_normal(value.shape) / np.sqrt(np.prod(value.shape[1:]))
        state[key] = new.astype(value.dtype)
    model.load_state_dict(state)
