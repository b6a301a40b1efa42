"""The op contract between the model and its two copies of the ops, and the one place that picks a copy.

The model's modules never import an op: they call ``self.F.<op>``, where ``F`` is one of two namespaces that
implement the same ops with the same signatures:

    backend      module                       layout inside   what it is for
    "teaching"   c2f_numpy.ops                NCHW            the readable NumPy math, the reference
    "fast"       c2f_numpy.kernels.nhwc       NHWC            Numba kernels and BLAS GEMMs; the default

:class:`Ops` lists every op the model calls through ``F`` with its signature; both modules satisfy it (mypy
checks that in :func:`teaching_ops` and :func:`fast_ops`, and ``tests/test_backend_contract.py`` checks the
signatures and that the list matches what the model calls). :func:`select` maps a backend name to the copy
and its activation layout; ``Conv2Former.set_backend`` calls it. The names ``"numpy"`` and ``"numba"`` are
accepted aliases of ``"teaching"`` and ``"fast"`` (the spellings of earlier releases, kept for scripts and
the ``--backend`` flags).

Caches are typed ``Any`` here: each copy's forward returns its own cache type, which only the same copy's
backward reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from .ops.conv import Padding
    from .ops.norm import BatchNormStats

TEACHING, FAST = "teaching", "fast"
BACKENDS = (FAST, TEACHING)  # the default first
ALIASES = {"numpy": TEACHING, "numba": FAST}
LAYOUTS = {TEACHING: "NCHW", FAST: "NHWC"}


class Ops(Protocol):
    """The ops the model's modules call through ``F``: forward ``-> (out, cache)``, backward ``(dout, cache)``.

    Shapes are written for the teaching copy (NCHW); the fast copy takes the same arrays channels-last, with
    the weights in the checkpoint layout in both. ``CHANNEL_AXIS`` and ``LAYOUT`` tell the composites
    (ConvMod, the MLP branch) where the channels are.
    """

    CHANNEL_AXIS: int  # 1 (NCHW) or -1 (NHWC)
    LAYOUT: str  # the activation layout, for error messages: "(N, C, H, W)" or "(N, H, W, C)"

    # convolutions and linear layers: weight (C_out, C_in/groups, kH, kW) or (out, in)
    def conv2d_forward(
        self,
        x: np.ndarray,
        w: np.ndarray,
        b: np.ndarray | None = None,
        *,
        stride: int | Sequence[int] = 1,
        padding: Padding = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
    ) -> tuple[np.ndarray, Any]: ...
    def conv2d_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]: ...
    def conv1x1_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray, Any]: ...
    def conv1x1_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]: ...
    def conv1x1_gelu_forward(
        self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None
    ) -> tuple[np.ndarray, Any]: ...
    def conv1x1_gelu_backward(
        self, dout: np.ndarray, cache: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]: ...
    def linear_forward(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> tuple[np.ndarray, Any]: ...
    def linear_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]: ...

    # normalisations and the activation: (dx, dweight, dbias) / dx
    def layer_norm_forward(
        self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-6
    ) -> tuple[np.ndarray, Any]: ...
    def layer_norm_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def batch_norm2d_forward(
        self,
        x: np.ndarray,
        weight: np.ndarray,
        bias: np.ndarray,
        stats: BatchNormStats,
        *,
        training: bool,
        momentum: float | None = 0.1,
        eps: float = 1e-5,
    ) -> tuple[np.ndarray, Any, BatchNormStats]: ...
    def batch_norm2d_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
    def gelu_forward(self, x: np.ndarray, approximate: str = "none") -> tuple[np.ndarray, Any]: ...
    def gelu_backward(self, dout: np.ndarray, cache: Any) -> np.ndarray: ...

    # the block: ConvMod's product, the residual add of a branch (layer scale, drop path), the two composites
    def modulate_forward(self, a: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, Any]: ...
    def modulate_backward(self, dm: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray]: ...
    def residual_branch_forward(
        self,
        x: np.ndarray,
        y: np.ndarray,
        gamma: np.ndarray,
        drop_prob: float,
        *,
        training: bool,
        rng: np.random.Generator | None = None,
    ) -> tuple[np.ndarray, Any]: ...
    def residual_branch_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray]: ...
    def pos_residual_forward(self, h: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, Any]: ...
    def pos_residual_backward(
        self, dout: np.ndarray, cache: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]: ...
    def convmod_forward(self, x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Any]: ...
    def convmod_inference(self, x: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray: ...
    def convmod_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...
    def mlp_forward(self, x: np.ndarray, params: Mapping[str, np.ndarray]) -> tuple[np.ndarray, Any]: ...
    def mlp_inference(self, x: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray: ...
    def mlp_backward(self, dout: np.ndarray, cache: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...

    # the head
    def global_avg_pool_forward(self, x: np.ndarray) -> tuple[np.ndarray, Any]: ...
    def global_avg_pool_backward(self, dout: np.ndarray, cache: Any) -> np.ndarray: ...


def teaching_ops() -> Ops:
    """The teaching copy, :mod:`c2f_numpy.ops` (imported here: the ops' composites call this while ops loads)."""
    from . import ops

    return ops


def fast_ops() -> Ops:
    """The fast copy, :mod:`c2f_numpy.kernels.nhwc` (imported on first use: it compiles Numba kernels)."""
    from .kernels import nhwc

    return nhwc


def resolve(backend: str) -> str:
    """The canonical name ("teaching" or "fast") of a backend name or alias; ValueError naming them otherwise."""
    name = ALIASES.get(backend, backend)
    if name not in BACKENDS:
        aliases = ", ".join(f"{a!r} = {c!r}" for a, c in ALIASES.items())
        raise ValueError(f"backend must be one of {BACKENDS} (aliases: {aliases}), got {backend!r}")
    return name


def select(backend: str) -> tuple[Ops, str]:
    """(op namespace, activation layout) of a backend: ("teaching" | "numpy") or ("fast" | "numba")."""
    name = resolve(backend)
    return (fast_ops() if name == FAST else teaching_ops()), LAYOUTS[name]
