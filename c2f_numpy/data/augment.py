"""Data augmentation on NCHW batches, in NumPy, driven by an ``np.random.Generator`` the caller passes in.

Functions (each returns a new array; inputs are never modified):

* :func:`random_crop` - pad every image with ``padding`` zeros on each side, then cut an H x W window at an
  offset drawn per image (``torchvision.transforms.RandomCrop(size, padding)``). Applied to uint8 images the
  padding is black, as torchvision does it before ``Normalize``.
* :func:`random_flip` - mirror each image left-right with probability ``p``.
* :func:`random_erase` - with probability ``p``, fill one random rectangle of each image with uniform random
  pixel values (Random Erasing, Zhong et al., AAAI 2020, arXiv 1708.04896).
* :func:`normalize` - uint8 -> float32 ``(x / 255 - mean) / std`` per channel.
* :func:`one_hot`, :func:`mixup`, :func:`cutmix` - soft targets (N, K) whose rows sum to 1, the probability
  targets ``c2f_numpy.ops.cross_entropy_forward`` takes (label smoothing is applied there, on top).
  One mixing weight per batch, partner images from a random permutation of the batch. CutMix pastes one box
  (area ``1 - lam``) at a uniform centre, clipped to the image, and sets ``lam`` from the clipped area.

:class:`Augment` chains them the way the training loader uses them: crop -> flip -> erase (on uint8) ->
normalize -> at most one of mixup / cutmix. Random numbers are drawn in that fixed order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Augment", "cutmix", "mixup", "normalize", "one_hot", "random_crop", "random_erase", "random_flip"]


def _check_images(fn: str, images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        shape = getattr(images, "shape", None)
        raise ValueError(f"{fn}: images must be an (N, C, H, W) ndarray, got {type(images).__name__} {shape}")


def one_hot(labels: np.ndarray, num_classes: int, dtype: Any = np.float32) -> np.ndarray:
    """(N,) integer labels in [0, num_classes) -> (N, num_classes) one-hot rows of ``dtype``."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"one_hot: labels must be a 1-d integer array, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"one_hot: labels must be in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    out = np.zeros((labels.shape[0], num_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def random_crop(images: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad by ``padding`` on every side and crop back to H x W at per-image offsets in [0, 2 * padding].

    Draws ``rng.integers(0, 2p + 1, size=(2, N))`` (rows then columns of the offsets). ``padding=0`` copies.
    """
    _check_images("random_crop", images)
    if padding < 0:
        raise ValueError(f"random_crop: padding must be >= 0, got {padding}")
    n, c, h, w = images.shape
    if padding == 0:
        return images.copy()
    p = padding
    padded = np.zeros((n, c, h + 2 * p, w + 2 * p), dtype=images.dtype)
    padded[:, :, p : p + h, p : p + w] = images
    oy, ox = rng.integers(0, 2 * p + 1, size=(2, n))
    # windows[i, ch, y, x] is the H x W window of image i whose top-left corner is (y, x): a view, no copy.
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
    return np.ascontiguousarray(windows[np.arange(n), :, oy, ox])  # advanced indices first: (N, C, H, W)


def random_flip(images: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror each image along W with probability ``p``; draws ``rng.random(N)``."""
    _check_images("random_flip", images)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_flip: p must be in [0, 1], got {p}")
    flip = np.asarray(rng.random(images.shape[0])) < p
    return np.where(flip[:, None, None, None], images[..., ::-1], images)


# The paper's settings (Zhong et al., section 3.1 and the CIFAR experiments): area fraction in [0.02, 0.4],
# aspect ratio in [0.3, 1 / 0.3]. The paper redraws until the box fits; a fixed number of attempts keeps the
# number of draws per batch constant, so a run is reproducible whatever the image size.
ERASE_AREA = (0.02, 0.4)
ERASE_RATIO = 0.3
ERASE_ATTEMPTS = 10


def random_erase(images: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Random Erasing on uint8 (N, C, H, W) images: with probability ``p`` an image gets one box of area
    ``s H W`` (``s ~ U[0.02, 0.4]``) and aspect ratio ``r`` (``log r`` uniform in ``[log 0.3, -log 0.3]``),
    height ``round(sqrt(s H W r))`` and width ``round(sqrt(s H W / r))``, at a uniform top-left corner, filled
    with independent uniform values in [0, 255] per pixel and channel.

    Of ``ERASE_ATTEMPTS`` candidate boxes the first that fits the image is used (none fits: not erased). Draws
    ``rng.random(N)``, then ``rng.random((4, ERASE_ATTEMPTS, N))`` (area, ratio, corner row, corner column),
    then the fill values of the erased boxes in image order.
    """
    _check_images("random_erase", images)
    if images.dtype != np.uint8:
        raise ValueError(f"random_erase: images must be uint8 (erase before normalize), got {images.dtype}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_erase: p must be in [0, 1], got {p}")
    n, c, h, w = images.shape
    erase = rng.random(n) < p
    u_area, u_ratio, u_y, u_x = rng.random((4, ERASE_ATTEMPTS, n))
    lo, hi = ERASE_AREA
    area = (lo + (hi - lo) * u_area) * (h * w)
    ratio = np.exp(math.log(ERASE_RATIO) * (1.0 - 2.0 * u_ratio))
    bh = np.rint(np.sqrt(area * ratio)).astype(np.int64)
    bw = np.rint(np.sqrt(area / ratio)).astype(np.int64)
    fits = (bh >= 1) & (bw >= 1) & (bh <= h) & (bw <= w)
    first = np.argmax(fits, axis=0)  # the first attempt that fits (0 when none does; masked below)
    erase &= fits.any(axis=0)
    out = images.copy()
    for i in np.flatnonzero(erase):
        a = first[i]
        eh, ew = int(bh[a, i]), int(bw[a, i])
        y0 = int(u_y[a, i] * (h - eh + 1))  # uniform over the h - eh + 1 rows where the box fits
        x0 = int(u_x[a, i] * (w - ew + 1))
        out[i, :, y0 : y0 + eh, x0 : x0 + ew] = rng.integers(0, 256, size=(c, eh, ew), dtype=np.uint8)
    return out


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, C, H, W) -> C-contiguous float32 ``(x / 255 - mean[c]) / std[c]``."""
    _check_images("normalize", images)
    if images.dtype != np.uint8:
        raise ValueError(f"normalize: images must be uint8, got {images.dtype}")
    c = images.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"normalize: need {c} means and stds for {c} channels, got {len(mean)} and {len(std)}")
    if any(not s > 0 for s in std):
        raise ValueError(f"normalize: std must be positive, got {tuple(std)}")
    scale = np.array([1.0 / (255.0 * s) for s in std], dtype=np.float32).reshape(1, c, 1, 1)
    shift = np.array([-m / s for m, s in zip(mean, std, strict=True)], dtype=np.float32).reshape(1, c, 1, 1)
    x = images.astype(np.float32)
    x *= scale
    x += shift
    return x


def _check_mix(fn: str, x: np.ndarray, targets: np.ndarray, alpha: float) -> None:
    _check_images(fn, x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{fn}: images must be floating point (normalise first), got {x.dtype}")
    if targets.ndim != 2 or targets.shape[0] != x.shape[0]:
        raise ValueError(f"{fn}: targets must be (N, K) with N = {x.shape[0]}, got {targets.shape}")
    if not alpha > 0:
        raise ValueError(f"{fn}: alpha must be > 0, got {alpha}")


def mixup(x: np.ndarray, targets: np.ndarray, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """MixUp (Zhang et al. 2018): ``lam ~ Beta(alpha, alpha)``, ``x' = lam x + (1 - lam) x[perm]``, and the same
    for the (N, K) soft ``targets``. Draws the Beta sample, then the permutation. Keeps the dtype of ``x``."""
    _check_mix("mixup", x, targets, alpha)
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(x.shape[0])
    a, b = x.dtype.type(lam), x.dtype.type(1.0 - lam)
    out = a * x + b * x[perm]
    ta, tb = targets.dtype.type(lam), targets.dtype.type(1.0 - lam)
    return out, ta * targets + tb * targets[perm]


def cutmix(x: np.ndarray, targets: np.ndarray, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CutMix (Yun et al. 2019): paste a box of ``x[perm]`` into every image; targets mix by the box's area.

    ``lam ~ Beta(alpha, alpha)``; box side ``sqrt(1 - lam)`` times H and W, centre uniform over the image,
    clipped at the borders; the target weight of the partner is the clipped box area / (H W). Draws the Beta
    sample, the permutation, then the centre row and column.
    """
    _check_mix("cutmix", x, targets, alpha)
    n, _, h, w = x.shape
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(n)
    cy, cx = (int(v) for v in rng.integers(0, (h, w)))
    ratio = math.sqrt(1.0 - lam)
    bh, bw = int(h * ratio), int(w * ratio)
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw // 2, w)
    out = x.copy()
    out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    pasted = (y1 - y0) * (x1 - x0) / (h * w)
    ta, tb = targets.dtype.type(1.0 - pasted), targets.dtype.type(pasted)
    return out, ta * targets + tb * targets[perm]


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation: ``crop_padding`` (0 = no crop), ``hflip`` (probability 0.5), ``erase_prob``
    (Random Erasing's probability per image, 0 = off), then, when an alpha is positive, mixup and/or cutmix
    applied to a batch with probability ``mix_prob`` (when both are on, cutmix is chosen with probability
    ``switch_prob``).

    Called on uint8 images, it returns normalised float32 images and targets: int64 labels (N,) when no mixing
    is configured, else float32 soft targets (N, K) for every batch (one-hot rows when a batch is not mixed).
    """

    crop_padding: int = 4
    hflip: bool = True
    erase_prob: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"Augment: crop_padding must be >= 0, got {self.crop_padding}")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(f"Augment: alphas must be >= 0, got {self.mixup_alpha} and {self.cutmix_alpha}")
        for field in ("erase_prob", "mix_prob", "switch_prob"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"Augment: {field} must be in [0, 1], got {getattr(self, field)}")

    @property
    def mixes(self) -> bool:
        """True when the targets are soft (N, K) arrays."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def config(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (``Augment(**cfg)`` rebuilds it)."""
        return asdict(self)

    def __call__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        num_classes: int,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, C, H, W) images and (N,) labels -> (float32 C-contiguous images, targets)."""
        x = images
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, rng)
        if self.hflip:
            x = random_flip(x, rng)
        if self.erase_prob:
            x = random_erase(x, self.erase_prob, rng)
        xf = normalize(np.ascontiguousarray(x), mean, std)
        if not self.mixes:
            return xf, np.asarray(labels, dtype=np.int64)
        t = one_hot(labels, num_classes, np.float32)
        if rng.random() >= self.mix_prob:
            return xf, t
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.random() < self.switch_prob)
        xf, t = cutmix(xf, t, self.cutmix_alpha, rng) if use_cutmix else mixup(xf, t, self.mixup_alpha, rng)
        return np.ascontiguousarray(xf), t
