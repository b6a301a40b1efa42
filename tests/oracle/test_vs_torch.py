"""torch_dump of the PyTorch replica agrees with dump of c2f_numpy; seeded bugs in the replica are named first.

Each bug changes one thing in a copy of the replica that holds the same weights: the comparison must be all
OK up to the tensor the bug first touches and name exactly that tensor as the first divergence.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from c2f_numpy.oracle import compare, dump, torch_dump
from c2f_numpy.torch_reference import build_torch_conv2former

from . import reference_model, seeded_batch

SHAPE = (1, 3, 64, 96)  # non-square; stages at 16x24, 8x12, 4x6, 2x3


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One thread: the machine is shared, and the tensors are small."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    ours = reference_model()
    theirs = build_torch_conv2former("n", num_classes=10, dtype=torch.float64)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()}, strict=True)
    theirs.eval()
    x, dlogits = seeded_batch(SHAPE)
    return {"ours": ours, "theirs": theirs, "x": x, "dlogits": dlogits, "reference": dump(ours, x, dlogits)}


def buggy_dump(setup: dict[str, Any], bug: Callable[[torch.nn.Module], None]) -> dict[str, np.ndarray]:
    model = copy.deepcopy(setup["theirs"])
    bug(model)
    return torch_dump(model, setup["x"], setup["dlogits"])


def test_c2f_numpy_and_the_torch_replica_agree_on_every_tensor(setup: dict[str, Any]) -> None:
    ref = setup["reference"]
    theirs = torch_dump(setup["theirs"], setup["x"], setup["dlogits"])
    assert list(theirs) == list(ref)  # the names line up, in the same order
    report = compare(ref, theirs)
    assert report.ok, report.format()
    assert len(report.rows) == len(ref) and not report.missing and not report.extra
    assert report.last_line() == f"no divergence: all {len(ref)} compared tensors OK"
    assert max(r.max_rel for r in report.rows) < 1e-12


def test_modules_that_run_twice_are_recorded_on_request_and_never_blamed(setup: dict[str, Any]) -> None:
    ref = setup["reference"]
    theirs = torch_dump(setup["theirs"], setup["x"], repeated="record")  # forward only
    extra = {"stages.0.0.mlp.act.call1.out", "stages.0.0.mlp.act.call2.out", "stages.0.0.drop_path.call1.out"}
    assert extra <= set(theirs)
    names = list(theirs)
    # at the position of each call: act after fc1, then after pos
    assert names.index("stages.0.0.mlp.fc1.out") < names.index("stages.0.0.mlp.act.call1.out")
    assert names.index("stages.0.0.mlp.pos.out") < names.index("stages.0.0.mlp.act.call2.out")
    report = compare(ref, theirs)
    assert report.ok and set(report.extra) == {n for n in theirs if ".call" in n}
    assert all(m.endswith(".grad") or m == "dlogits" for m in report.missing)
    assert not compare(ref, theirs, strict=True).ok


def ln_eps(model: torch.nn.Module) -> None:
    model.stages[1][0].attn.norm.eps = 1e-5  # PyTorch's default, instead of the official 1e-6


def flipped_kernel(model: torch.nn.Module) -> None:
    conv = model.stages[2][1].attn.att[2]
    with torch.no_grad():
        conv.weight.copy_(torch.flip(conv.weight, dims=(2, 3)))  # cross-correlation vs convolution


def tanh_gelu_attn(model: torch.nn.Module) -> None:
    model.stages[0][1].attn.att[1] = torch.nn.GELU(approximate="tanh")


def tanh_gelu_mlp(model: torch.nn.Module) -> None:
    model.stages[0][1].mlp.act = torch.nn.GELU(approximate="tanh")


@pytest.mark.parametrize(
    ("bug", "first"),
    [
        (ln_eps, "stages.1.0.attn.norm.out"),
        (flipped_kernel, "stages.2.1.attn.att.2.out"),
        (tanh_gelu_attn, "stages.0.1.attn.att.1.out"),
        # mlp.act runs twice and has no entry: the first tensor it feeds is pos's (the conv of act(fc1))
        (tanh_gelu_mlp, "stages.0.1.mlp.pos.out"),
    ],
    ids=["ln-eps", "flipped-kernel", "tanh-gelu-att.1", "tanh-gelu-mlp.act"],
)
def test_a_seeded_bug_is_named_first_at_its_module(
    setup: dict[str, Any], bug: Callable[[torch.nn.Module], None], first: str
) -> None:
    ref = setup["reference"]
    report = compare(ref, buggy_dump(setup, bug))
    assert not report.ok
    assert report.first_divergence is not None and report.first_divergence.name == first, report.format()
    names = [r.name for r in report.rows]
    assert all(r.ok for r in report.rows[: names.index(first)])  # everything before it agrees
    assert report.format().splitlines()[-1].startswith(f"first divergence: {first} (")
    assert report.first_divergence.max_rel > 1e-8  # missed by orders of magnitude, not by rounding


def test_a_backward_only_bug_is_named_in_backward_order(setup: dict[str, Any]) -> None:
    """A wrong input gradient of stages.2.1.mlp.fc2 leaves every forward tensor and fc2's own gradients right."""

    def bad_backward(model: torch.nn.Module) -> None:
        def hook(module: Any, grad_input: Any, grad_output: Any) -> tuple:
            return (grad_input[0] * 1.001,)

        model.stages[2][1].mlp.fc2.register_full_backward_hook(hook)

    report = compare(setup["reference"], buggy_dump(setup, bad_backward))
    first = report.first_divergence
    assert first is not None and first.name == "stages.2.1.mlp.pos.weight.grad", report.format()
    assert all(r.ok for r in report.rows if not r.is_grad)
    ok = {r.name for r in report.rows if r.ok}
    assert {"stages.2.1.mlp.fc2.weight.grad", "stages.2.1.layer_scale_2.grad", "stages.3.0.mlp.fc1.bias.grad"} <= ok
    assert "every forward tensor agrees" in report.format()


def test_a_float32_port_passes_at_the_float32_tolerance(setup: dict[str, Any]) -> None:
    theirs32 = copy.deepcopy(setup["theirs"]).float()
    d32 = torch_dump(theirs32, setup["x"], setup["dlogits"])  # input cast to float32 by torch_dump
    assert d32["input"].dtype == np.float32
    report = compare(setup["reference"], d32)
    assert report.ok, report.format()
    worst = max(r.max_rel for r in report.rows)
    assert 1e-9 < worst < 1e-4 and {r.rtol for r in report.rows} == {1e-4}
    assert not compare(setup["reference"], d32, rtol=1e-10).ok  # float32 rounding is visible at float64's bound


def test_train_mode_dumps_agree_too() -> None:
    ours = reference_model()
    theirs = build_torch_conv2former("n", num_classes=10, dtype=torch.float64)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()}, strict=True)
    ours.train()
    theirs.train()
    x, dlogits = seeded_batch((2, 3, 32, 64))
    report = compare(dump(ours, x, dlogits), torch_dump(theirs, x, dlogits))
    assert report.ok, report.format()
    # BatchNorm updated its running statistics on both sides, as a training step does
    np.testing.assert_allclose(
        ours.state_dict()["downsample_layers.0.2.running_var"],
        theirs.state_dict()["downsample_layers.0.2.running_var"].numpy(),
        rtol=1e-12,
    )
