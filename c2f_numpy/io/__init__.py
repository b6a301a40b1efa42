"""Reading and writing model weights, and writing files atomically.

:mod:`c2f_numpy.io.torch_pth` reads ``torch.save`` checkpoints (zip format) into NumPy arrays without torch
and without executing anything stored in the file. :mod:`c2f_numpy.io.weights` saves and loads state dicts
as ``.npz`` or ``.safetensors`` (and loads ``.pth``). :mod:`c2f_numpy.io.atomic` replaces a file in one step,
so a crash never leaves a half-written checkpoint, dump or metrics file.

Every reader of file bytes raises :class:`FileFormatError` (a ``ValueError``) or a subclass naming the file,
what was expected and what was found (:mod:`c2f_numpy.io.errors`; the contract is in docs/files.md).
"""

from .atomic import atomic_open, atomic_write
from .errors import FileFormatError
from .torch_pth import (
    CheckpointError,
    PickledNamespace,
    TorchDtype,
    TorchStorage,
    TorchStorageType,
    UnsafeCheckpointError,
    load_torch_checkpoint,
    read_torch_file,
)
from .weights import ENTRIES_KEY, METADATA_KEY, WeightsFileError, load_npy, load_weights, save_weights

__all__ = [
    "ENTRIES_KEY",
    "METADATA_KEY",
    "CheckpointError",
    "FileFormatError",
    "PickledNamespace",
    "TorchDtype",
    "TorchStorage",
    "TorchStorageType",
    "UnsafeCheckpointError",
    "WeightsFileError",
    "atomic_open",
    "atomic_write",
    "load_npy",
    "load_torch_checkpoint",
    "load_weights",
    "read_torch_file",
    "save_weights",
]
