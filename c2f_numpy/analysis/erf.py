"""Effective receptive fields (Luo et al., NeurIPS 2016) and RepLKNet's area ratios (Ding et al., CVPR 2022).

The map of a model at the output of stage ``s`` (or of one block inside it), for images x (N, C, H, W):

    g(i, j) = 1/N sum_n sum_c | d (sum_c' y[n, c', h0, w0]) / d x[n, c, i, j] |

with y the chosen feature map and (h0, w0) = (h // 2, w // 2) its centre unit. It is computed with the model's
own hand-written backward: forward to the chosen output, then back from an output gradient that is 1 at the
centre of every channel and 0 elsewhere. The model runs in eval mode (BatchNorm uses its running statistics),
so the images of a batch do not interact and the map does not depend on the batch size.

RepLKNet's summary of a map: the log-scaled score A = log10(1 + g) rescaled to a maximum of 1, and for a
share t (20%, 50%, 99%) the area ratio of the smallest centred square whose A holds that share of the total.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from ..models import Conv2Former, model_config
from ..nn import Sequential

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SHARES = (0.2, 0.5, 0.99)
# Gradients of a randomly initialised network peak near 1, where log10(1 + g) is almost linear; scaling each map
# to a peak of 1e3 first makes the log compress (a pixel at a thousandth of the peak still weighs about 0.1).
LOG_PEAK = 1e3
Centre = Literal["mass", "image"]


class ERFError(ValueError):
    """An ERF that cannot be computed: a stage or block that does not exist, an image too small for it, ..."""


@dataclass(frozen=True)
class ERFResult:
    """An ERF map and how it was measured.

    ``map`` is g (H, W) in float64; ``feature_shape`` the (C, h, w) of the chosen output for one image,
    ``centre`` its centre unit (h0, w0); ``stage`` and ``block`` are 1-based (block None: the stage's output).
    """

    map: np.ndarray
    stage: int
    block: int | None
    feature_shape: tuple[int, int, int]
    centre: tuple[int, int]
    num_images: int
    dtype: str


def _check_point(model: Conv2Former, stage: int, block: int | None) -> None:
    n_stages = len(model.stages)
    if isinstance(stage, bool) or not isinstance(stage, int | np.integer) or not 1 <= stage <= n_stages:
        raise ERFError(f"effective_receptive_field: stage must be 1..{n_stages} for this model "
                       f"(depths {model.depths}), got {stage!r}")  # fmt: skip
    if block is not None:
        depth = model.depths[stage - 1]
        if isinstance(block, bool) or not isinstance(block, int | np.integer) or not 1 <= block <= depth:
            raise ERFError(f"effective_receptive_field: stage {stage} has blocks 1..{depth}, got block={block!r}")


def feature_shape(model: Conv2Former, image_shape: tuple[int, int, int], stage: int) -> tuple[int, int, int]:
    """(C, h, w) of stage ``stage``'s output (1-based) for one image of shape (C, H, W); ERFError when a
    downsampling layer on the way leaves nothing of the image."""
    _check_point(model, stage, None)
    shape: tuple[int, ...] = (1, *image_shape)
    try:
        for i in range(stage):
            shape, _ = model.downsample_layers[i].count_macs(shape)
    except ValueError as err:
        stride = model.stem_stride * 2 ** (stage - 1)
        raise ERFError(
            f"a {image_shape[1]}x{image_shape[2]} image does not survive the downsampling to stage {stage} "
            f"(stride {stride}): the map would be empty; a multiple of {stride} always works ({err})"
        ) from None
    return int(shape[1]), int(shape[2]), int(shape[3])


def _path(model: Conv2Former, stage: int, block: int | None) -> list[Any]:
    """The modules from the image to the chosen output, in forward order."""
    path: list[Any] = []
    for i in range(stage):
        path.append(model.downsample_layers[i])
        blocks = list(cast(Sequential, model.stages[i]))
        path.extend(blocks if i < stage - 1 or block is None else blocks[:block])
    return path


def centre_gradient(model: Conv2Former, x: np.ndarray, stage: int, block: int | None = None) -> np.ndarray:
    """d(sum over channels of the centre unit of the chosen output) / d x, for images x (N, C, H, W) -> (N, C, H, W).

    ``stage`` 1-based; ``block`` 1-based within the stage, None for the stage's output (its last block). The
    parameter gradients accumulate into the model as a by-product (the caller zeroes them).
    """
    _check_point(model, stage, block)
    channels_last = model.layout == "NHWC"  # the fast backend works channels-last inside
    h = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if channels_last else x
    path = _path(model, stage, block)
    for module in path:
        h = module(h)
    d = np.zeros_like(h)
    if channels_last:
        d[:, h.shape[1] // 2, h.shape[2] // 2, :] = 1.0
    else:
        d[:, :, h.shape[2] // 2, h.shape[3] // 2] = 1.0
    for module in reversed(path):
        d = module.backward(d)
    return np.ascontiguousarray(d.transpose(0, 3, 1, 2)) if channels_last else d


def noise_images(n: int, shape: tuple[int, int, int], seed: int, start: int = 0, dtype: Any = np.float32) -> np.ndarray:
    """Standard normal images ``start .. start + n - 1`` of a seeded sequence, (n, *shape); image i is drawn from
    its own generator ``default_rng([seed, i])``, so a batch holds the same images whatever the batch size."""
    return np.stack([np.random.default_rng([seed, i]).standard_normal(shape) for i in range(start, start + n)]).astype(
        dtype, copy=False
    )


def _in_dtype(model: Conv2Former, dtype: Any) -> Conv2Former:
    dtype = np.dtype(model.dtype if dtype is None else dtype)
    if dtype == model.dtype:
        return model
    if dtype not in (np.float32, np.float64):
        raise ERFError(f"effective_receptive_field: dtype must be float32 or float64, got {dtype}")
    copy = Conv2Former(**(model_config(model) | {"dtype": dtype.name}), backend=model.backend)
    copy.load_state_dict({k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in model.state_dict().items()})
    return copy


def effective_receptive_field(
    model: Conv2Former,
    images: np.ndarray | int,
    *,
    stage: int,
    block: int | None = None,
    size: int | tuple[int, int] | None = None,
    dtype: Any = None,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> ERFResult:
    """The ERF map g (H, W) of ``model`` at the centre unit of stage ``stage`` (1-based) or of block ``block``.

    ``images``: an array (N, C, H, W) (normalised as the model expects), or a count N of standard normal images
    of ``size`` (an int or (H, W); required then) drawn from ``seed`` (see :func:`noise_images`).
    ``dtype``: float32 or float64 (None: the model's); a model of another dtype is copied into it. Batches of
    ``batch_size`` images; ``progress`` shows a tqdm bar. The model runs in eval mode and is left in its own
    mode; its parameter gradients (a by-product) are zeroed.
    Raises :class:`ERFError` for a stage or block that does not exist, an image that does not survive the
    downsampling to the stage, or images of the wrong shape.
    """
    work = _in_dtype(model, dtype)
    _check_point(work, stage, block)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ERFError(f"effective_receptive_field: batch_size must be a positive int, got {batch_size!r}")
    if isinstance(images, int | np.integer) and not isinstance(images, bool):
        if images < 1:
            raise ERFError(f"effective_receptive_field: need at least one image, got {images}")
        if size is None:
            raise ERFError("effective_receptive_field: give size= with a number of random images")
        hw = (size, size) if isinstance(size, int) else tuple(size)
        shape = (work.in_chans, int(hw[0]), int(hw[1]))
        count = int(images)
    elif isinstance(images, np.ndarray):
        if images.dtype.kind != "f":
            raise ERFError(f"effective_receptive_field: images must be floating point (normalised as the model "
                           f"expects), got {images.dtype}")  # fmt: skip
        if images.ndim != 4 or images.shape[0] < 1 or images.shape[1] != work.in_chans:
            raise ERFError(f"effective_receptive_field: images must be (N >= 1, {work.in_chans}, H, W), got "
                           f"{images.shape}")  # fmt: skip
        if size is not None and tuple(images.shape[2:]) != ((size, size) if isinstance(size, int) else tuple(size)):
            raise ERFError(f"effective_receptive_field: size={size} but the images are {images.shape[2:]}")
        shape = (int(images.shape[1]), int(images.shape[2]), int(images.shape[3]))
        count = int(images.shape[0])
    else:
        raise ERFError(f"effective_receptive_field: images must be an array or a count, got {type(images).__name__}")
    fshape = feature_shape(work, shape, stage)  # a block keeps its stage's shape

    was_training = work.training
    work.eval()
    total = np.zeros(shape[1:])
    starts = range(0, count, batch_size)
    bar = importlib.import_module("tqdm").tqdm(  # via importlib: tqdm ships no type information
        total=count, desc=f"ERF stage {stage}" + (f" block {block}" if block else ""), unit="img",
        disable=not progress, leave=False,
    )  # fmt: skip
    try:
        for start in starts:
            n = min(batch_size, count - start)
            if isinstance(images, np.ndarray):
                x = np.ascontiguousarray(images[start : start + n], dtype=work.dtype)
            else:
                x = noise_images(n, shape, seed, start, work.dtype)
            work.zero_grad()  # the parameter gradients are a by-product here
            total += np.abs(centre_gradient(work, x, stage, block)).sum(axis=(0, 1), dtype=np.float64)
            bar.update(n)
    finally:
        bar.close()
        work.zero_grad()
        work.train(was_training)
    return ERFResult(total / count, stage, block, fshape, (fshape[1] // 2, fshape[2] // 2), count, work.dtype.name)


# ------------------------------------------------------------------------------------------------ summaries
def _check_map(fn: str, g: np.ndarray) -> np.ndarray:
    g = np.asarray(g, dtype=np.float64)
    if g.ndim != 2 or g.size == 0:
        raise ERFError(f"{fn}: expected a non-empty (H, W) map, got shape {g.shape}")
    if not np.all(np.isfinite(g)) or g.min() < 0 or g.max() <= 0:
        raise ERFError(f"{fn}: the map must be finite, non-negative and not all zero")
    return g


def log_score(g: np.ndarray, peak: float | None = LOG_PEAK) -> np.ndarray:
    """RepLKNet's score A = log10(1 + g) / max, for g first scaled to a maximum of ``peak``
    (A = log10(1 + peak g / max g) / log10(1 + peak)); ``peak=None`` takes g as it is."""
    g = _check_map("log_score", g)
    a = np.log10(1.0 + (g if peak is None else peak * g / g.max()))
    return a / a.max()


def centre_of_mass(g: np.ndarray) -> tuple[int, int]:
    """The map's centre of mass, rounded to the nearest pixel (row, column)."""
    g = _check_map("centre_of_mass", g)
    rows, cols = np.indices(g.shape)
    return round(float((g * rows).sum() / g.sum())), round(float((g * cols).sum() / g.sum()))


def area_ratios(
    g: np.ndarray,
    shares: Sequence[float] = SHARES,
    *,
    score: Literal["log", "linear"] = "log",
    peak: float | None = LOG_PEAK,
    centre: Centre = "mass",
) -> list[float]:
    """RepLKNet's high-contribution area ratios of a map g (H, W): for each share t, the area of the smallest
    square (odd side 2r + 1, clipped at the borders) centred on ``centre`` whose score holds the share t of the
    score's total, divided by H W.

    ``score``: "log" (:func:`log_score` with ``peak``) or "linear" (g itself); ``centre``: "mass" (g's centre of
    mass: the centre unit of a stride-16 map is not at the image's centre) or "image" ((H // 2, W // 2), as
    RepLKNet). A delta gives 1 / (H W) for every share.
    """
    g = _check_map("area_ratios", g)
    if any(not 0.0 < t <= 1.0 for t in shares):
        raise ERFError(f"area_ratios: shares must be in (0, 1], got {list(shares)}")
    if score not in ("log", "linear"):
        raise ERFError(f"area_ratios: score must be 'log' or 'linear', got {score!r}")
    if centre not in ("mass", "image"):
        raise ERFError(f"area_ratios: centre must be 'mass' or 'image', got {centre!r}")
    a = log_score(g, peak) if score == "log" else g / g.max()
    cy, cx = centre_of_mass(g) if centre == "mass" else (g.shape[0] // 2, g.shape[1] // 2)
    # the share held by each square, r = 0, 1, ...: the last one covers the whole map, so every share is reached
    held = [a[max(cy - r, 0) : cy + r + 1, max(cx - r, 0) : cx + r + 1] for r in range(max(g.shape))]
    total = a.sum()
    return [next(s.size / a.size for s in held if s.sum() >= t * total) for t in shares]


def erf_summary(g: np.ndarray, shares: Sequence[float] = SHARES, peak: float = LOG_PEAK) -> dict[str, Any]:
    """The numbers of a map, JSON-able: area ratios of the log score with ``peak`` (the default summary), of
    RepLKNet's unscaled log10(1 + g) and of g itself, the peak, the centre of mass."""
    g = _check_map("erf_summary", g)
    return {
        "shares": list(shares),
        "log_peak": peak,
        "area_ratio": area_ratios(g, shares, peak=peak),
        "area_ratio_unscaled_log": area_ratios(g, shares, peak=None),
        "area_ratio_linear": area_ratios(g, shares, score="linear"),
        "map_max": float(g.max()),
        "map_sum": float(g.sum()),
        "centre_of_mass": list(centre_of_mass(g)),
        "map_shape": list(g.shape),
    }


def ratio_table(rows: Sequence[tuple[str, np.ndarray]], shares: Sequence[float] = SHARES, width: int = 22) -> str:
    """A text table of area ratios, one row per (label, map): log score (peak 1e3) and g itself."""
    head = " ".join(f"{s:>7.0%}" for s in shares)
    lines = [
        f"{'':<{width}} {'A = log-scaled map':^{8 * len(shares) - 1}}   {'g itself (no log)':^{8 * len(shares) - 1}}",
        f"{'':<{width}} {head}   {head}",
    ]
    for label, g in rows:
        log_part = " ".join(f"{t:>7.3f}" for t in area_ratios(g, shares))
        lin_part = " ".join(f"{t:>7.3f}" for t in area_ratios(g, shares, score="linear"))
        lines.append(f"{label:<{width}} {log_part}   {lin_part}")
    return "\n".join(lines)


def erf_figure(g: np.ndarray, title: str = "", shares: Sequence[float] = SHARES) -> Figure:
    """A heat map of :func:`log_score` (max 1) with the area ratios in the title and a colour bar (a matplotlib
    Figure drawn with Agg, independent of pyplot's backend)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 4.2), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(log_score(g), cmap="viridis", vmin=0, vmax=1)
    ratios = ", ".join(f"t({s:.0%}) = {t:.3f}" for s, t in zip(shares, area_ratios(g, shares), strict=True))
    ax.set_title(f"{title}\n{ratios}" if title else ratios, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8, label="A (log-scaled, max 1)")
    return fig
