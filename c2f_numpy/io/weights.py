"""Save and load state dicts (``name -> np.ndarray``) as ``.npz`` or ``.safetensors``; read ``.pth`` too.

A state dict is keyed like PyTorch's (``stages.0.1.attn.att.2.weight``); BatchNorm counters such as
``downsample_layers.0.2.num_batches_tracked`` are 0-d int64 arrays. The format is chosen by the suffix.

``.npz`` (NumPy). A zip archive with one entry ``<name>.npy`` per array (stored, or deflated with
``compress=True``). Each ``.npy`` entry is a small header (magic ``\\x93NUMPY``, version, a Python-literal
dict ``{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3)}``) followed by the raw array bytes. Numeric
arrays need no pickle; an object array *is* a pickle, so this module never writes one and refuses to read
one. Metadata (a ``str -> str`` mapping) goes into the reserved entry ``__metadata__.npy``: a 0-d unicode
array holding a JSON object, which ``np.load(..., allow_pickle=False)`` reads like any other array. Files are
written by :mod:`zipfile` directly rather than ``np.savez(path, **arrays)``, where a tensor called ``file``
or ``allow_pickle`` would collide with the function's own arguments; entries get a fixed timestamp, so the
same arrays always give the same bytes.

``.safetensors`` (Hugging Face). An 8-byte little-endian header length, a JSON header mapping each name to
``{"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}`` plus an optional ``"__metadata__"``
object of strings, then the little-endian tensor bytes. Written and validated by the ``safetensors``
package. The format keeps no key order: names come back sorted. ``BF16`` tensors are widened exactly to
float32 (as :mod:`c2f_numpy.io.torch_pth` does), since NumPy has no bfloat16.

``.pth`` / ``.pt`` / ``.bin`` are ``torch.save`` checkpoints, read by
:func:`~c2f_numpy.io.torch_pth.load_torch_checkpoint` (without torch, without running the pickle); they carry
no metadata. Saving them is not supported.

Round trips through ``.npz`` and ``.safetensors`` are bitwise: same dtype, shape (0-d included) and bytes.
Saved arrays are made C-contiguous and native-endian; loaded ones are fresh, writable and C-contiguous.

Public API: :func:`save_weights`, :func:`load_weights`, :class:`WeightsFileError`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Final, Literal

import numpy as np
import safetensors
import safetensors.numpy
from numpy.lib import format as npy_format

from .atomic import atomic_write
from .errors import brief, json_loads_bounded
from .safezip import SafeZip
from .torch_pth import CheckpointError, load_torch_checkpoint

__all__ = ["ENTRIES_KEY", "METADATA_KEY", "WeightsFileError", "load_npy", "load_weights", "save_weights"]


class WeightsFileError(CheckpointError):
    """A weights file cannot be read: unknown suffix, corrupt or truncated, or not plain numeric arrays."""


# The name both formats reserve for metadata: safetensors' header key, and our entry in an npz.
METADATA_KEY: Final = "__metadata__"
# Metadata key our writer fills with the JSON list of array names; the reader checks the file holds exactly
# those (a damaged archive must never load with arrays missing) and does not return the key.
ENTRIES_KEY: Final = "c2f_numpy.entries"

_NPZ: Final = frozenset({".npz"})
_SAFETENSORS: Final = frozenset({".safetensors"})
_TORCH: Final = frozenset({".pth", ".pt", ".bin"})
_SUFFIXES_TEXT: Final = ".npz, .safetensors (save and load) or .pth, .pt, .bin (load only)"

# Array kinds a state dict may hold: bool, signed and unsigned integers, floats, complex numbers.
_NUMERIC_KINDS: Final = frozenset("biufc")
# safetensors header dtype -> NumPy dtype, for what safetensors.numpy reads; BF16 is handled separately.
_SAFETENSORS_DTYPES: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16),
    "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "C64": np.dtype(np.complex64),
}
_SAFETENSORS_WRITABLE: Final = frozenset(_SAFETENSORS_DTYPES.values())
# 1980-01-01, the earliest time a zip entry can carry: a fixed stamp makes the output reproducible.
_ZIP_EPOCH: Final = (1980, 1, 1, 0, 0, 0)


def _suffix(path: Path) -> str:
    return path.suffix.lower()


# ------------------------------------------------------------------------------------------------------------
# Saving.


def _check_state_dict(state_dict: Mapping[str, np.ndarray], suffix: str) -> dict[str, np.ndarray]:
    """Validate names and arrays; return C-contiguous, native-endian arrays in the same order."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of names to arrays, got {type(state_dict).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state dict keys must be str, got {key!r} ({type(key).__name__})")
        if key == METADATA_KEY:
            raise ValueError(f"{METADATA_KEY!r} is reserved for metadata and cannot name an array")
        if "\0" in key:
            # zip (and so npz) truncates entry names at a NUL byte on reading.
            raise ValueError(f"state dict key {key!r} contains a NUL character")
        # np.ma.MaskedArray is an ndarray too, but saving it would silently drop the mask.
        if not isinstance(value, np.ndarray) or isinstance(value, np.ma.MaskedArray):
            hint = " (convert torch tensors with .detach().cpu().numpy())" if hasattr(value, "detach") else ""
            raise TypeError(f"state dict value {key!r} must be a numpy.ndarray, got {type(value).__name__}{hint}")
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(
                f"state dict value {key!r} has dtype {value.dtype}; only bool, integer, float and complex arrays "
                "can be saved (object arrays would need pickle)"
            )
        native = value.dtype.newbyteorder("=")
        if suffix in _SAFETENSORS and native not in _SAFETENSORS_WRITABLE:
            raise TypeError(f"state dict value {key!r} has dtype {value.dtype}, which safetensors cannot store")
        # Not np.ascontiguousarray: it turns 0-d arrays (num_batches_tracked) into shape (1,).
        out[key] = np.asarray(value, dtype=native, order="C")
    if suffix in _NPZ:
        # np.load would resolve "x.npy" to the entry of "x" (file x.npy) rather than of "x.npy" (x.npy.npy).
        clashes = [k for k in out if k.endswith(".npy") and k[: -len(".npy")] in out]
        if clashes:
            raise ValueError(f"npz cannot hold both 'x' and 'x.npy' as names: {clashes[:5]}")
    return out


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of str to str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
        if key == ENTRIES_KEY:
            raise ValueError(f"metadata key {ENTRIES_KEY!r} is reserved: save_weights writes the entry list itself")
    return dict(metadata)


def _write_npz(fh: BinaryIO, arrays: dict[str, np.ndarray], metadata: dict[str, str], compress: bool) -> None:
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    entries = dict(arrays)
    if metadata:
        # JSON escapes control characters, so the text has no NUL that a numpy unicode array would strip.
        entries = {METADATA_KEY: np.array(json.dumps(metadata, ensure_ascii=True, sort_keys=True)), **entries}
    with zipfile.ZipFile(fh, mode="w", compression=compression, allowZip64=True) as zf:
        for key, array in entries.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = compression
            info.external_attr = 0o644 << 16  # rw-r--r-- for tools that extract the archive
            # force_zip64: the entry size is unknown when the entry is opened and may exceed 4 GiB.
            with zf.open(info, mode="w", force_zip64=True) as entry:
                npy_format.write_array(entry, array, allow_pickle=False)


def save_weights(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
    *,
    compress: bool = False,
) -> Path:
    """Write ``state_dict`` (and ``metadata``) to ``path`` atomically, in the format its suffix names.

    In: a ``.npz`` or ``.safetensors`` path; a mapping of str names to numeric arrays (bool, int, uint, float,
    complex; safetensors also excludes complex128 and long double), any layout and byte order; optional str ->
    str metadata; ``compress`` deflates the ``.npz`` entries (not available for safetensors).
    Out: ``path`` as a :class:`~pathlib.Path`. The file is replaced in one step (see
    :func:`~c2f_numpy.io.atomic.atomic_write`): on any error the previous file is left intact.
    Raises: ``TypeError`` for non-str names, non-array or non-numeric values and non-str metadata;
    ``ValueError`` for the reserved name ``__metadata__``, an unsupported suffix or ``compress`` with
    safetensors; ``FileNotFoundError`` when the directory does not exist. Nothing is written on these errors.
    """
    target = Path(path)
    suffix = _suffix(target)
    if suffix not in _NPZ | _SAFETENSORS:
        extra = " (torch checkpoints can be read but not written)" if suffix in _TORCH else ""
        raise ValueError(f"cannot save weights to {str(target)!r}: use a .npz or .safetensors suffix{extra}")
    if compress and suffix in _SAFETENSORS:
        raise ValueError("safetensors files cannot be compressed; use compress=False or a .npz path")
    arrays = _check_state_dict(state_dict, suffix)
    meta = _check_metadata(metadata)
    meta[ENTRIES_KEY] = json.dumps(list(arrays), ensure_ascii=True)
    if suffix in _NPZ:
        return atomic_write(target, lambda fh: _write_npz(fh, arrays, meta, compress))
    # safetensors.numpy.save_file would write the path itself (mode 0o600, not atomically): serialise to bytes.
    data = safetensors.numpy.save(arrays, metadata=meta)
    return atomic_write(target, lambda fh: fh.write(data))


# ------------------------------------------------------------------------------------------------------------
# Loading.


def _describe_non_zip(path: Path) -> str | None:
    """Why ``path`` is not an npz, judged from its first bytes; ``None`` when it starts like a zip archive."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        return "the file is empty"
    if head[:2] == b"PK":
        return None
    if head.startswith(b"\x93NUMPY"):
        return "this is a single-array .npy file, not an .npz archive of named arrays"
    return f"not an .npz (zip) archive (leading bytes {head!r})"


# The header dict numpy writes (keys sorted, a trailing comma, space padding): parsed here with a regular
# expression, not ast.literal_eval, whose recursion and tokenizer a crafted header can break.
_NPY_HEADER: Final = re.compile(
    r"\{\s*'descr'\s*:\s*'([<>|=]?[a-zA-Z][0-9]*)'\s*,\s*'fortran_order'\s*:\s*(True|False)\s*,"
    r"\s*'shape'\s*:\s*\(\s*((?:[0-9]{1,19}\s*,\s*)*(?:[0-9]{1,19})?)\s*,?\s*\)\s*,?\s*\}\s*",
)
_MAX_NPY_HEADER: Final = 1 << 16
# The metadata entry's header exactly as numpy writes it for a 0-d little-endian unicode array.
_NPY_UNICODE_SCALAR: Final = re.compile(
    rb"\x93NUMPY\x01\x00..\{'descr': '<U([0-9]{1,9})', 'fortran_order': False, 'shape': \(\), \} *\n", re.DOTALL
)


def _parse_npy(data: bytes, name: str) -> np.ndarray:
    """The array of one ``.npy`` entry (already read whole and CRC-checked): a fresh C-contiguous copy.

    Only plain numeric dtypes; the data must be exactly as long as the header's shape and dtype require.
    """
    if not data.startswith(b"\x93NUMPY") or len(data) < 10:
        raise WeightsFileError(f"entry {name!r} is corrupt or truncated: expected the .npy magic, found {data[:8]!r}")
    version = (data[6], data[7])
    if version == (1, 0):
        (header_len,), start = struct.unpack("<H", data[8:10]), 10
    elif version in ((2, 0), (3, 0)) and len(data) >= 12:
        (header_len,), start = struct.unpack("<I", data[8:12]), 12
    else:
        # Version 3.0 exists only for structured dtypes with non-latin-1 field names: never numeric.
        raise WeightsFileError(f"entry {name!r} uses .npy format version {version}, which no numeric array needs")
    if header_len > _MAX_NPY_HEADER or start + header_len > len(data):
        raise WeightsFileError(
            f"entry {name!r} is corrupt or truncated: expected a .npy header of at most "
            f"{min(_MAX_NPY_HEADER, len(data) - start)} bytes, found one of {header_len}"
        )
    header = data[start : start + header_len].decode("latin-1")
    if "'O'" in header or "|O" in header or "object" in header:
        raise WeightsFileError(
            f"entry {name!r} holds a Python object array, which is stored as a pickle; refusing to unpickle it "
            "(loading a pickle can run arbitrary code). Re-save the arrays with a numeric dtype"
        )
    match = _NPY_HEADER.fullmatch(header)
    if match is None:
        raise WeightsFileError(
            f"entry {name!r} is corrupt or truncated: expected a .npy header of a plain numeric array, found "
            f"{brief(header, 120)}"
        )
    try:
        dtype = np.dtype(match.group(1))
    except TypeError:
        raise WeightsFileError(f"entry {name!r} has an unknown dtype {brief(match.group(1))}") from None
    if dtype.kind not in _NUMERIC_KINDS:
        raise WeightsFileError(f"entry {name!r} has dtype {dtype}; weights must be numeric arrays")
    shape = tuple(int(n) for n in match.group(3).replace(" ", "").split(",") if n.strip())
    payload = len(data) - start - header_len
    expected = math.prod(shape) * dtype.itemsize
    if payload != expected:
        raise WeightsFileError(
            f"entry {name!r} holds {len(data)} bytes, but its header ({dtype}, shape {shape}) needs "
            f"{start + header_len + expected}"
        )
    flat = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=start + header_len)
    view = flat.reshape(shape, order="F") if match.group(2) == "True" else flat.reshape(shape)
    return np.array(view, dtype=dtype.newbyteorder("="), order="C")


def _parse_metadata(array: np.ndarray) -> dict[str, str]:
    if array.dtype.kind != "U" or array.ndim != 0:
        raise WeightsFileError(f"{METADATA_KEY!r} must be a 0-d unicode array, got {array.dtype} {array.shape}")
    text = str(array[()])
    try:
        meta = json_loads_bounded(text, METADATA_KEY)
    except ValueError as exc:
        raise WeightsFileError(f"{METADATA_KEY!r} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise WeightsFileError(f"{METADATA_KEY!r} must be a JSON object of strings, got {brief(text, 200)}")
    return meta


def _check_entries(names: list[str], metadata: dict[str, str], ordered: bool) -> dict[str, str]:
    """Check the arrays read against the list our writer recorded; return the metadata without that list."""
    text = metadata.pop(ENTRIES_KEY, None)
    if text is None:
        return metadata  # a file from elsewhere (or from before the list existed): nothing was promised
    try:
        listed = json_loads_bounded(text, ENTRIES_KEY, max_depth=1)
    except ValueError as exc:
        raise WeightsFileError(f"metadata {ENTRIES_KEY!r} is corrupt ({exc})") from None
    if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
        raise WeightsFileError(f"expected metadata {ENTRIES_KEY!r} to list array names, found {brief(text)}")
    if (listed if ordered else sorted(listed)) != names:
        missing = [n for n in listed if n not in set(names)]
        extra = [n for n in names if n not in set(listed)]
        raise WeightsFileError(
            f"expected the {len(listed)} arrays the file's metadata lists, found {len(names)}: "
            f"{len(missing)} missing {brief(', '.join(missing[:5]))}, {len(extra)} unlisted "
            f"{brief(', '.join(extra[:5]))}"
        )
    return metadata


def _load_npz(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    problem = _describe_non_zip(path)
    if problem is not None:
        raise WeightsFileError(problem)
    state_dict: dict[str, np.ndarray] = {}
    metadata: dict[str, str] = {}
    with SafeZip(path, WeightsFileError) as zf:
        for info in zf.infos:
            name = info.filename
            if not name.endswith(".npy") or info.is_dir():
                raise WeightsFileError(f"entry {name!r} is not a .npy array; an .npz holds only <name>.npy entries")
            key = name[: -len(".npy")]
            if key == METADATA_KEY:
                array = _parse_npy_metadata(zf.read(info), name)
                metadata = _parse_metadata(array)
                continue
            state_dict[key] = _parse_npy(zf.read(info), name)
    return state_dict, _check_entries(list(state_dict), metadata, ordered=True)


def _parse_npy_metadata(data: bytes, name: str) -> np.ndarray:
    """The metadata entry: a 0-d unicode array (the one non-numeric dtype an npz of ours holds)."""
    first_line = data[: data.find(b"\n", 0, _MAX_NPY_HEADER) + 1]
    match = _NPY_UNICODE_SCALAR.fullmatch(first_line)
    if match is None:
        head = data[10 : data.find(b"}") + 1].decode("latin-1")
        raise WeightsFileError(f"{METADATA_KEY!r} must be a 0-d unicode array, got header {brief(head, 120)}")
    chars = int(match.group(1))
    offset = len(match.group(0))
    if len(data) - offset != 4 * chars:
        raise WeightsFileError(f"entry {name!r} holds {len(data)} bytes, but its header needs {offset + 4 * chars}")
    return np.frombuffer(data, dtype=f"<U{chars}", count=1, offset=offset).reshape(())


def _read_bf16_widened(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    """BF16 tensors as float32 (exact: bfloat16 is the top half of a float32), from the raw header offsets.

    Only called after ``safe_open`` has validated the header and that the offsets fit the file.
    """
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = json_loads_bounded(fh.read(header_len).decode("utf-8"), "safetensors header")
        out: dict[str, np.ndarray] = {}
        for name in names:
            begin, end = header[name]["data_offsets"]
            fh.seek(8 + header_len + begin)
            bits = np.frombuffer(fh.read(end - begin), dtype="<u2").reshape(header[name]["shape"])
            out[name] = (bits.astype(np.uint32) << 16).view(np.float32)
    return out


def _load_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    arrays: dict[str, np.ndarray] = {}
    bf16: list[str] = []
    try:
        with safetensors.safe_open(path, framework="np") as f:
            metadata = dict(f.metadata() or {})
            keys = list(f.keys())
            for key in keys:
                dtype = f.get_slice(key).get_dtype()
                if dtype == "BF16":
                    bf16.append(key)
                elif dtype in _SAFETENSORS_DTYPES:
                    arrays[key] = np.asarray(f.get_tensor(key), order="C")
                else:
                    raise WeightsFileError(f"tensor {key!r} has dtype {dtype}, which NumPy cannot represent")
    except safetensors.SafetensorError as exc:
        raise WeightsFileError(f"not a readable safetensors file ({exc})") from exc
    if bf16:
        arrays.update(_read_bf16_widened(path, bf16))
    return {key: arrays[key] for key in keys}, _check_entries(sorted(keys), metadata, ordered=False)


def load_weights(
    path: str | os.PathLike[str], *, weights: Literal["auto", "plain", "ema"] = "auto"
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a state dict and its metadata from a ``.npz``, ``.safetensors`` or torch (``.pth`` ...) file.

    In: the path; its suffix (case-insensitive) picks the reader. ``.npz`` is never unpickled (no
    ``allow_pickle``); ``.pth`` / ``.pt`` / ``.bin`` go through
    :func:`~c2f_numpy.io.torch_pth.load_torch_checkpoint` with ``weights`` ("auto", "plain" or "ema": which
    weights of a training checkpoint) and have no metadata; npz and safetensors files hold one set of weights.
    Out: ``(state_dict, metadata)``: fresh, writable, C-contiguous arrays (npz in file order, safetensors
    sorted by name; bfloat16 widened to float32), and the ``str -> str`` metadata (``{}`` when there is none).
    Raises: ``FileNotFoundError`` for a missing file; :class:`WeightsFileError` (a :class:`CheckpointError`)
    naming the file for an unknown suffix, a corrupt, truncated or non-numeric file, or a pickled array;
    :class:`CheckpointError` from the torch reader.
    """
    p = Path(path)
    suffix = _suffix(p)
    if suffix not in _NPZ | _SAFETENSORS | _TORCH:
        raise WeightsFileError(f"{p}: unknown weights file suffix {p.suffix!r}; expected {_SUFFIXES_TEXT}")
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "No such weights file", str(p))
    if suffix in _TORCH:
        return load_torch_checkpoint(p, weights=weights), {}
    if weights not in ("auto", "plain"):
        raise WeightsFileError(f"{p}: weights={weights!r} applies to torch training checkpoints; {suffix} files "
                               "hold a single set of weights (load them with weights='auto')")  # fmt: skip
    try:
        return _load_npz(p) if suffix in _NPZ else _load_safetensors(p)
    except WeightsFileError as exc:
        raise WeightsFileError(f"{p}: {exc}").with_traceback(exc.__traceback__) from exc.__cause__
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
        # Damage found while reading entries: CRC mismatch, bad deflate stream, short data, a malformed .npy
        # header, an unsupported zip compression method. I/O errors (permissions, EIO ...) propagate as they are.
        raise WeightsFileError(f"{p}: corrupt or truncated {suffix} file ({type(exc).__name__}: {exc})") from exc


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one numeric ``.npy`` file (``np.save`` of a plain array) without pickle and without ``ast``.

    Out: a fresh C-contiguous native-endian array. Raises ``FileNotFoundError`` for a missing file and
    :class:`WeightsFileError` naming the file for anything else (an object array, a header that does not match
    the data's length, a structured dtype ...).
    """
    p = Path(path)
    data = p.read_bytes()
    try:
        return _parse_npy(data, p.name)
    except WeightsFileError as exc:
        raise WeightsFileError(f"{p}: {exc}") from None
