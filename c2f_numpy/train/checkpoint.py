"""Training checkpoints: one ``.npz`` (or ``.safetensors``) file with everything a run needs to continue.

Arrays: ``model.<key>`` (parameters and BatchNorm buffers), ``optim.<key>`` (moments, step count, lr),
``ema.<key>`` (when EMA is on). Metadata (JSON strings, never pickled):

- ``c2f_numpy.checkpoint``: format and version, the training config, the step and epoch, the loader state,
  the drop-path generator state, the partial-epoch sums, the best result so far and the metrics history;
- ``c2f_numpy.config``: the model's architecture, so :func:`c2f_numpy.models.load_model` rebuilds the model
  from a checkpoint as from a saved model.

Files are replaced atomically (temp file, fsync, rename; :mod:`c2f_numpy.io.atomic`), so a run killed while
writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import CheckpointError, WeightsFileError, load_weights, save_weights
from ..io.errors import brief, json_loads_bounded
from ..models import CHECKPOINT_KEY as META_KEY
from ..models import CONFIG_KEY as MODEL_CONFIG_KEY
from ..version import __version__

FORMAT = "c2f_numpy.train.checkpoint"
VERSION = 1
_SECTIONS = ("model", "optim", "ema")
# The training state a run needs to continue, and the JSON type of each (checked before a run reads it).
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "config": dict, "step": int, "loader": dict, "drop_path_rng": dict, "partial": dict, "best": dict,
    "history": list, "wall_seconds": (int, float),
}  # fmt: skip


class TrainCheckpointError(CheckpointError):
    """A file that is not a readable c2f_numpy training checkpoint, or one that does not fit this run."""


@dataclass
class Checkpoint:
    """The contents of a training checkpoint. ``meta`` holds the JSON-able training state."""

    model: dict[str, np.ndarray]
    optim: dict[str, np.ndarray]
    ema: dict[str, np.ndarray] | None
    meta: dict[str, Any]
    model_config: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike[str], ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically (suffix .npz or .safetensors)."""
    arrays: dict[str, np.ndarray] = {}
    for section in _SECTIONS:
        part = getattr(ckpt, section)
        for key, value in (part or {}).items():
            arrays[f"{section}.{key}"] = value
    # "arrays" records how many arrays each section holds, so a file that lost some cannot load as a shorter one.
    counts = {section: len(getattr(ckpt, section) or {}) for section in _SECTIONS}
    meta = {"format": FORMAT, "version": VERSION, "library": __version__} | ckpt.meta | {"arrays": counts}
    metadata = {META_KEY: json.dumps(meta), MODEL_CONFIG_KEY: json.dumps(ckpt.model_config)}
    return save_weights(path, arrays, metadata)


def is_checkpoint(metadata: Mapping[str, str]) -> bool:
    """True when a weights file's metadata marks it as a training checkpoint."""
    return META_KEY in metadata


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` for a missing file and :class:`TrainCheckpointError` naming the file for a
    corrupt or truncated file, a weights file that is not a training checkpoint, an unknown format version,
    training state missing or of the wrong JSON type, or fewer (or more) arrays per section than the file
    records (``meta["arrays"]``).
    """
    p = Path(path)
    try:
        arrays, metadata = load_weights(p)
    except WeightsFileError as exc:
        detail = str(exc).removeprefix(f"{p}: ")  # the weights reader names the file already
        raise TrainCheckpointError(f"{p}: not a readable checkpoint ({detail})") from exc
    if not is_checkpoint(metadata):
        raise TrainCheckpointError(
            f"{p}: a weights file, not a training checkpoint (no {META_KEY!r} metadata); to start a run from "
            "these weights, load them into the model instead of resuming"
        )
    try:
        meta = json_loads_bounded(metadata[META_KEY], META_KEY)
        model_config = json_loads_bounded(metadata.get(MODEL_CONFIG_KEY, "{}"), MODEL_CONFIG_KEY)
    except ValueError as exc:
        raise TrainCheckpointError(f"{p}: corrupt checkpoint metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrainCheckpointError(f"{p}: checkpoint metadata is not of format {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise TrainCheckpointError(
            f"{p}: checkpoint format version {brief(meta.get('version'))}; this c2f_numpy ({__version__}) reads "
            f"{VERSION}"
        )
    _check_meta(p, meta, model_config)
    sections: dict[str, dict[str, np.ndarray]] = {s: {} for s in _SECTIONS}
    for key, value in arrays.items():
        section, dot, name = key.partition(".")
        if section not in sections or not dot:
            raise TrainCheckpointError(f"{p}: unexpected array {key!r} in a checkpoint")
        sections[section][name] = value
    if not sections["model"]:
        raise TrainCheckpointError(f"{p}: checkpoint holds no model weights")
    counts = meta.get("arrays")
    if counts is not None:
        found = {section: len(sections[section]) for section in _SECTIONS}
        if not isinstance(counts, dict) or {k: counts.get(k) for k in _SECTIONS} != found:
            raise TrainCheckpointError(
                f"{p}: expected the arrays per section the checkpoint records ({brief(str(counts), 120)}), found "
                f"{found}: the file is incomplete or altered"
            )
    return Checkpoint(sections["model"], sections["optim"], sections["ema"] or None, meta, model_config)


def _check_meta(path: Path, meta: dict[str, Any], model_config: object) -> None:
    """The training state a run reads on resuming is there, with the JSON types it was written with."""
    for key, kind in _REQUIRED.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TrainCheckpointError(
                f"{path}: expected checkpoint metadata {key!r} to be a JSON {_kind_name(kind)}, found "
                f"{brief(value) if key in meta else 'no such key'}"
            )
    if not math.isfinite(meta["wall_seconds"]) or meta["step"] < 0:
        raise TrainCheckpointError(f"{path}: expected a step >= 0 and finite wall_seconds in the checkpoint")
    rngs = meta.get("worker_drop_path_rngs", [])
    if not isinstance(rngs, list) or not all(isinstance(r, dict) for r in rngs):
        raise TrainCheckpointError(f"{path}: expected 'worker_drop_path_rngs' to be a list of generator states")
    if not isinstance(model_config, dict):
        raise TrainCheckpointError(f"{path}: expected {MODEL_CONFIG_KEY!r} to be a JSON object")
    from .loop import TrainConfig  # (loop imports this module)

    try:
        TrainConfig.from_dict(meta["config"])  # what --resume rebuilds the run from
    except (TypeError, ValueError) as exc:
        detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) else type(exc).__name__
        raise TrainCheckpointError(f"{path}: the stored training config is not valid ({brief(detail, 300)})") from None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "object", list: "array", int: "integer", float: "number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
