"""Data sets, augmentation and batching for training, in NumPy (no torch anywhere in this path).

    from c2f_numpy.data import Augment, BatchLoader, load_dataset
    train = load_dataset("fashion_mnist", "train")          # also "cifar10", "cifar100", "mnist"
    loader = BatchLoader(train, 128, shuffle=True, seed=0, augment=Augment(crop_padding=2))
    for x, y in loader:  # x: float32 (128, 1, 28, 28) normalised; y: int64 (128,) or (128, K) soft targets
        ...
    state = loader.state_dict()  # JSON-able; BatchLoader(...).load_state_dict(state) resumes bit for bit

Images are NCHW uint8 in a :class:`Dataset`. Modules: :mod:`.cifar` (official binary CIFAR archives),
:mod:`.idx` (IDX files: Fashion-MNIST, MNIST), :mod:`.download` (cache directory, downloads, MD5, safe tar
extraction, the error classes), :mod:`.augment`, :mod:`.loader`.
"""

from .augment import Augment, cutmix, mixup, normalize, one_hot, random_crop, random_erase, random_flip
from .download import (
    ChecksumError,
    DataError,
    DataFormatError,
    DataNotFoundError,
    DownloadError,
    UnsafeArchiveError,
    default_data_dir,
)
from .idx import read_idx, write_idx
from .loader import DATASETS, BatchLoader, Dataset, canonical_name, compute_mean_std, load_dataset

__all__ = [
    "DATASETS",
    "Augment",
    "BatchLoader",
    "ChecksumError",
    "DataError",
    "DataFormatError",
    "DataNotFoundError",
    "Dataset",
    "DownloadError",
    "UnsafeArchiveError",
    "canonical_name",
    "compute_mean_std",
    "cutmix",
    "default_data_dir",
    "load_dataset",
    "mixup",
    "normalize",
    "one_hot",
    "random_crop",
    "random_erase",
    "random_flip",
    "read_idx",
    "write_idx",
]
