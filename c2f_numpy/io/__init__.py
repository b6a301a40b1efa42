"""Reading model weights from files written by other frameworks.

:mod:`c2f_numpy.io.torch_pth` reads ``torch.save`` checkpoints (zip format) into NumPy arrays without torch
and without executing anything stored in the file.
"""

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

__all__ = [
    "CheckpointError",
    "PickledNamespace",
    "TorchDtype",
    "TorchStorage",
    "TorchStorageType",
    "UnsafeCheckpointError",
    "load_torch_checkpoint",
    "read_torch_file",
]
