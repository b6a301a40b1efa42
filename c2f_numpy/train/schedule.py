"""Learning-rate and drop-path schedules, as pure functions of the optimizer step (so a resumed run recomputes
exactly the values an uninterrupted one used).

cosine_lr: linear warmup from ``warmup_start * base_lr`` to ``base_lr`` over ``warmup_steps``, then half a cosine
down to ``min_lr`` at ``total_steps`` (Loshchilov & Hutter 2017, SGDR without restarts; the warmup as in Goyal
et al. 2017). ``step`` counts optimizer steps taken before this one (0 for the first).
"""

from __future__ import annotations

import math


def cosine_lr(
    step: int, total_steps: int, base_lr: float, *, warmup_steps: int = 0, min_lr: float = 0.0,
    warmup_start: float = 0.0,
) -> float:  # fmt: skip
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"cosine_lr: need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got "
                         f"{total_steps} and {warmup_steps}")  # fmt: skip
    if step < 0:
        raise ValueError(f"cosine_lr: step must be >= 0, got {step}")
    if step < warmup_steps:
        frac = (step + 1) / warmup_steps
        return base_lr * (warmup_start + (1.0 - warmup_start) * frac)
    decay_steps = total_steps - warmup_steps
    progress = min(1.0, (step - warmup_steps) / decay_steps) if decay_steps else 1.0
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
