"""Which images a run trains, validates and tests on: seeded, so c2f-train and benchmarks/train_torch.py (and a
resumed run) draw the same ones.

* validation: ``val_split`` images held out of the *training* split (a seeded permutation of it, the first
  ``val_split`` indices; the rest is the training set). It is the only split a run selects on (its best
  epoch, ``checkpoint_best``). The test split is evaluated, never selected on.
* ``train_subset`` / ``test_subset``: seeded random subsets for quick runs, drawn after the hold-out (the
  validation images stay the same whatever the subset).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..data import Dataset


def seeded_subset(ds: Dataset, n: int, seed: int) -> Dataset:
    """``n`` samples of ``ds`` in their original order, drawn with ``seed`` (all of ``ds`` when n is 0 or >= len)."""
    if not n or n >= len(ds):
        return ds
    return ds.subset(np.sort(np.random.default_rng([seed, 7]).permutation(len(ds))[:n]))


def hold_out(train: Dataset, n: int, seed: int) -> tuple[Dataset, Dataset | None]:
    """(the training images left, ``n`` held-out validation images) of the training split ``train``, drawn with
    ``seed``; ``(train, None)`` for n = 0. Disjoint, each in its original order."""
    if n < 0:
        raise ValueError(f"val_split must be >= 0, got {n}")
    if not n:
        return train, None
    if n >= len(train):
        raise ValueError(f"val_split {n} leaves no training images: the {train.name} training split has {len(train)}")
    order = np.random.default_rng([seed, 11]).permutation(len(train))
    return train.subset(np.sort(order[n:])), replace(train.subset(np.sort(order[:n])), split="val")


def run_splits(
    train: Dataset, test: Dataset, *, val_split: int, train_subset: int, test_subset: int, seed: int
) -> tuple[Dataset, Dataset | None, Dataset]:
    """(train, validation or None, test) of a run from the full training and test splits."""
    rest, val = hold_out(train, val_split, seed)
    return seeded_subset(rest, train_subset, seed), val, seeded_subset(test, test_subset, seed + 1)
