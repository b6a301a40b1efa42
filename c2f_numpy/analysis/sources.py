"""Where ``c2f-inspect`` gets its model and its images from.

A model source is a file (an official ``.pth``, plain or EMA; a c2f_numpy ``.npz`` / ``.safetensors`` written by
``save_model``; a ``c2f-train`` checkpoint; bare weights in any of these formats) or a variant name, built with
random weights. Files are read by :mod:`c2f_numpy.io` (never unpickled). Images come from a data set the package
reads (its test split), a folder of image files (Pillow, the ``images`` extra) or standard normal noise.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..data import DATASETS, canonical_name, load_dataset, normalize
from ..io import load_weights
from ..models import ALL_VARIANTS, CHECKPOINT_KEY, CONFIG_KEY, Conv2Former, create_model, load_model

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".npz", ".safetensors")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Folder images are scaled to [0, 1] and normalised with ImageNet's statistics (the official models' recipe);
# one-channel models get the mean of the three.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Weights = Literal["auto", "plain", "ema"]


class SourceError(ValueError):
    """A model or image source that cannot be used (unknown name, unreadable folder, missing Pillow, ...)."""


def variant_key(name: str) -> str | None:
    """``"n"`` / ``"conv2former_n"`` -> ``"conv2former_n"``; None when it is not a variant name."""
    key = name if name in ALL_VARIANTS else f"conv2former_{name}"
    return key if key in ALL_VARIANTS else None


def infer_architecture(state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Conv2Former keyword arguments read from a state dict's keys and shapes (dims, depths, kernel size, MLP
    ratio, input channels, classes, head width, stem stride). The stem stride 4 and 2 have the same weights:
    the stride of the variant with these dims and depths is taken (4 when none matches)."""
    depths: list[int] = []
    dims: list[int] = []
    pattern = re.compile(r"stages\.(\d+)\.(\d+)\.attn\.v\.weight")
    found: dict[int, dict[int, int]] = {}
    for key, value in state.items():
        m = pattern.fullmatch(key)
        if m:
            found.setdefault(int(m.group(1)), {})[int(m.group(2))] = int(value.shape[0])
    if not found or sorted(found) != list(range(len(found))):
        raise SourceError("the weights are not a Conv2Former's: no stages.<i>.<j>.attn.v.weight keys in order")
    for i in range(len(found)):
        depths.append(len(found[i]))
        dims.append(found[i][0])
    try:
        att = state["stages.0.0.attn.att.2.weight"]
        fc1 = state["stages.0.0.mlp.fc1.weight"]
        stem_last = state["downsample_layers.0.6.weight"]
        kwargs: dict[str, Any] = {
            "dims": tuple(dims), "depths": tuple(depths), "kernel_size": int(att.shape[-1]),
            "mlp_ratio": int(fc1.shape[0]) // dims[0], "in_chans": int(state["downsample_layers.0.0.weight"].shape[1]),
            "num_classes": int(state["pred.weight"].shape[0]), "head_dim": int(state["head.0.weight"].shape[0]),
        }  # fmt: skip
    except KeyError as err:
        raise SourceError(f"the weights are not a Conv2Former's: no {err.args[0]!r}") from None
    if stem_last.shape[-1] == 1:
        kwargs["stem_stride"] = 1
    else:
        same = [v for v in ALL_VARIANTS.values() if v.dims == tuple(dims) and v.depths == tuple(depths)]
        kwargs["stem_stride"] = same[0].stem_stride if same else 4
    return kwargs


def load_source(
    source: str,
    *,
    weights: Weights = "auto",
    kernel_size: int | None = None,
    layer_scale: float | None = None,
    in_chans: int | None = None,
    seed: int = 0,
    dtype: Any = np.float32,
) -> tuple[Conv2Former, str]:
    """The model of ``source`` and a one-line description of where it came from.

    A file: its weights (``weights`` picks the plain or EMA set of a training checkpoint, torch or c2f-train);
    the architecture from the file's metadata or, for bare weights, from the keys and shapes. Otherwise a
    variant name ("n", "conv2former_t", "micro", ...): random weights from ``seed`` with ``kernel_size``,
    the layer scales ``layer_scale`` and ``in_chans`` input channels (otherwise the official init: the
    variant's kernel, layer scales 1e-6; 3 channels).
    Raises ``FileNotFoundError`` for a path that does not exist, :class:`SourceError` otherwise.
    """
    path = Path(source)
    if path.exists() or path.suffix.lower() in WEIGHT_SUFFIXES or "/" in source:
        if kernel_size is not None or layer_scale is not None or in_chans is not None:
            raise SourceError("--kernel-size, --layer-scale and --in-chans build random weights: give a variant "
                              "name, not a file")  # fmt: skip
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "No such weights file", str(path))
        return _load_file(path, weights, dtype)
    key = variant_key(source)
    if key is None:
        names = ", ".join(n.removeprefix("conv2former_") for n in ALL_VARIANTS)
        raise SourceError(
            f"{source!r} is neither a weights file ({', '.join(WEIGHT_SUFFIXES)}) nor a variant ({names})"
        )
    if weights != "auto":
        raise SourceError(f"--weights {weights} needs a checkpoint file; {source!r} is a variant with random weights")
    kw: dict[str, Any] = {"seed": seed, "dtype": dtype}
    if kernel_size is not None:
        kw["kernel_size"] = kernel_size
    if layer_scale is not None:
        kw["layer_scale_init_value"] = layer_scale
    if in_chans is not None:
        kw["in_chans"] = in_chans
    model = create_model(key, **kw)
    ls = 1e-6 if layer_scale is None else layer_scale
    return model, f"{key}, random init (seed {seed}), kernel {model.kernel_size}, layer scale {ls:g}"


def _load_file(path: Path, weights: Weights, dtype: Any) -> tuple[Conv2Former, str]:
    if path.suffix.lower() in (".npz", ".safetensors"):
        state, meta = load_weights(path)
        if CHECKPOINT_KEY in meta:  # a c2f-train checkpoint: model.* and ema.* arrays
            chosen: Literal["plain", "ema"] = "ema" if weights == "ema" else "plain"
            return load_model(path, dtype=dtype, weights=chosen), f"{path} (c2f-train checkpoint, {chosen} weights)"
        if weights == "ema":
            raise SourceError(f"{path}: --weights ema needs a training checkpoint; this file holds one set of weights")
        if CONFIG_KEY in meta:
            return load_model(path, dtype=dtype), f"{path} (c2f_numpy model)"
    else:
        state, _ = load_weights(path, weights=weights)
    model = Conv2Former(**infer_architecture(state), dtype=dtype)
    model.load_state_dict({k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in state.items()}, strict=True)
    return model, f"{path} ({weights} weights, architecture read from the keys)"


# ------------------------------------------------------------------------------------------------ images
def _resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of float images (N, C, H, W) to (N, C, *size), with scipy."""
    if images.shape[2:] == size:
        return images
    from scipy import ndimage

    factors = (1.0, 1.0, size[0] / images.shape[2], size[1] / images.shape[3])
    out = ndimage.zoom(images, factors, order=1, mode="nearest", grid_mode=True)
    return np.ascontiguousarray(out[:, :, : size[0], : size[1]], dtype=np.float32)


def _match_channels(images: np.ndarray, in_chans: int, what: str) -> np.ndarray:
    c = images.shape[1]
    if c == in_chans:
        return images
    if c == 1:
        return np.ascontiguousarray(np.repeat(images, in_chans, axis=1))
    if in_chans == 1:
        return np.ascontiguousarray(images.mean(axis=1, keepdims=True))
    raise SourceError(f"{what} has {c} channels and the model takes {in_chans}")


def _folder_images(folder: Path, n: int, size: tuple[int, int], in_chans: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise SourceError(
            f"reading the images in {folder} needs Pillow: pip install 'c2f_numpy[images]' (or use "
            "--images noise / fashion_mnist / cifar10)"
        ) from None
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SourceError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    out = []
    for p in files[:n]:
        try:
            with Image.open(p) as im:
                rgb = im.convert("RGB")
        except OSError as err:
            raise SourceError(f"{p}: not a readable image ({err})") from None
        # resize the shorter side to the size, then the central crop: every image keeps its aspect ratio
        scale = max(size[0] / rgb.height, size[1] / rgb.width)
        w, h = max(size[1], round(rgb.width * scale)), max(size[0], round(rgb.height * scale))
        rgb = rgb.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size[1]) // 2, (h - size[0]) // 2
        out.append(np.asarray(rgb.crop((left, top, left + size[1], top + size[0])), dtype=np.uint8))
    batch = np.ascontiguousarray(np.stack(out).transpose(0, 3, 1, 2))
    x = normalize(batch, IMAGENET_MEAN, IMAGENET_STD)
    return _match_channels(x, in_chans, str(folder))


def load_images(
    spec: str, n: int, size: int | None, in_chans: int, *, seed: int = 0
) -> tuple[np.ndarray | int, tuple[int, int], str]:
    """Images for an ERF: ``(images or a count of noise images, (H, W), description)``.

    ``spec``: "noise" (returns the count; the ERF draws the images from its seed), a data set name (its test
    split: ``n`` images drawn without replacement from ``seed``, normalised with the data set's statistics,
    resized bilinearly to ``size``, channels repeated or averaged to ``in_chans``) or a folder of image files.
    ``size`` None: the data set's own size, 224 for noise and folders.
    """
    if n < 1:
        raise SourceError(f"need at least one image, got -n {n}")
    folder = Path(spec)
    if spec == "noise":
        hw = (size or 224, size or 224)
        return n, hw, f"{n} standard normal images (seed {seed})"
    if folder.is_dir():
        hw = (size or 224, size or 224)
        x = _folder_images(folder, n, hw, in_chans)
        return x, hw, f"{len(x)} images from {folder}"
    try:
        name = canonical_name(spec)
    except ValueError:
        if "/" in spec or folder.suffix:
            raise FileNotFoundError(errno.ENOENT, "No such image folder", spec) from None
        raise SourceError(
            f"--images {spec!r}: expected a folder, noise or a data set ({', '.join(DATASETS)})"
        ) from None
    ds = load_dataset(name, "test")
    picked = np.sort(np.random.default_rng(seed).permutation(len(ds))[: min(n, len(ds))])
    x = normalize(ds.images[picked], ds.mean, ds.std)
    hw = (size, size) if size else (x.shape[2], x.shape[3])
    x = _match_channels(_resize(x, hw), in_chans, name)
    return x, hw, f"{len(x)} {name} test images (seed {seed})"
