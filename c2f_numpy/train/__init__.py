"""Training: optimizers now; schedules, checkpoints and the c2f-train loop come with the training issue."""

from .optim import SGD, AdamW, Optimizer, default_no_decay

__all__ = ["SGD", "AdamW", "Optimizer", "default_no_decay"]
