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


def warmup_steps(steps_per_epoch: int, total_steps: int, warmup_epochs: float, warmup_fraction: float) -> int:
    """Warmup length in steps: ``warmup_epochs`` epochs, but at most ``warmup_fraction`` of the run.

    min(round(warmup_epochs * steps_per_epoch), round(warmup_fraction * total_steps)), so the recipe's half
    epoch of an 11-epoch run (4.5% of it) stays half an epoch, and a one-epoch run warms up for 5% of its
    steps and then decays (with a warmup of a whole epoch it would end at the peak lr, never annealed).
    """
    if steps_per_epoch < 1 or total_steps < 1:
        raise ValueError(
            f"warmup_steps: need steps_per_epoch and total_steps >= 1, got {steps_per_epoch}, {total_steps}"
        )
    if warmup_epochs < 0 or not 0 <= warmup_fraction <= 1:
        raise ValueError(f"warmup_steps: need warmup_epochs >= 0 and warmup_fraction in [0, 1], got {warmup_epochs}, "
                         f"{warmup_fraction}")  # fmt: skip
    return min(total_steps, round(warmup_epochs * steps_per_epoch), round(warmup_fraction * total_steps))
