"""Training on CPU: optimizers, schedules, checkpoints and the loop behind ``c2f-train``.

from c2f_numpy.train import TrainConfig, Trainer
Trainer(TrainConfig(epochs=1), "runs/quick").fit()  # the defaults are the recipe fashion_mnist_30min
"""

from .checkpoint import Checkpoint, TrainCheckpointError, load_checkpoint, save_checkpoint
from .loop import BEST, LAST, Summary, TrainConfig, Trainer, TrainingDiverged, clip_grad_norm
from .optim import SGD, AdamW, Optimizer, default_no_decay
from .recipes import RECIPES, Recipe, recipe_settings
from .schedule import cosine_lr, warmup_steps
from .splits import hold_out, run_splits, seeded_subset

__all__ = [
    "BEST",
    "LAST",
    "RECIPES",
    "SGD",
    "AdamW",
    "Checkpoint",
    "Optimizer",
    "Recipe",
    "Summary",
    "TrainCheckpointError",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "clip_grad_norm",
    "cosine_lr",
    "default_no_decay",
    "hold_out",
    "load_checkpoint",
    "recipe_settings",
    "run_splits",
    "save_checkpoint",
    "seeded_subset",
    "warmup_steps",
]
