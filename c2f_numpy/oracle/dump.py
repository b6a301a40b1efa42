"""Layer-by-layer dumps of a forward (and backward) pass, named by the official module paths, and their files.

A dump is an ordered ``name -> np.ndarray`` mapping:

    input                        the image batch fed to the model (after any cast to the model's dtype)
    <module>.out                 the output of every module that runs once per forward, in the order the
                                 outputs are produced: children before their parent, as PyTorch forward hooks
                                 fire (``stages.0.0.attn.norm.out`` ... ``stages.0.0.attn.out`` ...
                                 ``stages.0.0.out``, ``stages.0.out``). Containers that are never called
                                 (the ``downsample_layers`` and ``stages`` ModuleLists) and the model itself
                                 have no entry.
    logits                       the model's output
    dlogits                      the upstream gradient, when one is given (an input of the backward pass)
    input.grad                   d(logits . dlogits) / d(input)
    <parameter key>.grad         every parameter's gradient, keyed and ordered like ``named_parameters()``

Two c2f_numpy-specific points a port should know: ``stages.i.j.mlp.pos.out`` is the depthwise 3x3 conv's output
(before its GELU and the residual), as the official ``mlp.pos`` forward hook sees it; the official MLP's one
``act`` module runs twice per forward, so it has no single output and no entry (see
:func:`c2f_numpy.oracle.torch_dump.torch_dump` for the naming policy of modules that run more than once).

Files are ``.npz`` (never pickled) or ``.safetensors``, written atomically by :mod:`c2f_numpy.io`, with ``str ->
str`` metadata. safetensors keeps no key order, so the order is also stored in the metadata (``ORDER_KEY``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from ..io import CheckpointError, FileFormatError, load_weights, save_weights
from ..io.errors import brief, json_loads_bounded
from ..nn import Module, observe
from ..version import __version__

__all__ = [
    "FORMAT_KEY",
    "ORDER_KEY",
    "ORDER_SOURCE_KEY",
    "DumpFileError",
    "canonical_order",
    "dump",
    "dump_metadata",
    "load_dump",
    "save_dump",
]

# Metadata keys this module writes and reads; a dump written by a port may have neither.
ORDER_KEY: Final = "c2f_numpy.oracle.order"  # JSON list of the tensor names in dump order
FORMAT_KEY: Final = "c2f_numpy.oracle"  # dump format version
FORMAT_VERSION: Final = "1"
ORDER_SOURCE_KEY: Final = "c2f_numpy.oracle.order_source"  # set by load_dump: "stored", "file" or "canonical"
DUMP_SUFFIXES: Final = (".npz", ".safetensors")

Repeated = Literal["skip", "record"]


class DumpFileError(FileFormatError):
    """A dump file cannot be read or written: missing, wrong format, corrupt, truncated or empty."""


# ------------------------------------------------------------------------------------------------------------
# Recording module outputs (shared with torch_dump).


class OutputRecorder:
    """Collects ``(module name, output)`` calls and turns them into ``<name>.out`` entries in call order.

    A module that reports more than once in one forward (the official MLP's shared ``act`` GELU, the shared
    ``drop_path`` of a block) has no single output: with ``repeated="skip"`` it gets no entry, with
    ``"record"`` each call gets ``<name>.call<k>.out`` (k = 1, 2, ...) at the position of that call.
    The model itself (name ``""``) is skipped: its output is ``logits``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, np.ndarray]] = []

    def __call__(self, name: str, output: np.ndarray) -> None:
        if name:
            self.calls.append((name, np.array(output, copy=True, order="C")))  # observe may hand out views

    def tensors(self, repeated: Repeated) -> dict[str, np.ndarray]:
        if repeated not in ("skip", "record"):
            raise ValueError(f"repeated must be 'skip' or 'record', got {repeated!r}")
        counts: dict[str, int] = {}
        for name, _ in self.calls:
            counts[name] = counts.get(name, 0) + 1
        out: dict[str, np.ndarray] = {}
        seen: dict[str, int] = {}
        for name, array in self.calls:
            if counts[name] == 1:
                out[f"{name}.out"] = array
            elif repeated == "record":
                seen[name] = seen.get(name, 0) + 1
                out[f"{name}.call{seen[name]}.out"] = array
        return out

    def repeated_modules(self) -> list[str]:
        """Names of the modules that reported more than once, in order of first call."""
        counts: dict[str, int] = {}
        for name, _ in self.calls:
            counts[name] = counts.get(name, 0) + 1
        return [name for name, c in counts.items() if c > 1]


# ------------------------------------------------------------------------------------------------------------
# Dumping a c2f_numpy model.


def dump(model: Module, x: np.ndarray, dlogits: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every intermediate tensor of ``model(x)`` (and, given ``dlogits``, of its backward), as copies, in order.

    The model runs in the mode it is in: call ``model.eval()`` first for an inference dump (BatchNorm with its
    running statistics, no drop path). In train mode BatchNorm uses batch statistics *and updates its running
    statistics*, exactly as a training step would, and drop path draws masks from the model's generator.
    With ``dlogits`` the model's accumulated gradients are reset (``zero_grad``) before the backward, so the
    ``.grad`` entries are those of this pass alone (and stay in the model afterwards).
    ``x`` must already be in the model's dtype (the model raises a clear error otherwise).
    """
    recorder = OutputRecorder()
    with observe(model, recorder):
        logits = model(x)
    out: dict[str, np.ndarray] = {"input": np.array(x, copy=True, order="C")}
    out.update(recorder.tensors("record"))  # no c2f_numpy module runs twice; if one ever did, it would show
    out["logits"] = np.array(logits, copy=True, order="C")
    if dlogits is not None:
        dl = np.asarray(dlogits)
        out["dlogits"] = np.array(dl, copy=True, order="C")
        model.zero_grad()
        out["input.grad"] = np.array(model.backward(dl), copy=True, order="C")
        out.update({f"{key}.grad": g for key, g in model.grads().items()})  # grads() returns copies
    return out


def dump_metadata(
    model: Module,
    *,
    variant: str | None = None,
    seed: int | None = None,
    **extra: str,
) -> dict[str, str]:
    """The standard ``str -> str`` metadata of a dump of ``model``: variant, kernel size, dtype, seed, mode ..."""
    meta: dict[str, str] = {FORMAT_KEY: FORMAT_VERSION, "library": f"c2f_numpy {__version__}"}
    if variant is not None:
        meta["variant"] = variant
    for attr in ("kernel_size", "num_classes", "in_chans", "dims", "depths", "dtype", "backend"):
        value = getattr(model, attr, None)
        if value is not None:
            meta[attr] = str(list(value) if isinstance(value, tuple) else value)
    meta["mode"] = "train" if model.training else "eval"
    if seed is not None:
        meta["seed"] = str(seed)
    meta.update({k: str(v) for k, v in extra.items()})
    return meta


# ------------------------------------------------------------------------------------------------------------
# Forward order of official names, for files that do not carry their order.

# Rank of a named child within its parent's forward (Block: attn, drop_path, mlp; ConvMod: norm, att, v, proj;
# MLP: norm, fc1, act, pos, fc2). Numeric children (Sequential, ModuleList) rank by their index.
_CHILD_RANK: Final = {
    "attn": 0, "drop_path": 1, "mlp": 2,
    "norm": 0, "att": 1, "v": 2, "proj": 3,
    "fc1": 1, "act": 2, "pos": 3, "fc2": 4,
}  # fmt: skip
_SELF: Final = (10**9, "")  # sorts a module after all of its children (outputs: children report first)
_UNKNOWN: Final = 10**6
_CALL = re.compile(r"call(\d+)")


def _module_key(path: str) -> tuple[tuple[int, str], ...]:
    """Sort key putting official module paths in forward (post-) order: children before parent."""
    parts = path.split(".")
    key: list[tuple[int, str]] = []
    top = parts[0]
    rest = parts[1:]
    if top in ("downsample_layers", "stages") and rest and rest[0].isdigit():
        key.append((2 * int(rest[0]) + (top == "stages"), ""))
        rest = rest[1:]
    elif top == "head":
        key.append((1000, ""))
    elif top == "pred":
        key.append((1001, ""))
    else:
        key.append((_UNKNOWN, top))
    for part in rest:
        call = _CALL.fullmatch(part)
        if part.isdigit():
            key.append((int(part), ""))
        elif call:
            key.append((int(call.group(1)), "call"))
        else:
            key.append((_CHILD_RANK.get(part, _UNKNOWN), part))
    key.append(_SELF)
    return tuple(key)


def forward_key(name: str) -> tuple[tuple[int, str], ...]:
    """Sort key of a forward tensor name (``input``, ``<module>.out``, ``logits``, ``dlogits``)."""
    if name == "input":
        return ((-1, ""),)
    if name == "logits":
        return ((2 * 10**6, ""),)
    if name == "dlogits":
        return ((2 * 10**6 + 1, ""),)
    if name.endswith(".out"):
        return _module_key(name[: -len(".out")])
    return ((3 * 10**6, name),)


def canonical_order(names: list[str] | tuple[str, ...]) -> list[str]:
    """``names`` in the order a dump of the official structure has them (forward tensors, then gradients).

    Used for files that do not carry their order (a port's safetensors file, whose names come back sorted).
    Gradients follow in ``named_parameters`` order (``input.grad`` first); names outside the official scheme
    go last in each group, sorted.
    """
    forward = [n for n in names if not n.endswith(".grad")]
    grads = [n for n in names if n.endswith(".grad")]

    def grad_key(name: str) -> tuple[tuple[int, str], ...]:
        if name == "input.grad":
            return ((-1, ""),)
        parts = name[: -len(".grad")].split(".")
        # named_parameters order: pre-order over modules (downsample_layers, stages, head, pred), own parameters
        # (layer scales, weight, bias) before children.
        own = {"layer_scale_1": -4, "layer_scale_2": -3, "weight": -2, "bias": -1}
        top = {"downsample_layers": 0, "stages": 1, "head": 2, "pred": 3}
        key: list[tuple[int, str]] = [(top.get(parts[0], _UNKNOWN), parts[0])]
        for i, part in enumerate(parts[1:], start=1):
            if i == len(parts) - 1 and part in own:
                key.append((own[part], part))
            elif part.isdigit():
                key.append((int(part), ""))
            else:
                key.append((_CHILD_RANK.get(part, _UNKNOWN), part))
        return tuple(key)

    return sorted(forward, key=forward_key) + sorted(grads, key=grad_key)


# ------------------------------------------------------------------------------------------------------------
# Files.


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in DUMP_SUFFIXES:
        raise DumpFileError(
            f"{path}: a dump is a .npz or .safetensors file of named arrays, not {path.suffix or 'a suffix-less'} file"
        )


def save_dump(
    path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a dump to ``.npz`` or ``.safetensors`` atomically, its order and ``metadata`` (str -> str) with it."""
    target = Path(path)
    _check_suffix(target)
    meta = {k: v for k, v in (metadata or {}).items() if k != ORDER_SOURCE_KEY}  # describes a loaded file
    if ORDER_KEY in meta:
        raise ValueError(f"metadata key {ORDER_KEY!r} is reserved: save_dump writes the order itself")
    meta.setdefault(FORMAT_KEY, FORMAT_VERSION)
    meta[ORDER_KEY] = json.dumps(list(tensors))
    return save_weights(target, tensors, meta)


def _stored_order(meta: Mapping[str, str]) -> list[str] | None:
    text = meta.get(ORDER_KEY)
    if text is None:
        return None
    try:
        order: Any = json_loads_bounded(text, ORDER_KEY, max_depth=1)
    except ValueError:
        return None
    if not isinstance(order, list) or not all(isinstance(n, str) for n in order):
        return None
    return order


def load_dump(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a dump (or any ``.npz`` / ``.safetensors`` file of named arrays): ``(tensors, metadata)``.

    The tensors come in the file's order: the stored order when the file has one (written by
    :func:`save_dump`), the archive order of an ``.npz``, else (a safetensors file from elsewhere, whose names
    come back sorted) :func:`canonical_order`. ``metadata[ORDER_SOURCE_KEY]`` says which
    (``stored``, ``file`` or ``canonical``); the stored order list itself is not returned.
    Raises :class:`DumpFileError` with the file name and the reason for anything unreadable.
    """
    p = Path(path)
    _check_suffix(p)
    if not p.exists():
        raise DumpFileError(f"{p}: no such file")
    if p.is_dir():
        raise DumpFileError(f"{p}: is a directory, not a dump file")
    try:
        tensors, meta = load_weights(p)
    except CheckpointError as exc:  # WeightsFileError: corrupt, truncated, not an archive, pickled arrays ...
        message = str(exc)
        raise DumpFileError(message if message.startswith(str(p)) else f"{p}: {message}") from None
    except OSError as exc:
        raise DumpFileError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, EOFError, OverflowError) as exc:
        raise DumpFileError(f"{p}: corrupt or unreadable ({type(exc).__name__}: {exc})") from None
    if not tensors:
        raise DumpFileError(f"{p}: holds no arrays")
    order = _stored_order(meta)
    meta = {k: v for k, v in meta.items() if k != ORDER_KEY}
    if order is not None:
        missing = [n for n in order if n not in tensors]
        if missing:
            # The order is written with the tensors: a name in it without its array is a damaged file.
            raise DumpFileError(
                f"{p}: expected the {len(order)} tensors the dump's stored order lists, found {len(missing)} of "
                f"them missing ({brief(', '.join(missing[:5]))})"
            )
        known = list(order)
        rest = canonical_order([n for n in tensors if n not in set(known)])
        names, source = known + rest, "stored"
    elif p.suffix.lower() == ".npz":
        names, source = list(tensors), "file"
    else:
        names, source = canonical_order(list(tensors)), "canonical"
    meta[ORDER_SOURCE_KEY] = source
    return {n: tensors[n] for n in names}, meta
