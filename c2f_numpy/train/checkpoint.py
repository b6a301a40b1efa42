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
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import CheckpointError, WeightsFileError, load_weights, save_weights
from ..models import CHECKPOINT_KEY as META_KEY
from ..models import CONFIG_KEY as MODEL_CONFIG_KEY
from ..version import __version__

FORMAT = "c2f_numpy.train.checkpoint"
VERSION = 1
_SECTIONS = ("model", "optim", "ema")


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
    meta = {"format": FORMAT, "version": VERSION, "library": __version__} | ckpt.meta
    metadata = {META_KEY: json.dumps(meta), MODEL_CONFIG_KEY: json.dumps(ckpt.model_config)}
    return save_weights(path, arrays, metadata)


def is_checkpoint(metadata: Mapping[str, str]) -> bool:
    """True when a weights file's metadata marks it as a training checkpoint."""
    return META_KEY in metadata


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` for a missing file and :class:`TrainCheckpointError` naming the file for a
    corrupt or truncated file, a weights file that is not a training checkpoint, or an unknown format version.
    """
    p = Path(path)
    try:
        arrays, metadata = load_weights(p)
    except WeightsFileError as exc:
        raise TrainCheckpointError(f"{p}: not a readable checkpoint ({exc})") from exc
    if not is_checkpoint(metadata):
        raise TrainCheckpointError(
            f"{p}: a weights file, not a training checkpoint (no {META_KEY!r} metadata); to start a run from "
            "these weights, load them into the model instead of resuming"
        )
    try:
        meta = json.loads(metadata[META_KEY])
        model_config = json.loads(metadata.get(MODEL_CONFIG_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise TrainCheckpointError(f"{p}: corrupt checkpoint metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TrainCheckpointError(f"{p}: checkpoint metadata is not of format {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise TrainCheckpointError(
            f"{p}: checkpoint format version {meta.get('version')!r}; this c2f_numpy ({__version__}) reads {VERSION}"
        )
    sections: dict[str, dict[str, np.ndarray]] = {s: {} for s in _SECTIONS}
    for key, value in arrays.items():
        section, dot, name = key.partition(".")
        if section not in sections or not dot:
            raise TrainCheckpointError(f"{p}: unexpected array {key!r} in a checkpoint")
        sections[section][name] = value
    if not sections["model"]:
        raise TrainCheckpointError(f"{p}: checkpoint holds no model weights")
    return Checkpoint(sections["model"], sections["optim"], sections["ema"] or None, meta, model_config)
