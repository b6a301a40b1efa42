"""Drop path: the seeded per-sample mask, its rate, and its scaling (beyond the generic op tests)."""

from __future__ import annotations

import numpy as np

from c2f_numpy import ops


def test_drop_path_keeps_the_expected_fraction_and_scales_by_keep() -> None:
    n, p = 20000, 0.3
    x = np.ones((n, 2, 1, 1))
    y, _ = ops.drop_path_forward(x, p, training=True, rng=np.random.default_rng(0))
    kept = y[:, 0, 0, 0] != 0
    # whole samples are dropped or kept, and kept ones are scaled by 1/keep so E[y] = x
    assert np.array_equal(y[:, 0], y[:, 1])
    np.testing.assert_allclose(y[kept], 1 / (1 - p), rtol=1e-15)
    sigma = np.sqrt(n * p * (1 - p))
    assert abs((~kept).sum() - n * p) < 5 * sigma  # 5 sigma: fails by chance with probability < 1e-6


def test_drop_path_is_reproducible_from_the_seed() -> None:
    x = np.random.default_rng(1).standard_normal((64, 3, 2, 2))
    a, _ = ops.drop_path_forward(x, 0.5, training=True, rng=np.random.default_rng(42))
    b, _ = ops.drop_path_forward(x, 0.5, training=True, rng=np.random.default_rng(42))
    c, _ = ops.drop_path_forward(x, 0.5, training=True, rng=np.random.default_rng(43))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_drop_path_is_identity_in_eval_and_at_zero() -> None:
    x = np.random.default_rng(2).standard_normal((8, 3))
    for y, _ in (ops.drop_path_forward(x, 0.9, training=False), ops.drop_path_forward(x, 0.0, training=True)):
        assert np.array_equal(y, x) and y is not x


def test_drop_path_one_drops_everything() -> None:
    x = np.ones((5, 2), dtype=np.float32)
    y, cache = ops.drop_path_forward(x, 1.0, training=True, rng=np.random.default_rng(0))
    assert not y.any() and y.dtype == np.float32
    assert not ops.drop_path_backward(np.ones_like(x), cache).any()


def test_drop_path_expectation_is_the_identity() -> None:
    n, p = 40000, 0.4
    row = np.random.default_rng(3).standard_normal((1, 3, 2, 2))
    y, _ = ops.drop_path_forward(np.repeat(row, n, axis=0), p, training=True, rng=np.random.default_rng(4))
    # per element, y = x * Bernoulli(keep) / keep has standard deviation |x| * sqrt(p / keep)
    bound = 5 * np.abs(row[0]) * np.sqrt(p / (1 - p)) / np.sqrt(n)
    assert (np.abs(y.mean(axis=0) - row[0]) < bound).all()
