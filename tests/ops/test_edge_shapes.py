"""OpInfo-style sample inputs: a fixed grid of edge shapes through both copies of every op, each against PyTorch.

PyTorch's OpInfo samples run each op on degenerate shapes (one pixel, one channel, batch 1, odd sizes, kernels
larger than the image). The hypothesis draws in cases.py reach such shapes only now and then; here every op of
both the teaching copy (NCHW) and the fast copy (NHWC, run through tests/kernels' layout adapter) runs on every
shape of :data:`SHAPES` in both dtypes, forward and backward, compared with torch as test_vs_torch.py does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from ..kernels.test_nhwc import run_fast
from .cases import CASES, OpCase, Problem, batch_norm_problem, conv2d_problem, convmod_problem, mlp_problem
from .test_vs_torch import check_against_torch

# (N, C, H, W): one pixel, one channel, batch 1, a single row or column, odd and prime sizes. C = 2 and
# N*H*W = 2 are left out: normalisations over two values are ill-conditioned in float32 (cases.Problem).
SHAPES = [(1, 1, 1, 1), (1, 3, 1, 1), (3, 1, 1, 1), (1, 1, 5, 3), (2, 3, 1, 7), (3, 1, 7, 1), (1, 5, 3, 3)]

Builder = Callable[[np.random.Generator, tuple[int, int, int, int]], Problem | None]


def _n(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape)


def _patchify(rng: np.random.Generator, s: tuple[int, int, int, int]) -> Problem | None:
    n, c, h, w = s
    return conv2d_problem(rng, n, c, h, w, 3, 2, stride=2) if h >= 2 and w >= 2 else None


def _bn_train(rng: np.random.Generator, s: tuple[int, int, int, int]) -> Problem | None:
    n, c, h, w = s
    return batch_norm_problem(rng, n, c, h, w, True) if n * h * w > 2 else None


def _ln(rng: np.random.Generator, s: tuple[int, int, int, int]) -> Problem:
    c = s[1]
    return Problem({"x": _n(rng, *s) + 3 * _n(rng, 1, c, 1, 1), "weight": _n(rng, c), "bias": _n(rng, c)},
                   kwargs={"eps": 1e-6})  # fmt: skip


def _residual(rng: np.random.Generator, s: tuple[int, int, int, int], training: bool) -> Problem:
    arrays = {"x": _n(rng, *s), "y": _n(rng, *s), "gamma": _n(rng, s[1])}
    return Problem(arrays, kwargs={"drop_prob": 0.5, "training": training, "seed": 7})


# op name in cases.CASES -> (sample name, builder); a builder returns None where the op has no meaning
SAMPLES: list[tuple[str, str, Builder]] = [
    ("conv2d", "dense_k3_same", lambda r, s: conv2d_problem(r, *s, 2, 3, padding=1)),
    ("conv2d", "dense_k3_stride2", lambda r, s: conv2d_problem(r, *s, 4, 3, stride=2, padding=1, bias=False)),
    ("conv2d", "patchify_k2_stride2", _patchify),
    ("conv2d", "depthwise_k3", lambda r, s: conv2d_problem(r, *s, s[1], 3, padding=1, groups=s[1])),
    ("conv2d", "depthwise_k7_larger_than_image", lambda r, s: conv2d_problem(r, *s, s[1], 7, padding=3, groups=s[1])),
    ("conv1x1", "bias", lambda r, s: Problem({"x": _n(r, *s), "w": _n(r, 3, s[1], 1, 1), "b": _n(r, 3)})),
    ("conv1x1_gelu", "bias", lambda r, s: Problem({"x": _n(r, *s), "w": _n(r, 4, s[1], 1, 1), "b": _n(r, 4)})),
    ("layer_norm", "eps1e-6", _ln),
    ("batch_norm2d", "train", _bn_train),
    ("batch_norm2d", "eval", lambda r, s: batch_norm_problem(r, *s, False)),
    ("gelu", "exact", lambda r, s: Problem({"x": 3 * _n(r, *s)}, kwargs={"approximate": "none"})),
    ("gelu", "tanh", lambda r, s: Problem({"x": 3 * _n(r, *s)}, kwargs={"approximate": "tanh"})),
    ("modulate", "", lambda r, s: Problem({"a": _n(r, *s), "v": _n(r, *s)})),
    ("layer_scale", "", lambda r, s: Problem({"x": _n(r, *s), "gamma": _n(r, s[1])})),
    ("residual_branch", "drop_half", lambda r, s: _residual(r, s, True)),
    ("residual_branch", "eval", lambda r, s: _residual(r, s, False)),
    ("global_avg_pool", "", lambda r, s: Problem({"x": _n(r, *s)})),
    ("pos_residual", "k3", lambda r, s: Problem({"h": _n(r, *s), "w": _n(r, s[1], 1, 3, 3), "b": _n(r, s[1])})),
    ("convmod", "k7", lambda r, s: convmod_problem(r, *s, 7)),
    ("mlp", "ratio4", lambda r, s: mlp_problem(r, *s, 4)),
]

_BY_NAME = {c.name: c for c in CASES}


def _params() -> list[Any]:
    out: list[Any] = []
    for op, sample, build in SAMPLES:
        for i, shape in enumerate(SHAPES):
            problem = build(np.random.default_rng(1000 + i), shape)
            if problem is not None:
                sid = f"{op}-{sample}-{'x'.join(map(str, shape))}".replace("--", "-")
                out.append(pytest.param(_BY_NAME[op], problem, id=sid))
    return out


PARAMS = _params()


def fast(case: OpCase) -> OpCase:
    """The case run through the fast copy (activations moved to NHWC and back)."""
    return replace(case, run=lambda p: run_fast(case, p))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("copy", ["teaching", "fast"])
@pytest.mark.parametrize(("case", "problem"), PARAMS)
def test_edge_shape_matches_torch_in_both_copies(case: OpCase, problem: Problem, copy: str, dtype: type) -> None:
    assert not problem.two_value_norm
    check_against_torch(case if copy == "teaching" else fast(case), problem, dtype)


def test_the_grid_covers_every_op_of_the_fast_copy() -> None:
    from ..kernels.test_nhwc import ACTIVATIONS

    assert {op for op, _, _ in SAMPLES} == set(ACTIVATIONS)
    assert len(PARAMS) >= 100
