"""Training on CPU: optimizers, schedules, checkpoints and the loop behind ``c2f-train``.

from c2f_numpy.train import TrainConfig, Trainer
Trainer(TrainConfig(dataset="fashion_mnist", model="mini", epochs=10), "runs/fm").fit()
"""

from .checkpoint import Checkpoint, TrainCheckpointError, load_checkpoint, save_checkpoint
from .loop import BEST, LAST, Summary, TrainConfig, Trainer, TrainingDiverged, clip_grad_norm
from .optim import SGD, AdamW, Optimizer, default_no_decay
from .schedule import cosine_lr

__all__ = [
    "BEST",
    "LAST",
    "SGD",
    "AdamW",
    "Checkpoint",
    "Optimizer",
    "Summary",
    "TrainCheckpointError",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "clip_grad_norm",
    "cosine_lr",
    "default_no_decay",
    "load_checkpoint",
    "save_checkpoint",
]
