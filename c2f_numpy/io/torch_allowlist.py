"""The allow-list of the torch checkpoint reader: the stand-ins a ``data.pkl`` may build, and nothing else.

A ``torch.save`` pickle names globals (``torch._utils._rebuild_tensor_v2``, ``collections.OrderedDict``,
``torch.FloatStorage`` ...). :class:`TorchPolicy` answers the bounded pickle machine
(:mod:`c2f_numpy.io.pickle_vm`): each allowed global maps to a stand-in written here that checks its arguments
(they come from an untrusted file) and builds plain Python or NumPy values; any other global is an
:class:`UnsafeCheckpointError` before anything is called. ``NEWOBJ`` builds only :class:`PickledNamespace`, and
``BUILD`` sets state only on the stand-ins that expect it and on an ``OrderedDict``'s plain attributes (a state
dict's ``_metadata``); a NumPy array's state, in particular, is never set from the file.

Tensors are copied out of their storage bytes. A view may not read more elements than its storage holds
(a stride-0 view of 16 bytes cannot become 1 GiB), and all tensors of one file together may not exceed
:data:`MAX_EXPANSION` times the file's size plus 1 MiB.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Final, Literal

import numpy as np

from .errors import FileFormatError, brief

__all__ = [
    "MAX_EXPANSION",
    "ByteOrder",
    "CheckpointError",
    "PickledNamespace",
    "TorchDtype",
    "TorchPolicy",
    "TorchStorage",
    "TorchStorageType",
    "UnsafeCheckpointError",
]

ByteOrder = Literal["<", ">"]  # byte order of the storage bytes, as a NumPy dtype prefix


# All tensors of a file together may hold this many times the file's bytes, plus _EXPANSION_SLACK: torch writes
# each storage once, so only views that overlap (or bfloat16 widened to float32) make more than the file holds.
MAX_EXPANSION: Final = 4
_EXPANSION_SLACK: Final = 1 << 20


class CheckpointError(FileFormatError):
    """The file is not a ``torch.save`` zip checkpoint this module can read, or lacks the requested data."""


class UnsafeCheckpointError(CheckpointError):
    """``data.pkl`` asks for a global outside the allow-list, i.e. loading it could execute code."""


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
ITEMSIZES: Final[dict[str, int]] = {
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


class TensorBudget:
    """The bytes the tensors of one file may still take: ``MAX_EXPANSION * file size + 1 MiB`` in all."""

    __slots__ = ("left",)

    def __init__(self, file_size: int | None) -> None:
        self.left = math.inf if file_size is None else MAX_EXPANSION * file_size + _EXPANSION_SLACK

    def spend(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise CheckpointError(
                f"expected tensors of at most {MAX_EXPANSION}x the file's size in all, found {what} of {nbytes} "
                f"bytes with only {self.left} left (views that repeat their storage's elements?)"
            )
        self.left -= nbytes


class TorchStorage(_Inert):
    """One ``data/<key>`` entry: the raw storage bytes plus the dtype and byte order they were written with.

    A bare storage saved with ``torch.save`` comes back from :func:`read_torch_file` as this object; inside
    tensors it is only an intermediate.
    """

    __slots__ = ("budget", "byteorder", "data", "dtype_name", "key")
    key: str
    dtype_name: str
    data: bytes
    byteorder: ByteOrder
    budget: TensorBudget

    def __init__(
        self, key: str, dtype_name: str, data: bytes, byteorder: ByteOrder, budget: TensorBudget | None = None
    ) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "dtype_name", dtype_name)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "byteorder", byteorder)
        object.__setattr__(self, "budget", budget if budget is not None else TensorBudget(None))

    def __repr__(self) -> str:
        return f"TorchStorage(key={brief(self.key)}, dtype={self.dtype_name}, nbytes={len(self.data)})"

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
            raise CheckpointError(f"unexpected numpy dtype state in data.pkl: {brief(state)}")
        self.byteorder = state[1]


# ------------------------------------------------------------------------------------------------------------
# The allow-listed callables. Each checks its arguments: they come from an untrusted file.


def is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_tuple(x: object, what: str) -> tuple[int, ...]:
    if not isinstance(x, tuple | list) or not all(is_int(v) for v in x):
        raise CheckpointError(f"tensor {what} must be a tuple of ints, got {brief(x)}")
    return tuple(x)


def _tensor_from_storage(
    storage: object, offset: object, size: object, stride: object, dtype_name: str, metadata: object
) -> np.ndarray:
    """Copy the view (offset, size, stride) of ``storage`` to a fresh C-contiguous array of ``dtype_name``."""
    if not isinstance(storage, TorchStorage):
        raise CheckpointError(f"tensor storage must come from a persistent id, got {type(storage).__name__}")
    if not is_int(offset):
        raise CheckpointError(f"tensor storage offset must be an int, got {brief(offset)}")
    assert isinstance(offset, int)
    shape = _int_tuple(size, "size")
    strides = _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise CheckpointError(f"tensor size {shape} and stride {strides} differ in length")
    if offset < 0 or any(n < 0 for n in shape) or any(s < 0 for s in strides):
        raise CheckpointError(
            f"negative tensor offset, size or stride: {brief(offset)}, {brief(shape)}, {brief(strides)}"
        )
    raw = storage.elements(dtype_name)
    numel = math.prod(shape)
    if numel > raw.size:
        # A stride-0 (expanded) or overlapping view repeats elements: copied out, 16 bytes could become GiBs.
        raise CheckpointError(
            f"expected a tensor view of at most the {raw.size} elements of storage {brief(storage.key)}, found "
            f"size {brief(shape)} ({numel} elements; stride {brief(strides)})"
        )
    widened = 4 if dtype_name == "bfloat16" else raw.itemsize
    storage.budget.spend(numel * widened, f"a tensor of {numel} {dtype_name} elements")
    if numel == 0:
        out = np.empty(shape, dtype=raw.dtype)
    else:
        # The farthest element the view touches must lie inside the storage: as_strided does not check.
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if last >= raw.size:
            raise CheckpointError(
                f"tensor view (offset {offset}, size {brief(shape)}, stride {brief(strides)}) reaches element "
                f"{last}, but storage {brief(storage.key)} holds only {raw.size} {dtype_name} elements"
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
            raise CheckpointError(f"unsupported tensor metadata {brief(flag)}={brief(value)}")
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
        raise CheckpointError(f"_rebuild_tensor_v3 expects a torch dtype, got {brief(dtype)}")
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
        raise CheckpointError(f"_rebuild_from_type_v2 with an unexpected rebuild function {brief(func)}")
    if not isinstance(new_type, _TensorClass):
        raise CheckpointError(f"_rebuild_from_type_v2 with an unexpected tensor type {brief(new_type)}")
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
    if not isinstance(kind, str) or not (index is None or is_int(index)):
        raise CheckpointError(f"unexpected torch.device arguments {brief(kind)}, {brief(index)}")
    return kind if index is None or ":" in kind else f"{kind}:{index}"


def _torch_layout(name: object) -> str:
    """``torch.serialization._get_layout``: the layout's name, e.g. ``'torch.strided'``."""
    if not isinstance(name, str):
        raise CheckpointError(f"unexpected layout name {brief(name)}")
    return name


def _codecs_encode(text: object, encoding: object = "latin1") -> bytes:
    """``_codecs.encode``: protocol 2 pickles ``bytes`` as ``encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError(f"unexpected _codecs.encode arguments {brief(text, 40)}, {brief(encoding)}")
    return text.encode("latin-1")


def _make_set(items: object = ()) -> set[object]:
    if not isinstance(items, list | tuple):
        raise CheckpointError(f"set argument must be a list, got {type(items).__name__}")
    return set(items)


def _make_frozenset(items: object = ()) -> frozenset[object]:
    return frozenset(_make_set(items))


def _make_complex(real: object = 0.0, imag: object = 0.0) -> complex:
    if not all(isinstance(v, int | float) for v in (real, imag)):
        raise CheckpointError(f"complex arguments must be numbers, got {brief(real)}, {brief(imag)}")
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
        raise CheckpointError(f"numpy dtype {brief(code)} in data.pkl is not a plain numeric dtype")
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


class TorchPolicy:
    """The :class:`~c2f_numpy.io.pickle_vm.UnpicklePolicy` of ``data.pkl``: the allow-list above, and storages
    resolved by ``storage`` (the archive's persistent-id lookup)."""

    def __init__(self, storage: Callable[[object], TorchStorage]) -> None:
        self._storage = storage

    def find_class(self, module: str, name: str) -> object:
        module = _MODULE_ALIASES.get(module, module)
        qualified = f"{module}.{name}"
        try:
            return _ALLOWED[qualified]
        except KeyError:
            raise UnsafeCheckpointError(
                f"refusing to load global {brief(qualified, 200)} from data.pkl: only tensors, state dicts and "
                "plain Python containers are allowed (a file from torch.save(model) pickles the model's classes; "
                "re-save model.state_dict() instead)"
            ) from None

    def persistent_load(self, pid: object) -> object:
        return self._storage(pid)

    def call(self, func: object, args: tuple[object, ...]) -> object:
        if not isinstance(func, _Allowed):
            raise CheckpointError(f"data.pkl calls {brief(func)}, which is not an allowed function")
        return func(*args)

    def new(self, cls: object, args: tuple[object, ...]) -> object:
        if cls is PickledNamespace and not args:
            return PickledNamespace()
        raise CheckpointError(f"data.pkl creates an object of {brief(cls)} with NEWOBJ; only Namespace is allowed")

    def build(self, obj: object, state: object) -> None:
        if isinstance(obj, PickledNamespace | _NumpyDtypeSpec | _Inert):
            obj.__setstate__(state)
        elif type(obj) is collections.OrderedDict:
            # OrderedDict.__reduce__ carries the instance's attributes (a state dict's _metadata).
            if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
                state = state[0]
            if not isinstance(state, dict) or not all(
                isinstance(k, str) and k.isidentifier() and not k.startswith("__") for k in state
            ):
                raise CheckpointError("OrderedDict state in data.pkl is not a dict of plain attribute names")
            obj.__dict__.update(state)
        else:
            raise CheckpointError(f"data.pkl sets the state of {brief(obj)}, which no torch.save file does")
