"""Softmax cross-entropy with label smoothing, averaged over the batch (``torch.nn.CrossEntropyLoss``).

With p = softmax(z) and the smoothed target q = (1 - eps) * t + eps / K (t one-hot, or rows of probabilities
for mixup/cutmix targets, or any soft targets, normalised or not):

    loss = -(1/N) sum_n sum_k q[n, k] * log p[n, k]
    dloss/dz[n] = (p[n] * sum_k q[n, k] - q[n]) / N * dloss

which is PyTorch's gradient for every target. For class indices and rows summing to 1, sum_k q = 1 and the
gradient is the familiar (p - q) / N; a soft target whose rows do not sum to 1 (unnormalised mixup labels, a
user's scores) needs the row sum, and gets it: the op never assumes normalised rows. log p is computed as
z - max z - log sum exp(z - max z), so large logits do not overflow. A NaN or inf logit gives a NaN loss, which
callers must treat as fatal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import OpDTypeError, OpInputError, OpTypeError, check_array, check_float, check_shape


@dataclass(frozen=True)
class CrossEntropyCache:
    p: np.ndarray  # softmax probabilities (N, K)
    q: np.ndarray  # smoothed targets (N, K)
    q_sum: np.ndarray | None  # (N, 1) row sums of q for probability targets; None for class indices (exactly 1)


def cross_entropy_forward(
    logits: np.ndarray, target: np.ndarray, label_smoothing: float = 0.0
) -> tuple[float, CrossEntropyCache]:
    """Mean cross-entropy. Shapes: logits (N, K); target (N,) integer class indices in [0, K) or (N, K)
    probabilities of logits' dtype (rows need not sum to 1: the gradient uses their sums, as PyTorch's does).
    ``label_smoothing`` in [0, 1]. Returns (loss as a Python float, cache)."""
    op = "cross_entropy"
    logits = check_array(op, "logits", logits, 2, "(N, K)")
    n, k = logits.shape
    label_smoothing = check_float(op, "label_smoothing", label_smoothing, low=0.0, high=1.0)
    if not isinstance(target, np.ndarray):
        raise OpTypeError(f"{op}: target must be a numpy.ndarray, got {type(target).__name__}")
    q_sum = None
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
        t = check_array(op, "target", target, 2, "(N, K) probabilities", dtype=logits.dtype)
        check_shape(op, "target", t, logits.shape, "(N, K), like logits")
    q = ((1.0 - label_smoothing) * t + label_smoothing / k).astype(logits.dtype, copy=False)
    if target.ndim != 1:
        q_sum = q.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite logits give a NaN loss, by design
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-(q * logp).sum() / n)
    return loss, CrossEntropyCache(np.exp(logp), q, q_sum)


def cross_entropy_backward(dloss: float, cache: CrossEntropyCache) -> np.ndarray:
    """Returns dlogits = dloss * (p * sum_k q - q) / N (p - q when the rows of q sum to 1 exactly: class indices)."""
    dloss = check_float("cross_entropy_backward", "dloss", dloss, low=-np.inf)
    n = cache.p.shape[0]
    pq = cache.p if cache.q_sum is None else cache.p * cache.q_sum
    return ((pq - cache.q) * (dloss / n)).astype(cache.p.dtype, copy=False)
