"""Helpers for ops composed from other ops: parameter dicts keyed by the official checkpoint sub-keys.

The composites (ConvMod, the MLP branch) are written once, as ``*_over(F, ...)`` functions over an op namespace
``F`` that satisfies :class:`c2f_numpy.backend.Ops`; each copy's public ``convmod_forward`` etc. runs them over
its own ops (the teaching copy over :mod:`c2f_numpy.ops`, the fast copy over :mod:`c2f_numpy.kernels.nhwc`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from .checks import CHANNELS_FIRST, CHANNELS_LAST, Layout, OpInputError

if TYPE_CHECKING:
    from ..backend import Ops


def layout_of(F: Ops) -> Layout:
    """The activation layout of an op namespace (:class:`c2f_numpy.backend.Ops`), from its ``CHANNEL_AXIS``."""
    return CHANNELS_FIRST if F.CHANNEL_AXIS == 1 else CHANNELS_LAST


def check_param_keys(op: str, params: Mapping[str, np.ndarray], expected: tuple[str, ...]) -> None:
    """Require exactly the expected keys, naming any missing or unexpected ones."""
    if not isinstance(params, Mapping):
        raise OpInputError(f"{op}: params must be a mapping of name -> array, got {type(params).__name__}")
    missing = [k for k in expected if k not in params]
    extra = sorted(k for k in params if k not in expected)
    if missing or extra:
        raise OpInputError(
            f"{op}: params must have exactly the keys {list(expected)}; missing {missing}, unexpected {extra}"
        )


def with_bias(
    grads: tuple[np.ndarray, np.ndarray, np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dw, db) of a conv that had a bias: narrows db from ``ndarray | None`` for the type checker."""
    dx, dw, db = grads
    assert db is not None, "the forward of this conv had no bias"
    return dx, dw, db
