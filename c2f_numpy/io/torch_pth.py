"""Read ``torch.save`` checkpoints into NumPy arrays without importing torch and without running the file.

File format (the zip serialization, PyTorch >= 1.6). A ``.pth`` file is an ordinary zip archive whose entries
all sit in one top-level folder (any name: usually the file stem or ``archive``)::

    archive/data.pkl                 the pickled object tree (dicts, lists, numbers, tensors ...)
    archive/data/<key>               raw bytes of one tensor storage, one entry per storage
    archive/byteorder                "little" or "big": byte order of the storage bytes (absent: little)
    archive/version, archive/.data/serialization_id, ...   bookkeeping, not needed here

Inside ``data.pkl`` a tensor is a call ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, backward_hooks[, metadata])``. ``storage`` is a pickle *persistent id*, the tuple
``('storage', <storage type>, key, location, numel)``: the storage type (a global such as
``torch.FloatStorage``) gives the element dtype, ``key`` names the ``data/<key>`` entry and ``numel`` its
length in elements. Several tensors may be views of one storage (different offset / size / stride). Dtypes
without a legacy storage class (uint16/32/64, float8 ...) are written with ``_rebuild_tensor_v3``, an untyped
(byte) storage and an explicit ``torch.<dtype>`` global. ``nn.Parameter`` wraps a tensor in
``_rebuild_parameter``.

Pickle can call any importable function while loading, so a ``.pth`` file from an untrusted source can run
code under a plain ``pickle.load`` / ``torch.load(weights_only=False)``. This module never uses
:mod:`pickle`: ``data.pkl`` runs on the bounded machine of :mod:`c2f_numpy.io.pickle_vm` (no recursion, the
whole stream consumed, memo and message sizes bounded), whose globals, calls and ``BUILD`` go through the
allow-list of :mod:`c2f_numpy.io.torch_allowlist`; every other global raises :class:`UnsafeCheckpointError`
before anything is called. The zip is opened by :class:`~c2f_numpy.io.safezip.SafeZip` (every entry present
and contiguous, sizes bounded, CRCs checked). Every error is a :class:`CheckpointError` (a
:class:`~c2f_numpy.io.errors.FileFormatError`) naming the file.

Public API: :func:`load_torch_checkpoint` (a flat ``name -> array`` state dict from a training checkpoint or
a bare state dict) and :func:`read_torch_file` (the whole object tree, tensors replaced by arrays).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final, Literal

import numpy as np

from .errors import brief
from .pickle_vm import safe_unpickle
from .safezip import SafeZip, zip_errors
from .torch_allowlist import (
    ITEMSIZES,
    ByteOrder,
    CheckpointError,
    PickledNamespace,
    TensorBudget,
    TorchDtype,
    TorchPolicy,
    TorchStorage,
    TorchStorageType,
    UnsafeCheckpointError,
    is_int,
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


# PROTO 2, LONG1 with 10 bytes, then the number in little-endian.
_LEGACY_MAGIC: Final = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_CONVERT_HINT: Final = (
    "convert it once with a recent PyTorch: torch.save(torch.load(p, weights_only=True), p2) "
    "(drop weights_only=True only if you trust the file)"
)

# ------------------------------------------------------------------------------------------------------------
# Reading the archive.


class _Archive:
    """The validated zip plus what persistent_load needs: the folder prefix, byte order and the storage cache."""

    def __init__(self, zf: SafeZip, prefix: str, byteorder: ByteOrder) -> None:
        self.zf = zf
        self.prefix = prefix
        self.byteorder = byteorder
        self.budget = TensorBudget(zf.size)
        self._bytes: dict[str, bytes] = {}  # key -> storage bytes, so shared storages are read once

    def storage(self, pid: object) -> TorchStorage:
        """Resolve a persistent id ``('storage', storage_type, key, location, numel)`` to its bytes."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id in data.pkl: {brief(pid)}")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, TorchStorageType):
            raise CheckpointError(f"persistent id names {brief(storage_type)}, not a torch storage type")
        if not isinstance(key, str) or not isinstance(location, str) or not is_int(numel) or numel < 0:
            raise CheckpointError("malformed persistent id in data.pkl: expected (str key, str location, int numel)")
        nbytes = numel * ITEMSIZES[storage_type.dtype_name]
        data = self._bytes.get(key)
        if data is None:
            data = self._read_entry(key, nbytes)
            self._bytes[key] = data
        elif len(data) < nbytes:
            raise CheckpointError(f"storage {brief(key)} is referenced with {nbytes} bytes but holds {len(data)}")
        return TorchStorage(key, storage_type.dtype_name, data, self.byteorder, self.budget)

    def _read_entry(self, key: str, nbytes: int) -> bytes:
        name = f"{self.prefix}data/{key}"
        info = self.zf.getinfo(name)
        if info is None:
            raise CheckpointError(f"storage entry {brief(name)} referenced by data.pkl is missing")
        # Checked before decompressing, so a crafted entry cannot inflate to an arbitrary size.
        if info.file_size != nbytes:
            raise CheckpointError(
                f"storage entry {brief(name)} holds {info.file_size} bytes, but data.pkl declares {nbytes}"
            )
        return self.zf.read(info)


def _describe_non_zip(path: str) -> str | None:
    """Why ``path`` is not a torch zip checkpoint, judged from its first bytes; ``None`` if it starts like one."""
    with open(path, "rb") as fh:
        head = fh.read(len(_LEGACY_MAGIC))
    if not head:
        return "the file is empty"
    if head == _LEGACY_MAGIC:
        return (
            "this is a legacy (pre-zip) torch.save file, written by PyTorch < 1.6 or with "
            f"_use_new_zipfile_serialization=False; only the zip format is supported: {_CONVERT_HINT}"
        )
    if head[:1] == b"\x80":
        return f"this is a plain pickle, not a torch.save zip archive; if it came from torch, {_CONVERT_HINT}"
    if head[:2] == b"PK":
        return None
    return f"not a torch.save zip archive (unrecognised leading bytes {head[:8]!r})"


def _find_prefix(zf: SafeZip) -> str:
    """The top-level folder (with trailing slash) that holds ``data.pkl``."""
    names = zf.names()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        found = "no" if not pickles else f"{len(pickles)}"
        raise CheckpointError(f"zip archive has {found} '<folder>/data.pkl' entries; torch.save writes one")
    prefix = pickles[0][: -len("data.pkl")]
    if f"{prefix}constants.pkl" in names or any(n.startswith(f"{prefix}code/") for n in names):
        raise CheckpointError(
            "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; load it with "
            "torch.jit.load and torch.save(module.state_dict(), p2)"
        )
    return prefix


def _read_byteorder(zf: SafeZip, prefix: str) -> ByteOrder:
    """``'<'`` or ``'>'`` from the ``byteorder`` entry; files from before it existed are little-endian."""
    info = zf.getinfo(f"{prefix}byteorder")
    if info is None:
        return "<"
    if info.file_size > 64:
        raise CheckpointError(f"expected a byteorder entry of a few bytes, found {info.file_size}")
    raw = zf.read(info)
    orders: dict[bytes, ByteOrder] = {b"little": "<", b"big": ">"}
    order = orders.get(raw.strip())
    if order is None:
        raise CheckpointError(f"unknown byteorder entry {raw[:20]!r} (expected 'little' or 'big')")
    return order


def _read(path: str) -> object:
    problem = _describe_non_zip(path)
    if problem is not None:
        raise CheckpointError(problem)
    with SafeZip(path, CheckpointError) as zf:
        prefix = _find_prefix(zf)
        archive = _Archive(zf, prefix, _read_byteorder(zf, prefix))
        info = zf.getinfo(f"{prefix}data.pkl")
        assert info is not None  # _find_prefix found it
        data = zf.read(info)
        with zip_errors(CheckpointError):  # storages are read while unpickling
            return safe_unpickle(data, TorchPolicy(archive.storage), error=CheckpointError, what="malformed data.pkl")


def read_torch_file(path: str | os.PathLike[str]) -> object:
    """Unpickle a ``torch.save`` zip file safely and return its whole object tree.

    In: the path of a file written by ``torch.save`` (PyTorch >= 1.6 zip format).
    Out: the saved object with every tensor (and ``nn.Parameter``) replaced by a fresh, C-contiguous NumPy
    array of the matching dtype (bfloat16 widened exactly to float32). Dicts, lists, tuples, numbers, strings
    and ``OrderedDict`` come back as themselves; ``argparse.Namespace`` as :class:`PickledNamespace`; torch
    dtypes as :class:`TorchDtype`; ``torch.device`` as a string; ``torch.Size`` as a tuple; NumPy scalars as
    Python numbers; a bare storage as :class:`TorchStorage`.
    Raises :class:`UnsafeCheckpointError` for any other global (nothing from the file is executed) and
    :class:`CheckpointError` for legacy, corrupt or otherwise unreadable files; the message names the file.
    """
    p = os.fspath(path)
    try:
        return _read(p)
    except CheckpointError as exc:
        # Re-raised with the file name; the type (safe vs unsafe) and the traceback are kept.
        raise type(exc)(f"{p}: {exc}").with_traceback(exc.__traceback__) from exc.__cause__


# ------------------------------------------------------------------------------------------------------------
# Checkpoint layouts.

_PLAIN_KEYS: Final = ("state_dict", "model")
_EMA_KEYS: Final = ("state_dict_ema", "model_ema")
_MODULE_PREFIX: Final = "module."


def _first_mapping(obj: Mapping[Any, object], keys: tuple[str, ...]) -> tuple[str, Mapping[Any, object]] | None:
    """The first of ``keys`` whose value is a mapping, with that mapping."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, Mapping):
            return key, value
    return None


def _keys_text(obj: Mapping[Any, object]) -> str:
    keys = [brief(k, 40) for k in list(obj)[:20]]
    return ", ".join(keys) + (", ..." if len(obj) > 20 else "")


def _as_state_dict(obj: Mapping[Any, object], path: str, where: str) -> dict[str, np.ndarray]:
    """Check that ``obj`` maps names to arrays and strip a ``module.`` prefix that every key carries."""
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: expected a state dict at {where}, but it has a key {brief(key)}")
        if not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{path}: expected a state dict (names -> tensors) at {where}, but {brief(key)} holds a "
                f"{type(value).__name__}; recognised checkpoint keys are {_PLAIN_KEYS + _EMA_KEYS}"
            )
        out[key] = value
    # (Distributed)DataParallel prefixes every name with "module."; a partial prefix is part of real names.
    if out and all(k.startswith(_MODULE_PREFIX) for k in out):
        out = {k[len(_MODULE_PREFIX) :]: v for k, v in out.items()}
    return out


def load_torch_checkpoint(
    path: str | os.PathLike[str], *, weights: Literal["auto", "plain", "ema"] = "auto"
) -> dict[str, np.ndarray]:
    """Load model weights from a ``torch.save`` file as a flat ``name -> np.ndarray`` state dict.

    In: the path, and which weights to take when the file holds a training checkpoint:

    * ``"plain"``: the ordinary weights, from ``state_dict`` (timm CheckpointSaver) or ``model`` (DeiT-style);
      an error if the file has neither.
    * ``"ema"``: the exponential-moving-average weights, from ``state_dict_ema`` or ``model_ema``; an error
      listing the file's top-level keys if it has none (a bare state dict has none either).
    * ``"auto"`` (default): the plain weights if present, else the EMA weights when they are the only ones.
      Plain wins because it is what the training run reported unless EMA was switched on explicitly.

    A file whose top level maps names to tensors is a bare state dict and is returned as is. When every key
    starts with ``module.`` (saved from a DataParallel wrapper) the prefix is removed.
    Out: a new dict in file order, values as :func:`read_torch_file` rebuilds them (bfloat16 -> float32).
    Raises :class:`CheckpointError` (or its subclass :class:`UnsafeCheckpointError`) naming the file.
    """
    if weights not in ("auto", "plain", "ema"):
        raise ValueError(f"weights must be 'auto', 'plain' or 'ema', got {weights!r}")
    p = os.fspath(path)
    obj = read_torch_file(p)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: expected a dict at the top level, found a {type(obj).__name__}")
    plain = _first_mapping(obj, _PLAIN_KEYS)
    ema = _first_mapping(obj, _EMA_KEYS)
    if plain is None and ema is None:
        if weights == "ema":
            raise CheckpointError(
                f"{p}: weights='ema' but the file is a bare state dict without EMA weights "
                f"(no {' / '.join(_EMA_KEYS)} key); use weights='auto'"
            )
        return _as_state_dict(obj, p, "the top level")
    chosen = {"plain": plain, "ema": ema, "auto": plain or ema}[weights]
    if chosen is None:
        wanted = _EMA_KEYS if weights == "ema" else _PLAIN_KEYS
        raise CheckpointError(
            f"{p}: weights={weights!r} but the file has no {' / '.join(wanted)} entry holding a state dict; "
            f"its top-level keys are: {_keys_text(obj)}"
        )
    key, state_dict = chosen
    return _as_state_dict(state_dict, p, f"key {brief(key)}")
