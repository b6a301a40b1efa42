"""Named training recipes (``c2f-train --recipe NAME``): settings of :class:`~c2f_numpy.train.loop.TrainConfig`
as data, with what is known of each. Flags given on the command line override a recipe's values.

``TrainConfig()``'s defaults are ``fashion_mnist_30min`` (``tests/train/test_loop.py`` checks it), so
``c2f-train`` with no flags runs it, and ``c2f-train --epochs 1`` is its one-epoch version (5% warmup, then
the cosine over the rest: see :func:`~c2f_numpy.train.schedule.warmup_steps`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """A named set of ``TrainConfig`` settings; ``about`` says what it is for and what was measured."""

    name: str
    about: str
    settings: Mapping[str, Any]

    def describe(self) -> str:
        """One line: the name, the settings, the note."""
        shown = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in self.settings.items())
        return f"{self.name}: {shown} ({self.about})"


_FASHION_30 = {
    "dataset": "fashion_mnist",
    "model": "micro",
    "epochs": 11,
    "batch_size": 128,
    "lr": 3e-3,
    "min_lr": 1e-5,
    "warmup_epochs": 0.5,
    "warmup_fraction": 0.05,
    "weight_decay": 0.05,
    "label_smoothing": 0.1,
    "layer_scale_init": 1e-2,
    "crop_padding": 0,
    "hflip": True,
    "val_split": 5000,
    "workers": 2,
}

RECIPES: Mapping[str, Recipe] = MappingProxyType(
    {
        r.name: r
        for r in (
            Recipe(
                "fashion_mnist_30min",
                "92.65% test (plain, last epoch) in 23.3 min on 2 cores, 5,000 training images held out for "
                "validation (docs/training.md, 2026-12-04)",
                MappingProxyType(_FASHION_30),
            ),
            Recipe(
                "fashion_mnist_60min",
                "the wider mini, 26 epochs, 1-pixel crops and Random Erasing against overfitting: 93.76% test "
                "(plain, last epoch) in 49.7 min on 2 cores, AMD EPYC Zen 5 (docs/training.md, 2026-12-07)",
                MappingProxyType(
                    _FASHION_30 | {"model": "mini", "epochs": 26, "crop_padding": 1, "random_erasing": 0.5}
                ),
            ),
        )
    }
)


def recipe_settings(name: str) -> dict[str, Any]:
    """The settings of recipe ``name`` (a copy); a clear error naming the known recipes otherwise."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return dict(RECIPES[name].settings)
