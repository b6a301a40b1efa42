"""One process's share of training: a slice's forward and backward, and evaluation sums.

These are what a training step and an evaluation are made of, with one process (``train/loop.py`` calls them
directly) or with several (``train/parallel.py`` runs them in every rank on its slice of the batch or of the
evaluation set and adds up the results).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data import normalize
from ..models import Conv2Former
from ..ops import cross_entropy_backward, cross_entropy_forward


def live_state(model: Conv2Former) -> list[tuple[str, np.ndarray]]:
    """The model's floating-point parameters and buffers, the live arrays, in state-dict order."""
    return [(k, a) for k, a in model.state_arrays() if np.issubdtype(a.dtype, np.floating)]


def shard_forward_backward(
    model: Conv2Former, x: np.ndarray, targets: np.ndarray, label_smoothing: float, share: float
) -> tuple[float, int]:
    """Forward, cross-entropy and backward of one slice of a batch, accumulating into the gradients.

    ``share`` = n_slice / n_batch seeds the loss gradient, so the slices' gradients add up to the gradient of
    the batch's mean loss (share 1.0: the whole batch). Returns (the slice's mean loss, correct predictions).
    A non-finite loss is returned, not raised: the caller decides (the gradients are then meaningless).
    """
    # A diverging run overflows somewhere before its loss turns NaN; the caller reports it clearly.
    with np.errstate(over="ignore", invalid="ignore"):
        logits = model(x)
        loss, cache = cross_entropy_forward(logits, targets, label_smoothing)
        if np.isfinite(loss):
            model.backward(cross_entropy_backward(share, cache))
    labels = targets if targets.ndim == 1 else targets.argmax(axis=1)
    return loss, int((logits.argmax(axis=1) == labels).sum())


def eval_sums(
    model: Conv2Former,
    images: np.ndarray,
    labels: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    hflip: bool,
) -> dict[str, float]:
    """Summed cross-entropy and number of correct predictions over ``images`` (uint8, N C H W) in eval mode:
    ``{"loss": .., "acc": ..}``, with ``hflip`` also ``loss_hflip`` / ``acc_hflip`` of the logits averaged
    over each image and its left-right mirror."""
    views = ("", "_hflip") if hflip else ("",)
    sums = {f"{kind}{view}": 0.0 for view in views for kind in ("loss", "acc")}
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            x = normalize(images[start : start + batch_size], mean, std).astype(model.dtype, copy=False)
            y = labels[start : start + batch_size]
            logits = model(x)
            outputs = {"": logits}
            if hflip:
                mirrored = model(np.ascontiguousarray(x[..., ::-1]))
                outputs["_hflip"] = (logits + mirrored) * logits.dtype.type(0.5)
            for view, out in outputs.items():
                loss, _ = cross_entropy_forward(out, y)
                sums[f"loss{view}"] += loss * len(y)
                sums[f"acc{view}"] += int((out.argmax(axis=1) == y).sum())
    finally:
        model.train()
    return sums
