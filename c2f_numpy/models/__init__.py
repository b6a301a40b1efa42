"""Conv2Former variants by name, ``create_model`` and ``model_stats``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..io import WeightsFileError, load_weights, save_weights
from ..io.errors import brief, json_loads_bounded
from ..version import __version__
from .conv2former import HEAD_DIM, MLP, SMALL_VARIANTS, VARIANTS, Block, Conv2Former, SpatialAttention, Variant

ALL_VARIANTS = VARIANTS | SMALL_VARIANTS

__all__ = [
    "ALL_VARIANTS",
    "MLP",
    "SMALL_VARIANTS",
    "VARIANTS",
    "Block",
    "Conv2Former",
    "SpatialAttention",
    "Variant",
    "conv2former_b",
    "conv2former_b_22k",
    "conv2former_l",
    "conv2former_micro",
    "conv2former_mini",
    "conv2former_n",
    "conv2former_s",
    "conv2former_t",
    "create_model",
    "load_model",
    "model_config",
    "model_stats",
    "save_model",
]


def _build(
    name: str,
    num_classes: int = 1000,
    kernel_size: int | None = None,
    dtype: Any = np.float32,
    drop_path_rate: float = 0.0,
    in_chans: int = 3,
    **kwargs: Any,
) -> Conv2Former:
    v = ALL_VARIANTS[name]
    kwargs = {"stem_stride": v.stem_stride, "head_dim": v.head_dim} | kwargs
    return Conv2Former(
        v.dims, v.depths, kernel_size if kernel_size is not None else v.kernel_size, v.mlp_ratio, in_chans,
        num_classes, drop_path_rate, dtype=dtype, **kwargs,
    )  # fmt: skip


def conv2former_n(**kwargs: Any) -> Conv2Former:
    """Conv2Former-N: dims 64-512, depths 2-2-8-2, kernel 7 (14.99M params, 2.33G MACs at 224)."""
    return _build("conv2former_n", **kwargs)


def conv2former_t(**kwargs: Any) -> Conv2Former:
    """Conv2Former-T: dims 72-576, depths 3-3-12-3, kernel 11 (26.70M params, 4.36G MACs at 224)."""
    return _build("conv2former_t", **kwargs)


def conv2former_s(**kwargs: Any) -> Conv2Former:
    """Conv2Former-S: dims 72-576, depths 4-4-32-4, kernel 11 (50.03M params, 8.71G MACs at 224)."""
    return _build("conv2former_s", **kwargs)


def conv2former_b(**kwargs: Any) -> Conv2Former:
    """Conv2Former-B: dims 96-768, depths 4-4-34-4, kernel 11 (90.03M params, 15.89G MACs at 224)."""
    return _build("conv2former_b", **kwargs)


def conv2former_b_22k(**kwargs: Any) -> Conv2Former:
    """Conv2Former-B for ImageNet-22k: as B with kernel 7 (88.78M params, 15.56G MACs at 224)."""
    return _build("conv2former_b_22k", **kwargs)


def conv2former_l(**kwargs: Any) -> Conv2Former:
    """Conv2Former-L: dims 128-1024, depths 4-4-48-4, kernel 11 (198.89M params, 36.04G MACs at 224)."""
    return _build("conv2former_l", **kwargs)


def conv2former_micro(**kwargs: Any) -> Conv2Former:
    """Small-image Conv2Former (ours): dims 32-64-128, depths 2-2-2, kernel 7, stride-2 stem, head 256."""
    return _build("conv2former_micro", **kwargs)


def conv2former_mini(**kwargs: Any) -> Conv2Former:
    """Small-image Conv2Former (ours): dims 48-96-192, depths 2-2-2, kernel 7, stride-2 stem, head 384."""
    return _build("conv2former_mini", **kwargs)


def create_model(
    name: str,
    *,
    checkpoint: str | os.PathLike[str] | Mapping[str, np.ndarray] | None = None,
    weights: Literal["auto", "plain", "ema"] = "auto",
    **kwargs: Any,
) -> Conv2Former:
    """Build a variant by name (``"conv2former_t"``, or just ``"t"``; the small-image ``"micro"``, ``"mini"``);
    optionally load weights.

    ``checkpoint`` is a path (.pth, .npz, .safetensors) or a state dict; ``weights`` picks the plain or EMA
    weights of a torch training checkpoint. The kernel size, class count and input channels are read from
    the weights (``attn.att.2.weight``, ``pred.weight``, the stem conv) unless given, so a checkpoint of the
    older all-k=11 release loads into N as well. Loading is strict: every key must match.
    """
    key = name if name in ALL_VARIANTS else f"conv2former_{name}"
    if key not in ALL_VARIANTS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ALL_VARIANTS)}")
    if checkpoint is None:
        return _build(key, **kwargs)
    state = dict(checkpoint) if isinstance(checkpoint, Mapping) else load_weights(checkpoint, weights=weights)[0]
    att = next((v for k, v in state.items() if k.endswith("attn.att.2.weight")), None)
    if att is not None:
        kwargs.setdefault("kernel_size", int(att.shape[-1]))
    if "pred.weight" in state:
        kwargs.setdefault("num_classes", int(state["pred.weight"].shape[0]))
    if "downsample_layers.0.0.weight" in state:
        kwargs.setdefault("in_chans", int(state["downsample_layers.0.0.weight"].shape[1]))
    model = _build(key, **kwargs)
    model.load_state_dict(state, strict=True)
    return model


def model_stats(model: Conv2Former, image_size: int | tuple[int, int] = 224) -> dict[str, int]:
    """{"params": trainable parameters, "macs": conv + linear multiply-accumulates for one image}."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    _, macs = model.count_macs((1, model.in_chans, h, w))
    return {"params": model.num_parameters(), "macs": macs}


# The architecture is stored next to the weights, so a saved model rebuilds itself without its constructor call.
CONFIG_KEY = "c2f_numpy.config"
# Training checkpoints (c2f_numpy.train.checkpoint) carry this key too, their weights as model.* / ema.* arrays.
CHECKPOINT_KEY = "c2f_numpy.checkpoint"


def model_config(model: Conv2Former) -> dict[str, Any]:
    """The architecture as JSON-able data: ``Conv2Former(**model_config(m))`` builds the same network."""
    return {
        "dims": list(model.dims), "depths": list(model.depths), "kernel_size": model.kernel_size,
        "mlp_ratio": model.mlp_ratio, "in_chans": model.in_chans, "num_classes": model.num_classes,
        "dtype": model.dtype.name, "stem_stride": model.stem_stride, "head_dim": model.head_dim,
    }  # fmt: skip


def save_model(model: Conv2Former, path: str | os.PathLike[str]) -> Path:
    """Write the model's weights (.npz or .safetensors, atomically) with its architecture as metadata."""
    meta = {CONFIG_KEY: json.dumps(model_config(model)), "library": f"c2f_numpy {__version__}"}
    return save_weights(path, model.state_dict(), meta)


def load_model(
    path: str | os.PathLike[str], *, dtype: Any = None, weights: Literal["plain", "ema"] = "plain"
) -> Conv2Former:
    """Rebuild a model written by :func:`save_model` or a ``c2f-train`` checkpoint (in its saved dtype unless
    ``dtype`` is given). ``weights="ema"`` takes a checkpoint's EMA weights.

    The stored architecture is checked before anything is built (types, ranges, and that the weights in the file
    hold at least the parameters it implies, so a few edited bytes cannot make it allocate GiBs); a bad one is a
    :class:`~c2f_numpy.io.WeightsFileError` naming the file."""
    state, meta = load_weights(path)
    if CHECKPOINT_KEY in meta:
        prefix = "ema." if weights == "ema" else "model."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise WeightsFileError(f"{path}: the checkpoint holds no {weights} weights")
    elif weights != "plain":
        raise ValueError(f"{path}: weights={weights!r} needs a training checkpoint; this file holds one set")
    if CONFIG_KEY not in meta:
        raise WeightsFileError(
            f"{path}: no architecture metadata ({CONFIG_KEY!r}); it was not written by save_model. Build the "
            "variant and load the weights: create_model(name, checkpoint=path)"
        )
    try:
        config = json_loads_bounded(meta[CONFIG_KEY], CONFIG_KEY)
    except ValueError as exc:
        raise WeightsFileError(f"{path}: {exc}") from None
    _check_config(config, state, path)
    try:
        model = Conv2Former(
            tuple(config["dims"]), tuple(config["depths"]), config["kernel_size"], config["mlp_ratio"],
            config["in_chans"], config["num_classes"], dtype=dtype or config["dtype"],
            stem_stride=config.get("stem_stride", 4), head_dim=config.get("head_dim", HEAD_DIM),
        )  # fmt: skip
        model.load_state_dict(state, strict=True)
    except (ValueError, KeyError, TypeError) as exc:
        detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) else type(exc).__name__
        raise WeightsFileError(
            f"{path}: the weights do not fit the stored architecture ({brief(detail, 300)})"
        ) from exc
    return model


# Bounds of a stored architecture: far above any Conv2Former, far below what would exhaust memory on their own.
_CONFIG_INTS: dict[str, tuple[int, int]] = {
    "kernel_size": (1, 255), "mlp_ratio": (1, 64), "in_chans": (1, 4096), "num_classes": (1, 1 << 20),
    "stem_stride": (1, 4), "head_dim": (1, 1 << 16),
}  # fmt: skip


def _check_config(config: object, state: Mapping[str, np.ndarray], path: object) -> None:
    """Refuse a stored architecture of the wrong types, out of range, or larger than the file's weights."""

    def bad(what: str) -> WeightsFileError:
        return WeightsFileError(f"{path}: expected {CONFIG_KEY!r} {what}")

    if not isinstance(config, dict):
        raise bad(f"to be a JSON object, found {brief(config)}")
    for key in ("dims", "depths"):
        value = config.get(key)
        if not (isinstance(value, list) and 1 <= len(value) <= 16 and all(type(v) is int for v in value)):
            raise bad(f"{key!r} to be a list of 1-16 integers, found {brief(value)}")
    dims, depths = config["dims"], config["depths"]
    if len(dims) != len(depths) or not all(1 <= d <= 1 << 16 for d in dims) or not all(0 <= n <= 1024 for n in depths):
        raise bad(f"dims in [1, 65536] and depths in [0, 1024], as many of each, found {brief(str(dims))}, "
                  f"{brief(str(depths))}")  # fmt: skip
    for key, (low, high) in _CONFIG_INTS.items():
        value = config.get(key, 1) if key in ("stem_stride", "head_dim") else config.get(key)
        if type(value) is not int or not low <= value <= high:
            raise bad(f"{key!r} to be an integer in [{low}, {high}], found {brief(value)}")
    if config.get("dtype") not in ("float32", "float64"):
        raise bad(f"'dtype' to be 'float32' or 'float64', found {brief(config.get('dtype'))}")
    # A lower bound of the parameters the blocks need (convolutions and MLP only): load_state_dict is strict, so
    # a file whose weights hold fewer elements cannot fit, and building the network first would waste memory.
    k, r = config["kernel_size"], config["mlp_ratio"]
    needed = sum(n * (3 * d * d + d * k * k + 2 * r * d * d) for d, n in zip(dims, depths, strict=True))
    held = sum(int(v.size) for v in state.values())
    if needed > held:
        raise bad(f"to describe the weights in the file: its blocks need at least {needed} parameters, the file "
                  f"holds {held}")  # fmt: skip
