"""Tests of the numerical oracle (c2f_numpy.oracle): dumps, files, comparison, the PyTorch dump, the CLI."""

from __future__ import annotations

from typing import Any

import numpy as np

import c2f_numpy as c2f
from c2f_numpy.testing import randomize_for_parity


def reference_model(variant: str = "n", num_classes: int = 10, seed: int = 3, dtype: Any = np.float64) -> Any:
    """A small-input-ready c2f_numpy model with O(1) weights, in eval mode, on the teaching copy when it has a choice.

    The teaching copy (NumPy ops) keeps these tests independent of the Numba kernels and their threads.
    """
    model = c2f.create_model(variant, num_classes=num_classes, dtype=np.float64)
    randomize_for_parity(model, seed)
    if np.dtype(dtype) != np.float64:
        state = model.state_dict()
        model = c2f.create_model(variant, num_classes=num_classes, dtype=dtype)
        model.load_state_dict(state)
    if hasattr(model, "set_backend"):
        model.set_backend("teaching")
    model.eval()
    return model


def seeded_batch(shape: tuple[int, ...] = (1, 3, 32, 48), num_classes: int = 10, seed: int = 0) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), rng.standard_normal((shape[0], num_classes))
