"""Module: the stateful wrapper that holds parameters and buffers and calls the ops.

A module's ``forward(x)`` computes its output and keeps the cache its ``backward(dout)`` needs; ``backward``
returns the gradient of its input and *adds* each parameter's gradient into ``Parameter.grad`` (call
``zero_grad`` between steps, as in PyTorch). One forward, then at most one backward: a second forward
replaces the cache.

Attributes that are :class:`Parameter` or :class:`Module` register themselves when assigned, so state-dict
keys follow the attribute names and nesting (``stages.0.1.attn.att.2.weight``), in PyTorch's order: a
module's own parameters, then its buffers, then its children in assignment order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backend import Ops, teaching_ops

Shape = tuple[int, ...]
Observer = Callable[[str, np.ndarray], None]

# (module id -> name, observer) while an ``observe`` block is active; None otherwise (the common, free case).
_observation: tuple[dict[int, str], Observer] | None = None


@contextmanager
def observe(model: Module, observer: Observer) -> Iterator[None]:
    """Call ``observer(name, output)`` for the output of every module of ``model`` during forwards in the block.

    Names are those of ``model.named_modules()`` (the model itself is ""); children report before their
    parent, as PyTorch forward hooks do. Composite modules whose math runs in one op (ConvMod, the MLP) report
    their children's outputs from the op's cache. The arrays are the model's own: copy them to keep them.
    """
    global _observation
    previous = _observation
    _observation = ({id(m): name for name, m in model.named_modules()}, observer)
    try:
        yield
    finally:
        _observation = previous


def observing() -> bool:
    """True while an observer is active (:func:`emit` reports to it): modules then keep their intermediates."""
    return _observation is not None


def emit(module: Module, output: np.ndarray | Callable[[], np.ndarray]) -> None:
    """Report ``module``'s output to the active observer, if any (always in NCHW, whatever the backend).

    ``output`` may be a function returning it, for a value that is computed only when someone observes."""
    if _observation is not None:
        names, observer = _observation
        name = names.get(id(module))
        if name is not None:
            out = output() if callable(output) else output
            observer(name, out.transpose(0, 3, 1, 2) if module.layout == "NHWC" and out.ndim == 4 else out)


class Parameter:
    """A trainable array and the gradient accumulated into it (None until a backward reaches it)."""

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.grad: np.ndarray | None = None

    def accumulate(self, grad: np.ndarray) -> None:
        if self.grad is None:
            self.grad = grad.copy()
        else:
            self.grad += grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class StateDictError(KeyError):
    """``load_state_dict(strict=True)`` found missing keys, unexpected keys or shape mismatches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class LoadReport:
    """What ``load_state_dict`` could not match: missing keys, unexpected keys and shape mismatches."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # one line per key: "key: checkpoint (a, b) vs model (c, d)"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                parts.append(f"{len(items)} {title} key(s): " + ", ".join(items))
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} shape mismatch(es):\n  " + "\n  ".join(self.mismatched))
        return "\n".join(parts) if parts else "all keys matched"


class Module:
    """Base class: parameter/buffer registry, train/eval mode, state dicts and gradients."""

    training: bool
    F: Ops  # the op namespace it computes with: c2f_numpy.ops (teaching) or c2f_numpy.kernels.nhwc (fast)
    layout: str  # "NCHW" or "NHWC": the layout of the activations it takes and returns
    _parameters: dict[str, Parameter]
    _buffers: dict[str, np.ndarray]
    _modules: dict[str, Module]

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "F", teaching_ops())
        object.__setattr__(self, "layout", "NCHW")

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, value: np.ndarray) -> None:
        """A state-dict entry that is not trained (BatchNorm's running statistics)."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    # ---------------------------------------------------------------------------------------------- traversal
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(key, Parameter) for every parameter, keys as in the state dict."""
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        for prefix, module in self.named_modules():
            for name, b in module._buffers.items():
                yield (f"{prefix}.{name}" if prefix else name), b

    def _state_items(self, prefix: str = "") -> Iterator[tuple[str, Module, str, bool]]:
        """(key, owner, attribute, is_parameter) in PyTorch's state-dict order."""
        for name in self._parameters:
            yield (f"{prefix}{name}", self, name, True)
        for name in self._buffers:
            yield (f"{prefix}{name}", self, name, False)
        for name, child in self._modules.items():
            yield from child._state_items(f"{prefix}{name}.")

    # ---------------------------------------------------------------------------------------------- state
    def state_arrays(self) -> Iterator[tuple[str, np.ndarray]]:
        """The live arrays of every parameter and buffer (not copies), keyed and ordered as ``state_dict()``:
        for code that updates or reads the whole state every step (the EMA, data-parallel helpers)."""
        for key, owner, attr, is_param in self._state_items():
            yield key, (owner._parameters[attr].data if is_param else owner._buffers[attr])

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed and ordered as PyTorch's ``state_dict()``."""
        return {key: value.copy() for key, value in self.state_arrays()}

    def load_state_dict(self, state_dict: Mapping[str, np.ndarray], strict: bool = True) -> LoadReport:
        """Copy arrays into the parameters and buffers of the same key.

        Floating arrays are cast to the model's dtype (a float16 checkpoint loads into a float32 model);
        integer buffers keep their dtype. With ``strict`` any missing key, unexpected key or shape mismatch
        raises :class:`StateDictError` listing all of them and nothing is loaded; otherwise the matching
        entries load and the report says what did not.
        """
        report = LoadReport()
        plan = []
        own = {key: (owner, attr, is_param) for key, owner, attr, is_param in self._state_items()}
        for key, (owner, attr, is_param) in own.items():
            if key not in state_dict:
                report.missing.append(key)
                continue
            target = owner._parameters[attr].data if is_param else owner._buffers[attr]
            value = np.asarray(state_dict[key])
            if value.shape != target.shape:
                report.mismatched.append(self._describe_mismatch(key, value.shape, target.shape))
                continue
            plan.append((owner, attr, is_param, value.astype(target.dtype)))
        report.unexpected = [k for k in state_dict if k not in own]
        if strict and not report.ok:
            raise StateDictError(f"{type(self).__name__}.load_state_dict (strict):\n{report}")
        for owner, attr, is_param, value in plan:
            if is_param:
                owner._parameters[attr].data[...] = value
            else:
                owner._buffers[attr][...] = value
        return report

    def _describe_mismatch(self, key: str, got: Shape, want: Shape) -> str:
        return f"{key}: checkpoint {got} vs model {want}"

    # ---------------------------------------------------------------------------------------------- modes, grads
    def train(self, mode: bool = True) -> Module:
        for _, module in self.named_modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def set_ops(self, namespace: Ops, layout: str) -> None:
        """Compute with ``namespace`` on activations in ``layout`` ("NCHW" or "NHWC"), for all submodules.

        ``c2f_numpy.backend.select(name)`` gives the (namespace, layout) pair of a copy."""
        for _, module in self.named_modules():
            object.__setattr__(module, "F", namespace)
            object.__setattr__(module, "layout", layout)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def grads(self) -> dict[str, np.ndarray]:
        """Copies of every parameter's accumulated gradient, keyed like ``named_parameters`` (zeros where none).

        Copies, so a result kept across steps does not change when later backwards accumulate; an optimizer
        reads ``Parameter.grad`` through ``named_parameters()`` instead.
        """
        return {k: (p.grad.copy() if p.grad is not None else np.zeros_like(p.data)) for k, p in self.named_parameters()}

    def num_parameters(self) -> int:
        return sum(p.data.size for p in self.parameters())

    # ---------------------------------------------------------------------------------------------- compute
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.forward(x)
        emit(self, out)
        return out

    def count_macs(self, shape: Shape) -> tuple[Shape, int]:
        """(output shape, multiply-accumulates of convolutions and linear layers) for an input shape."""
        return shape, 0

    def _param_arrays(self) -> dict[str, np.ndarray]:
        """Parameter arrays keyed relative to this module: the ``params`` mapping of a composite op."""
        return {k: p.data for k, p in self.named_parameters()}

    def _accumulate(self, grads: Mapping[str, np.ndarray | None]) -> None:
        """Add a composite op's gradients (keyed like ``_param_arrays``) into the parameters."""
        params = dict(self.named_parameters())
        for k, g in grads.items():
            if g is not None:
                params[k].accumulate(g)

    def _need_cache(self, cache: object) -> Any:
        if cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward before it")
        return cache

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append("  (" + name + "): " + repr(child).replace("\n", "\n  "))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"
