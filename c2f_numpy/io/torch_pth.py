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
code under a plain ``pickle.load`` / ``torch.load(weights_only=False)``. This module therefore unpickles with
:class:`pickle.Unpickler` whose ``find_class`` hands out only a small allow-list of stand-ins written here
(the tensor rebuilders, ``OrderedDict``, storage-type and dtype markers, an inert ``argparse.Namespace``
replacement, ...). Every other global raises :class:`UnsafeCheckpointError` before anything is called.

Public API: :func:`load_torch_checkpoint` (a flat ``name -> array`` state dict from a training checkpoint or
a bare state dict) and :func:`read_torch_file` (the whole object tree, tensors replaced by arrays).
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

import numpy as np

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


ByteOrder = Literal["<", ">"]  # byte order of the storage bytes, as a NumPy dtype prefix


class CheckpointError(ValueError):
    """The file is not a ``torch.save`` zip checkpoint this module can read, or lacks the requested data."""


class UnsafeCheckpointError(CheckpointError):
    """``data.pkl`` asks for a global outside the allow-list, i.e. loading it could execute code."""


# Legacy (pre-zip) torch.save files start with the pickled magic number 0x1950a86a20f9469cfc6c:
# PROTO 2, LONG1 with 10 bytes, then the number in little-endian.
_LEGACY_MAGIC: Final = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_CONVERT_HINT: Final = (
    "convert it once with a recent PyTorch: torch.save(torch.load(p, weights_only=True), p2) "
    "(drop weights_only=True only if you trust the file)"
)

# Torch dtype name -> NumPy dtype code of the stored elements (little-endian; byte order is applied later).
# bfloat16 is read as its uint16 bit pattern and bool as uint8, both converted after the strided copy.
_NUMPY_CODES: Final[dict[str, str]] = {
    "float64": "f8",
    "float32": "f4",
    "float16": "f2",
    "bfloat16": "u2",
    "int64": "i8",
    "int32": "i4",
    "int16": "i2",
    "int8": "i1",
    "uint8": "u1",
    "uint16": "u2",
    "uint32": "u4",
    "uint64": "u8",
    "bool": "u1",
    "complex64": "c8",
    "complex128": "c16",
}

# Every torch dtype name that can appear as a ``torch.<name>`` global. Those missing from _NUMPY_CODES
# (float8, quantized, sub-byte ...) unpickle fine but a tensor of that dtype raises a CheckpointError.
_TORCH_DTYPE_NAMES: Final = frozenset(_NUMPY_CODES) | {
    "complex32",
    "float8_e4m3fn",
    "float8_e4m3fnuz",
    "float8_e5m2",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "bits8",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
    *(f"uint{n}" for n in range(1, 8)),
    *(f"int{n}" for n in range(1, 8)),
}

# Legacy storage class name -> dtype name of its elements.
_STORAGE_DTYPES: Final[dict[str, str]] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}

# Bytes per element for the dtypes a storage can hold (quantized storages included, so their size checks out).
_ITEMSIZES: Final[dict[str, int]] = {
    **{name: np.dtype(code).itemsize for name, code in _NUMPY_CODES.items()},
    "qint8": 1,
    "quint8": 1,
    "qint32": 4,
    "quint4x2": 1,
    "quint2x4": 1,
}


# ------------------------------------------------------------------------------------------------------------
# Stand-ins handed to the unpickler. They are immutable and refuse pickle's BUILD opcode: a marker returned by
# find_class is shared between loads, so a hostile data.pkl must not be able to alter it.


class _Inert:
    """Base of the stand-ins: no ``__dict__``, attributes fixed at construction, BUILD refused."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __setstate__(self, state: object) -> None:
        raise CheckpointError(f"data.pkl tries to set the state of {self!r}, which no torch.save file does")


class TorchDtype(_Inert):
    """A ``torch.<name>`` dtype object found in the pickle (e.g. ``torch.float32``), kept as its name."""

    __slots__ = ("name",)
    name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TorchDtype) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("TorchDtype", self.name))


class TorchStorageType(_Inert):
    """A storage class global (``torch.FloatStorage`` ...): the element dtype of a persistent-id storage."""

    __slots__ = ("dtype_name", "name")
    name: str
    dtype_name: str  # "uint8" for the untyped (byte) storage

    def __init__(self, name: str, dtype_name: str) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype_name", dtype_name)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class TorchStorage(_Inert):
    """One ``data/<key>`` entry: the raw storage bytes plus the dtype and byte order they were written with.

    A bare storage saved with ``torch.save`` comes back from :func:`read_torch_file` as this object; inside
    tensors it is only an intermediate.
    """

    __slots__ = ("byteorder", "data", "dtype_name", "key")
    key: str
    dtype_name: str
    data: bytes
    byteorder: ByteOrder

    def __init__(self, key: str, dtype_name: str, data: bytes, byteorder: ByteOrder) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "dtype_name", dtype_name)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "byteorder", byteorder)

    def __repr__(self) -> str:
        return f"TorchStorage(key={self.key!r}, dtype={self.dtype_name}, nbytes={len(self.data)})"

    def elements(self, dtype_name: str) -> np.ndarray:
        """The bytes as a read-only 1-D array of ``dtype_name`` elements in file byte order (bf16: uint16)."""
        code = _NUMPY_CODES.get(dtype_name)
        if code is None:
            raise CheckpointError(f"tensors of dtype torch.{dtype_name} have no NumPy equivalent")
        dtype = np.dtype(code).newbyteorder(self.byteorder)
        # Trailing bytes that do not fill an element are ignored: a tensor can never reach them.
        return np.frombuffer(self.data, dtype=dtype, count=len(self.data) // dtype.itemsize)


class _TensorClass(_Inert):
    """``torch.Tensor`` / ``torch.nn.Parameter`` as passed to ``_rebuild_from_type_v2``."""

    __slots__ = ("name",)
    name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __repr__(self) -> str:
        return self.name


class _Allowed(_Inert):
    """An allow-listed callable: wraps a function of this module so data.pkl cannot change its attributes."""

    __slots__ = ("func", "name")
    func: Callable[..., object]
    name: str

    def __init__(self, name: str, func: Callable[..., object]) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "func", func)

    def __call__(self, *args: object) -> object:
        return self.func(*args)

    def __repr__(self) -> str:
        return f"<allowed {self.name}>"


class PickledNamespace(dict[str, object]):
    """Inert replacement for ``argparse.Namespace`` (timm's CheckpointSaver stores its ``args`` as one).

    The attributes become dict items; they can also be read as attributes (``ns.lr``) when the name does not
    clash with a dict method.
    """

    def __getattr__(self, name: str) -> object:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state: object) -> None:
        # Protocol 2 pickles a Namespace as NEWOBJ + BUILD(__dict__); BUILD may pass (dict, slotstate).
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise CheckpointError("argparse.Namespace state in data.pkl is not a dict of attribute names")
        self.update(state)

    def __repr__(self) -> str:
        return f"Namespace({', '.join(f'{k}={v!r}' for k, v in self.items())})"


# numpy's byte-order characters; "|" (not applicable) and "=" both mean native.
_BYTEORDERS: Final[dict[str, Literal["<", ">", "="]]] = {"<": "<", ">": ">", "|": "=", "=": "="}


class _NumpyDtypeSpec:
    """What ``numpy.dtype(code, align, copy)`` plus its BUILD state describe, for numeric scalars only."""

    __slots__ = ("byteorder", "code")

    def __init__(self, code: str) -> None:
        self.code = code
        self.byteorder = "|"

    def __setstate__(self, state: object) -> None:
        # numpy's dtype state is (version, byteorder, subarray, names, fields, elsize, alignment, flags).
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in _BYTEORDERS):
            raise CheckpointError(f"unexpected numpy dtype state in data.pkl: {state!r}")
        self.byteorder = state[1]


# ------------------------------------------------------------------------------------------------------------
# The allow-listed callables. Each checks its arguments: they come from an untrusted file.


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: object, what: str) -> tuple[int, ...]:
    if not isinstance(x, tuple | list) or not all(_is_int(v) for v in x):
        raise CheckpointError(f"tensor {what} must be a tuple of ints, got {x!r}")
    return tuple(x)


def _tensor_from_storage(
    storage: object, offset: object, size: object, stride: object, dtype_name: str, metadata: object
) -> np.ndarray:
    """Copy the view (offset, size, stride) of ``storage`` to a fresh C-contiguous array of ``dtype_name``."""
    if not isinstance(storage, TorchStorage):
        raise CheckpointError(f"tensor storage must come from a persistent id, got {type(storage).__name__}")
    if not _is_int(offset):
        raise CheckpointError(f"tensor storage offset must be an int, got {offset!r}")
    assert isinstance(offset, int)
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise CheckpointError(f"tensor size {shape} and stride {strides} differ in length")
    if offset < 0 or any(n < 0 for n in shape) or any(s < 0 for s in strides):
        raise CheckpointError(f"negative tensor offset, size or stride: {offset}, {shape}, {strides}")
    raw = storage.elements(dtype_name)
    if math.prod(shape) == 0:
        out = np.empty(shape, dtype=raw.dtype)
    else:
        # The farthest element the view touches must lie inside the storage: as_strided does not check.
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if last >= raw.size:
            raise CheckpointError(
                f"tensor view (offset {offset}, size {shape}, stride {strides}) reaches element {last}, "
                f"but storage {storage.key!r} holds only {raw.size} {dtype_name} elements"
            )
        view = np.lib.stride_tricks.as_strided(
            raw[offset:], shape=shape, strides=[s * raw.itemsize for s in strides], writeable=False
        )
        # The copy detaches the result from the storage (views of one storage stay independent) and swaps
        # big-endian data to native order.
        out = np.array(view, dtype=raw.dtype.newbyteorder("="), order="C", copy=True)
    if dtype_name == "bfloat16":
        # bfloat16 is the top half of a float32: widening is exact.
        out = (out.astype(np.uint32) << 16).view(np.float32)
    elif dtype_name == "bool":
        out = out != 0
    return _apply_metadata(out, metadata)


def _apply_metadata(array: np.ndarray, metadata: object) -> np.ndarray:
    """Apply the lazy conjugate / negative bits torch stores with a tensor instead of materialising them."""
    if metadata is None:
        return array
    if not isinstance(metadata, dict):
        raise CheckpointError(f"tensor metadata must be a dict, got {type(metadata).__name__}")
    for flag, value in metadata.items():
        if flag == "conj" and value:
            array = np.conj(array)
        elif flag == "neg" and value:
            array = np.negative(array)
        elif value:
            # An unknown flag could change the values: refuse rather than return wrong numbers.
            raise CheckpointError(f"unsupported tensor metadata {flag!r}={value!r}")
    return array


def _rebuild_tensor_v2(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2``: a tensor of the storage's own dtype."""
    if not isinstance(storage, TorchStorage):
        raise CheckpointError(f"tensor storage must come from a persistent id, got {type(storage).__name__}")
    return _tensor_from_storage(storage, storage_offset, size, stride, storage.dtype_name, metadata)


def _rebuild_tensor_v3(
    storage: object,
    storage_offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    backward_hooks: object,
    dtype: object,
    metadata: object = None,
) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v3``: an explicit dtype over the storage bytes (offset in elements)."""
    if not isinstance(dtype, TorchDtype):
        raise CheckpointError(f"_rebuild_tensor_v3 expects a torch dtype, got {dtype!r}")
    return _tensor_from_storage(storage, storage_offset, size, stride, dtype.name, metadata)


def _rebuild_parameter(data: object, requires_grad: object = True, backward_hooks: object = None) -> np.ndarray:
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is just its tensor here."""
    if not isinstance(data, np.ndarray):
        raise CheckpointError(f"nn.Parameter must wrap a tensor, got {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(
    data: object, requires_grad: object, backward_hooks: object, state: object
) -> np.ndarray:
    """``torch._utils._rebuild_parameter_with_state``: the extra Python attributes are dropped."""
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _rebuild_from_type_v2(func: object, new_type: object, args: object, state: object) -> object:
    """``torch._tensor._rebuild_from_type_v2``: a tensor with Python attributes; keep the tensor only."""
    if not (isinstance(func, _Allowed) and func.func in _TENSOR_REBUILDERS):
        raise CheckpointError(f"_rebuild_from_type_v2 with an unexpected rebuild function {func!r}")
    if not isinstance(new_type, _TensorClass):
        raise CheckpointError(f"_rebuild_from_type_v2 with an unexpected tensor type {new_type!r}")
    if not isinstance(args, tuple):
        raise CheckpointError("_rebuild_from_type_v2 arguments must be a tuple")
    return func(*args)


_TENSOR_REBUILDERS: Final = frozenset({_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter})


def _ordered_dict(items: object = ()) -> collections.OrderedDict[object, object]:
    """``collections.OrderedDict``: state dicts and backward-hook tables. Items arrive via SETITEMS."""
    if not isinstance(items, list | tuple | dict):
        raise CheckpointError(f"OrderedDict argument must be a list of pairs, got {type(items).__name__}")
    return collections.OrderedDict(items)


def _torch_size(dims: object = ()) -> tuple[int, ...]:
    """``torch.Size``: a plain tuple of ints."""
    return _int_tuple(dims, "torch.Size")


def _torch_device(kind: object, index: object = None) -> str:
    """``torch.device``: returned as its string form, e.g. ``'cpu'`` or ``'cuda:0'``."""
    if not isinstance(kind, str) or not (index is None or _is_int(index)):
        raise CheckpointError(f"unexpected torch.device arguments {kind!r}, {index!r}")
    return kind if index is None or ":" in kind else f"{kind}:{index}"


def _torch_layout(name: object) -> str:
    """``torch.serialization._get_layout``: the layout's name, e.g. ``'torch.strided'``."""
    if not isinstance(name, str):
        raise CheckpointError(f"unexpected layout name {name!r}")
    return name


def _codecs_encode(text: object, encoding: object = "latin1") -> bytes:
    """``_codecs.encode``: protocol 2 pickles ``bytes`` as ``encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError(f"unexpected _codecs.encode arguments {text!r:.40}, {encoding!r}")
    return text.encode("latin-1")


def _make_set(items: object = ()) -> set[object]:
    if not isinstance(items, list | tuple):
        raise CheckpointError(f"set argument must be a list, got {type(items).__name__}")
    return set(items)


def _make_frozenset(items: object = ()) -> frozenset[object]:
    return frozenset(_make_set(items))


def _make_complex(real: object = 0.0, imag: object = 0.0) -> complex:
    if not all(isinstance(v, int | float) for v in (real, imag)):
        raise CheckpointError(f"complex arguments must be numbers, got {real!r}, {imag!r}")
    assert isinstance(real, int | float) and isinstance(imag, int | float)
    return complex(real, imag)


def _make_bytearray(data: object = b"") -> bytearray:
    if not isinstance(data, bytes):
        raise CheckpointError(f"bytearray argument must be bytes, got {type(data).__name__}")
    return bytearray(data)


_NUMPY_SCALAR_CODES: Final = frozenset(
    {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}
)


def _numpy_dtype(code: object, align: object = False, copy: object = True) -> _NumpyDtypeSpec:
    """``numpy.dtype``: only the fixed-size numeric codes (no object dtype: its bytes would be pointers)."""
    if code not in _NUMPY_SCALAR_CODES:
        raise CheckpointError(f"numpy dtype {code!r} in data.pkl is not a plain numeric dtype")
    assert isinstance(code, str)
    return _NumpyDtypeSpec(code)


def _numpy_scalar(spec: object, data: object) -> object:
    """``numpy.core.multiarray.scalar``: a NumPy scalar (e.g. a metric), returned as the Python number."""
    if not isinstance(spec, _NumpyDtypeSpec) or not isinstance(data, bytes):
        raise CheckpointError("unexpected numpy scalar arguments in data.pkl")
    dtype = np.dtype(spec.code).newbyteorder(_BYTEORDERS[spec.byteorder])
    if len(data) != dtype.itemsize:
        raise CheckpointError(f"numpy scalar {spec.code} needs {dtype.itemsize} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype)[0].item()


def _build_allow_list() -> dict[str, object]:
    """Fully qualified global name -> the stand-in find_class returns for it."""
    functions: dict[str, Callable[..., object]] = {
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter_with_state,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "collections.OrderedDict": _ordered_dict,
        "torch.Size": _torch_size,
        "torch.device": _torch_device,
        "torch.serialization._get_layout": _torch_layout,
        "_codecs.encode": _codecs_encode,
        "builtins.set": _make_set,
        "builtins.frozenset": _make_frozenset,
        "builtins.complex": _make_complex,
        "builtins.bytearray": _make_bytearray,
        "numpy.dtype": _numpy_dtype,
        "numpy.core.multiarray.scalar": _numpy_scalar,
        "numpy._core.multiarray.scalar": _numpy_scalar,
    }
    allowed: dict[str, object] = {name: _Allowed(name, func) for name, func in functions.items()}
    allowed["argparse.Namespace"] = PickledNamespace  # a class: protocol 2 rebuilds it with NEWOBJ
    allowed["torch.Tensor"] = _TensorClass("torch.Tensor")
    allowed["torch.nn.parameter.Parameter"] = _TensorClass("torch.nn.Parameter")
    allowed["torch.storage.UntypedStorage"] = TorchStorageType("UntypedStorage", "uint8")
    for storage_name, dtype_name in _STORAGE_DTYPES.items():
        allowed[f"torch.{storage_name}"] = TorchStorageType(storage_name, dtype_name)
    for dtype_name in _TORCH_DTYPE_NAMES:
        allowed[f"torch.{dtype_name}"] = TorchDtype(dtype_name)
    return allowed


_ALLOWED: Final = _build_allow_list()
# Python 2 module names that protocol <= 2 pickles still use; the stock find_class maps them, so must ours.
_MODULE_ALIASES: Final = {"__builtin__": "builtins", "copy_reg": "copyreg"}


# ------------------------------------------------------------------------------------------------------------
# Reading the archive.


class _Archive:
    """The open zip plus what persistent_load needs: the folder prefix, byte order and the storage cache."""

    def __init__(self, zf: zipfile.ZipFile, prefix: str, byteorder: ByteOrder) -> None:
        self.zf = zf
        self.prefix = prefix
        self.byteorder = byteorder
        self._bytes: dict[str, bytes] = {}  # key -> storage bytes, so shared storages are read once

    def storage(self, pid: object) -> TorchStorage:
        """Resolve a persistent id ``('storage', storage_type, key, location, numel)`` to its bytes."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id in data.pkl: {pid!r:.200}")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, TorchStorageType):
            raise CheckpointError(f"persistent id names {storage_type!r}, not a torch storage type")
        if not isinstance(key, str) or not isinstance(location, str) or not _is_int(numel) or numel < 0:
            raise CheckpointError(f"malformed persistent id in data.pkl: {pid!r:.200}")
        nbytes = numel * _ITEMSIZES[storage_type.dtype_name]
        data = self._bytes.get(key)
        if data is None:
            data = self._read_entry(key, nbytes)
            self._bytes[key] = data
        elif len(data) < nbytes:
            raise CheckpointError(f"storage {key!r} is referenced with {nbytes} bytes but holds {len(data)}")
        return TorchStorage(key, storage_type.dtype_name, data, self.byteorder)

    def _read_entry(self, key: str, nbytes: int) -> bytes:
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zf.getinfo(name)
        except KeyError:
            raise CheckpointError(f"storage entry {name!r} referenced by data.pkl is missing") from None
        # Checked before decompressing, so a crafted entry cannot inflate to an arbitrary size.
        if info.file_size != nbytes:
            raise CheckpointError(
                f"storage entry {name!r} holds {info.file_size} bytes, but data.pkl declares {nbytes}"
            )
        return self.zf.read(info)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only through the allow-list and storages through the archive."""

    def __init__(self, data: bytes, archive: _Archive) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive

    def find_class(self, module: str, name: str) -> Any:
        module = _MODULE_ALIASES.get(module, module)
        qualified = f"{module}.{name}"
        try:
            return _ALLOWED[qualified]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to load global {qualified!r} from data.pkl: only tensors, state dicts and plain "
                "Python containers are allowed (a file from torch.save(model) pickles the model's classes; "
                "re-save model.state_dict() instead)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        return self._archive.storage(pid)


def _describe_non_zip(path: str) -> str:
    """Why ``path`` is not a readable zip checkpoint, judged from its first bytes."""
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
        return "the zip archive is corrupt or truncated (no readable central directory)"
    return f"not a torch.save zip archive (unrecognised leading bytes {head[:8]!r})"


def _find_prefix(zf: zipfile.ZipFile) -> str:
    """The top-level folder (with trailing slash) that holds ``data.pkl``."""
    names = zf.namelist()
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


def _read_byteorder(zf: zipfile.ZipFile, prefix: str) -> ByteOrder:
    """``'<'`` or ``'>'`` from the ``byteorder`` entry; files from before it existed are little-endian."""
    try:
        raw = zf.read(f"{prefix}byteorder")
    except KeyError:
        return "<"
    orders: dict[bytes, ByteOrder] = {b"little": "<", b"big": ">"}
    order = orders.get(raw.strip())
    if order is None:
        raise CheckpointError(f"unknown byteorder entry {raw[:20]!r} (expected 'little' or 'big')")
    return order


def _read(path: str) -> object:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(_describe_non_zip(path))
    try:
        with zipfile.ZipFile(path) as zf:
            prefix = _find_prefix(zf)
            archive = _Archive(zf, prefix, _read_byteorder(zf, prefix))
            unpickler = _RestrictedUnpickler(zf.read(f"{prefix}data.pkl"), archive)
            return unpickler.load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"the zip archive is corrupt or truncated ({exc})") from exc
    except Exception as exc:
        # Anything else a hostile or damaged data.pkl provokes (bad opcodes, wrong argument types, a BUILD on
        # a container ...) is a malformed file, not a bug in the caller.
        raise CheckpointError(f"malformed data.pkl ({type(exc).__name__}: {exc})") from exc


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
    keys = [repr(k) for k in list(obj)[:20]]
    return ", ".join(keys) + (", ..." if len(obj) > 20 else "")


def _as_state_dict(obj: Mapping[Any, object], path: str, where: str) -> dict[str, np.ndarray]:
    """Check that ``obj`` maps names to arrays and strip a ``module.`` prefix that every key carries."""
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: expected a state dict at {where}, but it has a key {key!r}")
        if not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{path}: expected a state dict (names -> tensors) at {where}, but {key!r} holds a "
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
    return _as_state_dict(state_dict, p, f"key {key!r}")
