"""Softmax cross-entropy with label smoothing, averaged over the batch (``torch.nn.CrossEntropyLoss``).

With p = softmax(z) and the smoothed target q = (1 - eps) * t + eps / K (t one-hot, or a probability vector
for mixup/cutmix targets):

    loss = -(1/N) sum_n sum_k q[n, k] * log p[n, k]       dloss/dz[n] = (p[n] - q[n]) / N * dloss

(the gradient uses sum_k q[n, k] = 1). log p is computed as z - max z - log sum exp(z - max z), so large
logits do not overflow. A NaN or inf logit gives a NaN loss, which callers must treat as fatal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import OpDTypeError, OpInputError, check_array


@dataclass(frozen=True)
class CrossEntropyCache:
    p: np.ndarray  # softmax probabilities (N, K)
    q: np.ndarray  # smoothed targets (N, K)


def cross_entropy_forward(
    logits: np.ndarray, target: np.ndarray, label_smoothing: float = 0.0
) -> tuple[float, CrossEntropyCache]:
    """Mean cross-entropy. Shapes: logits (N, K); target (N,) integer class indices in [0, K) or (N, K)
    probabilities (each row summing to 1). Returns (loss as a Python float, cache)."""
    op = "cross_entropy"
    logits = check_array(op, "logits", logits, 2, "(N, K)")
    n, k = logits.shape
    if n == 0 or k == 0:
        raise OpInputError(f"{op}: logits must be non-empty, got shape {logits.shape}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise OpInputError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if not isinstance(target, np.ndarray):
        raise OpInputError(f"{op}: target must be a numpy.ndarray, got {type(target).__name__}")
    if target.ndim == 1:
        if not np.issubdtype(target.dtype, np.integer):
            raise OpDTypeError(f"{op}: class-index target must have an integer dtype, got {target.dtype}")
        if target.shape != (n,):
            raise OpInputError(
                f"{op}: target must have shape ({n},) to match logits {logits.shape}, got {target.shape}"
            )
        if target.min() < 0 or target.max() >= k:
            raise OpInputError(
                f"{op}: class indices must be in [0, {k}), got min {target.min()} and max {target.max()}"
            )
        t = np.zeros_like(logits)
        t[np.arange(n), target] = 1.0
    else:
        target = check_array(op, "target", target, 2, "(N, K) probabilities", dtype=logits.dtype)
        if target.shape != logits.shape:
            raise OpInputError(f"{op}: probability target must have shape {logits.shape}, got {target.shape}")
        t = target
    q = (1.0 - label_smoothing) * t + label_smoothing / k
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite logits give a NaN loss, by design
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-(q * logp).sum() / n)
    return loss, CrossEntropyCache(np.exp(logp), q.astype(logits.dtype, copy=False))


def cross_entropy_backward(dloss: float, cache: CrossEntropyCache) -> np.ndarray:
    """Returns dlogits = dloss * (p - q) / N."""
    n = cache.p.shape[0]
    return ((cache.p - cache.q) * (dloss / n)).astype(cache.p.dtype, copy=False)
