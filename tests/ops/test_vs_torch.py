"""Every op, forward and backward, against PyTorch (the same math in an independent implementation).

Both sides get the same inputs in the same dtype; the c2f_numpy backward gets upstream gradient R and torch's
autograd gets the same R. Outputs and every input gradient must agree to the tolerance of the dtype
(c2f_numpy.testing.TOLERANCES). The largest differences seen are printed at the end of the run.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from c2f_numpy.testing import assert_close, compare, tolerance

from ..conftest import TORCH_DIFFS
from .cases import CASES, EDGE_CASES, OpCase, Problem

DTYPES = (np.float64, np.float32)
# torch warns that it copies the input for padding="same" with an even kernel; that is its business, not a defect.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")


# Test inputs and upstream gradients are unit-scale normals, so every tensor's natural scale is at least 1.
SCALE_FLOOR = 1.0


def run_torch(case: OpCase, p: Problem, r: np.ndarray) -> dict[str, np.ndarray]:
    """Output and input gradients (upstream gradient r) from PyTorch, named "out" and "d<input>"."""
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in p.arrays.items()}
    out = case.torch_fn(leaves, p)
    out.backward(torch.tensor(r))
    grads = {f"d{k}": t.grad.numpy() for k, t in leaves.items() if t.grad is not None}
    return {"out": out.detach().numpy()} | grads


def check_against_torch(case: OpCase, problem: Problem, dtype: type) -> None:
    p = problem.astype(dtype)
    out, backward = case.run(p)
    r = np.random.default_rng(3).standard_normal(np.shape(out)).astype(dtype)
    grads = backward(r if isinstance(out, np.ndarray) else float(r))
    if isinstance(out, np.ndarray):
        assert out.dtype == dtype, f"{case.name}: output dtype {out.dtype}, input dtype {np.dtype(dtype)}"
    ours = {"out": np.asarray(out, dtype=dtype)} | {f"d{k}": g for k, g in grads.items()}
    theirs = run_torch(case, p, r)
    assert set(theirs) == set(ours), f"{case.name}: torch gave {sorted(theirs)}, c2f_numpy {sorted(ours)}"
    dt = np.dtype(dtype).name
    if dt == "float64":
        for name in ours:
            result = assert_close(f"{case.name} {name}", ours[name], theirs[name], scale_floor=SCALE_FLOOR)
            TORCH_DIFFS.add(dt, result.scaled, f"{case.name} {name}")
        return
    # float32: against the float64 reference on the same rounded inputs (see c2f_numpy.testing)
    truth = run_torch(case, p.astype(np.float64), r.astype(np.float64))
    for name in ours:
        result = assert_close(f"{case.name} {name} (float32 vs float64 reference)", ours[name], truth[name],
                              tol=tolerance(dtype), scale_floor=SCALE_FLOOR)  # fmt: skip
        TORCH_DIFFS.add("float32 vs float64 reference", result.scaled, f"{case.name} {name}")
        direct = compare(f"{case.name} {name}", ours[name], theirs[name], scale_floor=SCALE_FLOOR)
        TORCH_DIFFS.add("float32 vs torch float32", direct.scaled, f"{case.name} {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@given(data=st.data())
def test_matches_torch(case: OpCase, dtype: type, data: st.DataObject) -> None:
    problem = data.draw(case.problems, label="problem")
    assume(dtype is np.float64 or not problem.two_value_norm)
    check_against_torch(case, problem, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("case", "name", "problem"), EDGE_CASES, ids=[f"{c.name}-{n}" for c, n, _ in EDGE_CASES])
def test_matches_torch_edge_cases(case: OpCase, name: str, problem: Problem, dtype: type) -> None:
    assert not problem.two_value_norm, "edge cases must be well-conditioned in both dtypes"
    check_against_torch(case, problem, dtype)
