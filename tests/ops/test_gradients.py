"""Every hand-written backward against central finite differences, in float64.

For each op: L = sum(out * R) with R a fixed random tensor (so dL/dout = R), the analytic gradient of every
input is checked along a random direction (c2f_numpy.gradcheck), on hypothesis-drawn problems and on the
listed edge cases.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from c2f_numpy.gradcheck import directional_check

from .cases import CASES, EDGE_CASES, OpCase, Problem


def check_against_finite_differences(case: OpCase, problem: Problem) -> None:
    rng = np.random.default_rng(7)
    out, backward = case.run(problem)
    r = rng.standard_normal(np.shape(out))
    grads = backward(r if isinstance(out, np.ndarray) else float(r))
    assert set(grads) == set(problem.arrays), f"{case.name}: gradients for {set(grads)}, inputs {set(problem.arrays)}"
    for name, g in grads.items():
        x = problem.arrays[name]
        assert g.shape == x.shape and g.dtype == x.dtype, f"{case.name}: d{name} {g.shape} {g.dtype} vs {x.shape}"

    def loss(arrays: Mapping[str, np.ndarray]) -> float:
        return float(np.sum(case.run(problem.with_arrays(arrays))[0] * r))

    results = directional_check(loss, problem.arrays, grads, rng)
    bad = [str(res) for res in results if not res.ok]
    assert not bad, f"{case.name} {problem!r}:\n" + "\n".join(bad)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@given(data=st.data())
def test_backward_matches_finite_differences(case: OpCase, data: st.DataObject) -> None:
    problem = data.draw(case.problems, label="problem")
    assume(not problem.two_value_norm)  # see Problem.two_value_norm: covered by the float64 torch check
    check_against_finite_differences(case, problem)


@pytest.mark.parametrize(("case", "name", "problem"), EDGE_CASES, ids=[f"{c.name}-{n}" for c, n, _ in EDGE_CASES])
def test_backward_matches_finite_differences_edge_cases(case: OpCase, name: str, problem: Problem) -> None:
    check_against_finite_differences(case, problem)
