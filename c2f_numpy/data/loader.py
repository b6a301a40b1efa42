"""Data sets in memory and the seeded, resumable batch loader.

:func:`load_dataset` returns a :class:`Dataset`: ``images`` (N, C, H, W) uint8 - NCHW, the model's layout -
``labels`` (N,) int64, ``classes`` and the per-channel ``mean`` / ``std`` used for normalisation (train-split
statistics of pixels scaled to [0, 1]; the same numbers are used for both splits).

:class:`BatchLoader` yields ``(x, targets)``: ``x`` float32 (B, C, H, W) C-contiguous and normalised, and
``targets`` int64 labels (B,) or, with mixup / cutmix, float32 soft targets (B, K).

Randomness is counter-based: the order of epoch ``e`` comes from ``SeedSequence([seed, 0, e])`` and the
augmentation of batch ``b`` of epoch ``e`` from ``SeedSequence([seed, 1, e, b])`` (PCG64). So ``(seed, epoch,
position)`` *is* the complete RNG state: :meth:`BatchLoader.state_dict` holds just these (plus the settings,
to refuse a state from a different configuration) as plain JSON-able values, and a loader restored from it
produces bit-identical batches from the next one on, wherever in an epoch it was saved. Results are
reproducible for a given NumPy version (NumPy does not promise identical random streams across versions).
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from . import cifar, idx
from .augment import Augment, normalize

__all__ = ["DATASETS", "BatchLoader", "Dataset", "canonical_name", "compute_mean_std", "load_dataset"]

DATASETS: Final = ("cifar10", "cifar100", "fashion_mnist", "mnist")
SPLITS: Final = ("train", "test")
_STATE_FORMAT: Final = "c2f_numpy.data.BatchLoader"
_STATE_VERSION: Final = 1


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a data set, held in memory."""

    name: str
    split: str
    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    mean: tuple[float, ...]  # per channel, for pixels in [0, 1]
    std: tuple[float, ...]
    label_kind: str | None = field(default=None)

    def __post_init__(self) -> None:
        im, lab = self.images, self.labels
        if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 4:
            raise ValueError(
                f"Dataset: images must be (N, C, H, W) uint8, got {getattr(im, 'dtype', None)} "
                f"{getattr(im, 'shape', None)}"
            )
        if not isinstance(lab, np.ndarray) or lab.dtype != np.int64 or lab.shape != (im.shape[0],):
            raise ValueError(
                f"Dataset: labels must be ({im.shape[0]},) int64, got {getattr(lab, 'dtype', None)} "
                f"{getattr(lab, 'shape', None)}"
            )
        if lab.size and (lab.min() < 0 or lab.max() >= len(self.classes)):
            raise ValueError(f"Dataset: labels must be in [0, {len(self.classes)}), got [{lab.min()}, {lab.max()}]")
        if len(self.mean) != im.shape[1] or len(self.std) != im.shape[1]:
            raise ValueError(f"Dataset: mean and std need {im.shape[1]} values, got {self.mean} and {self.std}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: Sequence[int] | np.ndarray | slice) -> Dataset:
        """A new data set with the chosen samples (copied), e.g. ``ds.subset(slice(0, 1000))`` for a quick run."""
        sel = indices if isinstance(indices, slice) else np.asarray(indices, dtype=np.int64)
        return Dataset(
            self.name,
            self.split,
            np.ascontiguousarray(self.images[sel]),
            np.ascontiguousarray(self.labels[sel]),
            list(self.classes),
            self.mean,
            self.std,
            self.label_kind,
        )


def compute_mean_std(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of uint8 NCHW ``images`` scaled to [0, 1],
    accumulated in float64 chunk by chunk (no full-size float copy)."""
    if images.ndim != 4:
        raise ValueError(f"compute_mean_std: images must be (N, C, H, W), got {images.shape}")
    c = images.shape[1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += np.square(block).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def canonical_name(name: str) -> str:
    """``"CIFAR-10"`` -> ``"cifar10"``, ``"fashion-mnist"`` / ``"FashionMNIST"`` -> ``"fashion_mnist"``, ..."""
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    for canonical in DATASETS:
        if key == canonical.replace("_", ""):
            return canonical
    raise ValueError(f"unknown data set {name!r}; expected one of {list(DATASETS)}")


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    label: str | None = None,
    progress: bool = True,
) -> Dataset:
    """Load one split (``"train"`` or ``"test"``) of ``"cifar10"``, ``"cifar100"``, ``"fashion_mnist"`` or
    ``"mnist"`` (case, ``-`` and ``_`` are ignored in the name).

    ``data_dir``: where the files are (and are downloaded to); ``None`` is ``$C2F_DATA_DIR`` or
    ``~/.cache/c2f_numpy``. Fashion-MNIST is also found in ``/usr/share/datasets/fashion-mnist`` (Debian's
    ``dataset-fashion-mnist``). ``download=False`` never touches the network. ``label``: CIFAR-100's
    ``"fine"`` (default) or ``"coarse"``. ``progress``: show a tqdm bar while downloading.
    Errors: ``ValueError`` for a bad name, split or label kind; ``FileNotFoundError`` / ``NotADirectoryError``
    for a bad ``data_dir``; :class:`~.download.DataError` subclasses for missing, corrupt or unsafe files and
    failed downloads.
    """
    canonical = canonical_name(name)
    if split not in SPLITS:
        raise ValueError(f"{canonical}: unknown split {split!r}; expected one of {list(SPLITS)}")
    if canonical in cifar.SPECS:
        spec = cifar.SPECS[canonical]
        images, labels, classes = cifar.load_cifar_split(
            spec, split, data_dir, download=download, label=label, progress=progress
        )
        kind = spec.default_label if label is None else label
        return Dataset(canonical, split, images, labels, classes, spec.mean, spec.std, kind)
    ispec = idx.SPECS[canonical]
    if label is not None:
        raise ValueError(f"{canonical}: has no label kinds, got label={label!r}")
    images, labels, classes = idx.load_idx_split(ispec, split, data_dir, download=download, progress=progress)
    return Dataset(canonical, split, images, labels, classes, ispec.mean, ispec.std)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"BatchLoader: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class BatchLoader:
    """Seeded shuffling and batching with optional augmentation; resumable mid-epoch, bit for bit.

    ``for x, targets in loader`` runs over the rest of the current epoch and then advances :attr:`epoch`.
    ``len(loader)`` is the number of batches per epoch (the last one is smaller unless ``drop_last``).
    :attr:`position` counts the batches of the current epoch already handed out: save :meth:`state_dict`
    after a training step has used a batch and a restored loader continues with the next one. Use one
    iterator at a time.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        augment: Augment | None = None,
    ) -> None:
        if not isinstance(dataset, Dataset):
            raise TypeError(f"BatchLoader: dataset must be a Dataset, got {type(dataset).__name__}")
        if augment is not None and not isinstance(augment, Augment):
            raise TypeError(f"BatchLoader: augment must be an Augment or None, got {type(augment).__name__}")
        self.dataset = dataset
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.augment = augment
        n = len(dataset)
        self.num_batches = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        if self.num_batches == 0:
            raise ValueError(f"BatchLoader: {n} samples make no batch of {self.batch_size} with drop_last=True")
        self.epoch = 0
        self.position = 0
        self._order_cache: tuple[int, np.ndarray] | None = None
        self._fingerprint = zlib.crc32(dataset.labels.tobytes())

    def __len__(self) -> int:
        return self.num_batches

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (a permutation when shuffling, else 0..N-1)."""
        if self._order_cache is not None and self._order_cache[0] == epoch:
            return self._order_cache[1]
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(np.random.SeedSequence([self.seed, 0, epoch])).permutation(n)
        else:
            order = np.arange(n)
        self._order_cache = (epoch, order)
        return order

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index`` of ``epoch``, a pure function of (seed, epoch, index) and the settings."""
        if not 0 <= index < self.num_batches:
            raise IndexError(f"BatchLoader: batch {index} out of range [0, {self.num_batches})")
        sel = self.order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        ds = self.dataset
        images, labels = ds.images[sel], ds.labels[sel]
        if self.augment is None:
            return normalize(images, ds.mean, ds.std), labels
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, epoch, index]))
        return self.augment(images, labels, mean=ds.mean, std=ds.std, num_classes=ds.num_classes, rng=rng)

    def _roll(self) -> None:
        if self.position >= self.num_batches:
            self.epoch += 1
            self.position = 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        self._roll()  # a previous loop that stopped right after the last batch
        while self.position < self.num_batches:
            index = self.position
            out = self.batch(self.epoch, index)
            self.position = index + 1
            yield out
        self._roll()

    def _settings(self) -> dict[str, Any]:
        return {
            "num_samples": len(self.dataset),
            "labels_crc32": self._fingerprint,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "augment": None if self.augment is None else self.augment.config(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: format, version, seed, epoch, position (next batch of that epoch) and the
        settings it was made with. A finished epoch is stored as the start of the next one."""
        epoch, position = (self.epoch + 1, 0) if self.position >= self.num_batches else (self.epoch, self.position)
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "seed": self.seed,
            "epoch": epoch,
            "position": position,
            **self._settings(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (also after a JSON round trip). Raises ``ValueError`` when the
        state is malformed or was made with other settings or another data set."""
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"BatchLoader.load_state_dict: not a BatchLoader state (format {_STATE_FORMAT!r})")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"BatchLoader.load_state_dict: unsupported version {state.get('version')!r}")
        for key, mine in self._settings().items():
            if key not in state:
                raise ValueError(f"BatchLoader.load_state_dict: missing {key!r}")
            if state[key] != mine:
                raise ValueError(f"BatchLoader.load_state_dict: state has {key}={state[key]!r}, this loader {mine!r}")
        seed = _check_int("seed", state.get("seed"), 0)
        epoch = _check_int("epoch", state.get("epoch"), 0)
        position = _check_int("position", state.get("position"), 0)
        if position > self.num_batches:
            raise ValueError(f"BatchLoader.load_state_dict: position {position} > {self.num_batches} batches")
        self.seed, self.epoch, self.position = seed, epoch, position
        self._order_cache = None
