"""Conv2Former variants by name, ``create_model`` and ``model_stats``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..io import load_weights, save_weights
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
    ``dtype`` is given). ``weights="ema"`` takes a checkpoint's EMA weights."""
    state, meta = load_weights(path)
    if CHECKPOINT_KEY in meta:
        prefix = "ema." if weights == "ema" else "model."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"{path}: the checkpoint holds no {weights} weights")
    elif weights != "plain":
        raise ValueError(f"{path}: weights={weights!r} needs a training checkpoint; this file holds one set")
    if CONFIG_KEY not in meta:
        raise ValueError(
            f"{path}: no architecture metadata ({CONFIG_KEY!r}); it was not written by save_model. Build the "
            "variant and load the weights: create_model(name, checkpoint=path)"
        )
    config = json.loads(meta[CONFIG_KEY])
    model = Conv2Former(
        tuple(config["dims"]), tuple(config["depths"]), config["kernel_size"], config["mlp_ratio"],
        config["in_chans"], config["num_classes"], dtype=dtype or config["dtype"],
        stem_stride=config.get("stem_stride", 4), head_dim=config.get("head_dim", HEAD_DIM),
    )  # fmt: skip
    model.load_state_dict(state, strict=True)
    return model
