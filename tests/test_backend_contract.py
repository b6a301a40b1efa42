"""The op contract (c2f_numpy.backend.Ops): both copies offer every op the model calls, with the same signature.

mypy checks the same contract statically (``teaching_ops`` / ``fast_ops`` return the modules as ``Ops``); these
tests also cover parameter names and default values, which a structural type check does not compare, and keep
the Protocol's list equal to the ops the code actually calls through ``F``.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import c2f_numpy
from c2f_numpy import backend, ops
from c2f_numpy.backend import Ops
from c2f_numpy.kernels import nhwc

PACKAGE = Path(c2f_numpy.__file__).parent
COPIES = {"teaching": ops, "fast": nhwc}


def contract_ops() -> list[str]:
    return sorted(n for n, v in vars(Ops).items() if inspect.isfunction(v) and not n.startswith("_"))


def contract_constants() -> list[str]:
    return sorted(Ops.__annotations__)


def parameters(fn: object, drop_self: bool = False) -> list[tuple[str, object, object]]:
    """(name, kind, default) of each parameter: what a caller relies on (annotations name each copy's caches)."""
    params = list(inspect.signature(fn).parameters.values())  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in params[1 if drop_self else 0 :]]


def called_through_f() -> set[str]:
    """Every attribute read as ``F.<name>`` or ``self.F.<name>`` anywhere in the package's source."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                base = node.value
                if (isinstance(base, ast.Name) and base.id == "F") or (
                    isinstance(base, ast.Attribute) and base.attr == "F"
                ):
                    names.add(node.attr)
    return names


def test_the_contract_lists_exactly_what_the_model_calls() -> None:
    called = called_through_f()
    listed = set(contract_ops()) | set(contract_constants())
    assert called, "found no F.<op> calls: the scan is broken"
    assert called - listed == set(), "called through F but missing from backend.Ops"
    assert listed - called == set(), "listed in backend.Ops but never called through F"


@pytest.mark.parametrize("copy", sorted(COPIES))
@pytest.mark.parametrize("name", contract_ops())
def test_each_copy_has_the_op_with_the_contract_signature(copy: str, name: str) -> None:
    module = COPIES[copy]
    assert hasattr(module, name), f"{module.__name__} has no {name}"
    want = parameters(getattr(Ops, name), drop_self=True)
    assert parameters(getattr(module, name)) == want, f"{module.__name__}.{name} differs from backend.Ops.{name}"


@pytest.mark.parametrize("copy", sorted(COPIES))
def test_each_copy_says_where_its_channels_are(copy: str) -> None:
    want = {"NCHW": (1, "(N, C, H, W)"), "NHWC": (-1, "(N, H, W, C)")}[backend.LAYOUTS[copy]]
    got = (COPIES[copy].CHANNEL_AXIS, COPIES[copy].LAYOUT)
    assert got == want


@pytest.mark.parametrize(("name", "module", "layout"), [
    ("teaching", ops, "NCHW"), ("numpy", ops, "NCHW"), ("fast", nhwc, "NHWC"), ("numba", nhwc, "NHWC"),
])  # fmt: skip
def test_select_maps_names_and_aliases_to_the_copies(name: str, module: object, layout: str) -> None:
    assert backend.select(name) == (module, layout)


def test_an_unknown_backend_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'fast', 'teaching'.*'numba' = 'fast'.*got 'torch'"):
        backend.select("torch")
