"""The optimizers against torch.optim: the same parameters after several steps, decay groups included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from c2f_numpy.kernels.optim import PARALLEL_MIN, _adamw_parallel, _adamw_serial
from c2f_numpy.nn import Parameter
from c2f_numpy.testing import assert_close
from c2f_numpy.train import SGD, AdamW


def _setup(seed: int = 0) -> tuple[list[tuple[str, Parameter]], list[torch.nn.Parameter], list[list[np.ndarray]]]:
    rng = np.random.default_rng(seed)
    shapes = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "norm.weight": (4,), "pred.weight": (5, 4)}
    ours = [(k, Parameter(rng.standard_normal(s))) for k, s in shapes.items()]
    theirs = [torch.nn.Parameter(torch.tensor(p.data.copy())) for _, p in ours]
    grads = [[rng.standard_normal(s) for s in shapes.values()] for _ in range(5)]
    return ours, theirs, grads


def _run(opt: object, t_opt: torch.optim.Optimizer, ours: list, theirs: list, grads: list) -> None:
    for step in grads:
        for (_, p), tp, g in zip(ours, theirs, step, strict=True):
            p.grad = g.copy()
            tp.grad = torch.tensor(g)
        opt.step()  # type: ignore[attr-defined]
        t_opt.step()
    for (name, p), tp in zip(ours, theirs, strict=True):
        assert_close(name, p.data, tp.detach().numpy())


@pytest.mark.parametrize("fused", [True, False], ids=["numba", "numpy"])
def test_adamw_matches_torch_with_decay_only_on_matrices(fused: bool) -> None:
    ours, theirs, grads = _setup()
    opt = AdamW(ours, lr=3e-2, weight_decay=0.1, fused=fused)
    pairs = list(zip(ours, theirs, strict=True))
    groups = [
        {"params": [t for (_, p), t in pairs if p.data.ndim > 1], "weight_decay": 0.1},
        {"params": [t for (_, p), t in pairs if p.data.ndim <= 1], "weight_decay": 0.0},
    ]
    _run(opt, torch.optim.AdamW(groups, lr=3e-2), ours, theirs, grads)


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_matches_torch(nesterov: bool) -> None:
    ours, theirs, grads = _setup(1)
    opt = SGD(ours, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=1e-3, no_decay=lambda n, p: False)
    t_opt = torch.optim.SGD(theirs, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=1e-3)
    _run(opt, t_opt, ours, theirs, grads)


def test_state_dict_round_trip_continues_identically() -> None:
    ours, _, grads = _setup(2)
    twin = [(n, Parameter(p.data.copy())) for n, p in ours]
    a, b = AdamW(ours, lr=1e-2), AdamW(twin, lr=1e-2)
    for (_, p), g in zip(ours, grads[0], strict=True):
        p.grad = g
    a.step()
    for (_, p), (_, q) in zip(ours, twin, strict=True):
        q.data[...] = p.data
    b.load_state_dict(a.state_dict())
    for params, opt in ((ours, a), (twin, b)):
        for (_, p), g in zip(params, grads[1], strict=True):
            p.grad = g
        opt.step()
    for (_, p), (_, q) in zip(ours, twin, strict=True):
        assert np.array_equal(p.data, q.data)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_adamw_equals_the_numpy_form(dtype: type) -> None:
    rng = np.random.default_rng(4)
    a = [
        ("w", Parameter(rng.standard_normal((6, 5)).astype(dtype))),
        ("b", Parameter(rng.standard_normal(5).astype(dtype))),
        ("big", Parameter(rng.standard_normal((300, 111)).astype(dtype))),  # the fused kernel's parallel loop
    ]
    assert a[2][1].data.size >= PARALLEL_MIN
    b = [(n, Parameter(p.data.copy())) for n, p in a]
    fused, plain = AdamW(a, lr=1e-2, fused=True), AdamW(b, lr=1e-2, fused=False)
    for _ in range(4):
        gs = [rng.standard_normal(p.data.shape).astype(dtype) for _, p in a]
        for (_, p), (_, q), g in zip(a, b, gs, strict=True):
            p.grad, q.grad = g, g.copy()
        fused.step()
        plain.step()
    for (name, p), (_, q) in zip(a, b, strict=True):
        assert_close(name, p.data, q.data)


def test_fused_adamw_parallel_loop_equals_serial_loop_bitwise() -> None:
    rng = np.random.default_rng(5)
    p, g, m, v = (rng.standard_normal(PARALLEL_MIN + 1001).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    args = (3e-3, 0.9, 0.999, 1e-8, 0.05, 1 - 0.9**3, 1 - 0.999**3)
    serial = [a.copy() for a in (p, g, m, v)]
    _adamw_serial(*serial, *args)
    _adamw_parallel(p, g, m, v, *args)
    for x, y in zip((p, m, v), (serial[0], serial[2], serial[3]), strict=True):
        assert np.array_equal(x, y)
