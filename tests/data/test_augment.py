"""Augmentation: each op against a plain per-image reference built from the same random draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from c2f_numpy.data import Augment, cutmix, mixup, normalize, one_hot, random_crop, random_erase, random_flip
from c2f_numpy.data.augment import ERASE_AREA, ERASE_ATTEMPTS, ERASE_RATIO
from c2f_numpy.ops import cross_entropy_backward, cross_entropy_forward


def _images(n: int = 6, c: int = 3, h: int = 8, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def _crop_reference(images: np.ndarray, padding: int, oy: np.ndarray, ox: np.ndarray) -> np.ndarray:
    n, c, h, w = images.shape
    out = np.empty_like(images)
    for i in range(n):
        padded = np.zeros((c, h + 2 * padding, w + 2 * padding), images.dtype)
        padded[:, padding : padding + h, padding : padding + w] = images[i]
        out[i] = padded[:, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
    return out


@given(
    n=st.integers(1, 4),
    c=st.integers(1, 3),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    padding=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_crop_matches_reference(n: int, c: int, h: int, w: int, padding: int, seed: int) -> None:
    images = _images(n, c, h, w, seed=seed % 1000)
    out = random_crop(images, padding, np.random.default_rng(seed))
    assert out.shape == images.shape and out.dtype == images.dtype and out.flags.c_contiguous
    if padding == 0:
        np.testing.assert_array_equal(out, images)
        return
    oy, ox = np.random.default_rng(seed).integers(0, 2 * padding + 1, size=(2, n))
    np.testing.assert_array_equal(out, _crop_reference(images, padding, oy, ox))


def test_random_crop_float_and_errors() -> None:
    x = np.random.default_rng(1).standard_normal((3, 2, 5, 5)).astype(np.float32)
    before = x.copy()
    out = random_crop(x, 2, np.random.default_rng(0))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(x, before)  # input untouched
    with pytest.raises(ValueError, match="padding must be >= 0"):
        random_crop(x, -1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_crop(x[0], 1, np.random.default_rng(0))


def test_random_flip() -> None:
    images = _images()
    np.testing.assert_array_equal(random_flip(images, np.random.default_rng(0), p=0.0), images)
    np.testing.assert_array_equal(random_flip(images, np.random.default_rng(0), p=1.0), images[..., ::-1])
    out = random_flip(images, np.random.default_rng(5))
    mask = np.random.default_rng(5).random(len(images)) < 0.5
    assert 0 < mask.sum() < len(mask)  # this seed flips some, not all
    np.testing.assert_array_equal(out[mask], images[mask, :, :, ::-1])
    np.testing.assert_array_equal(out[~mask], images[~mask])
    with pytest.raises(ValueError, match="p must be in"):
        random_flip(images, np.random.default_rng(0), p=1.5)


def _erase_reference(images: np.ndarray, p: float, seed: int) -> np.ndarray:
    """Random Erasing image by image, written from the paper's description with random_erase's draws."""
    rng = np.random.default_rng(seed)
    n, c, h, w = images.shape
    erase = rng.random(n) < p
    u = rng.random((4, ERASE_ATTEMPTS, n))
    out = images.copy()
    for i in range(n):
        for a in range(ERASE_ATTEMPTS):
            area = (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * u[0, a, i]) * (h * w)
            ratio = math.exp(math.log(ERASE_RATIO) * (1.0 - 2.0 * u[1, a, i]))  # log-uniform in [0.3, 1 / 0.3]
            eh, ew = round(float(np.sqrt(area * ratio))), round(float(np.sqrt(area / ratio)))
            if 1 <= eh <= h and 1 <= ew <= w:
                if erase[i]:
                    y0, x0 = int(u[2, a, i] * (h - eh + 1)), int(u[3, a, i] * (w - ew + 1))
                    out[i, :, y0 : y0 + eh, x0 : x0 + ew] = rng.integers(0, 256, (c, eh, ew), dtype=np.uint8)
                break
    return out


@given(
    n=st.integers(1, 5),
    c=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    p=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_erase_matches_reference(n: int, c: int, h: int, w: int, p: float, seed: int) -> None:
    images = _images(n, c, h, w, seed=seed % 1000)
    before = images.copy()
    out = random_erase(images, p, np.random.default_rng(seed))
    np.testing.assert_array_equal(images, before)  # input untouched
    assert out.shape == images.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, _erase_reference(images, p, seed))
    if p == 0.0:
        np.testing.assert_array_equal(out, images)


def test_random_erase_boxes_follow_the_paper() -> None:
    # Constant images, so every changed pixel is inside the box: each erased image has one box of 2-40% of the
    # 28 x 28 image (up to rounding), about half the images are erased at p = 0.5, and the fill is uniform.
    images = np.full((4000, 1, 28, 28), 7, np.uint8)
    out = random_erase(images, 0.5, np.random.default_rng(0))
    changed = out != images
    erased = changed.reshape(len(images), -1).any(axis=1)
    assert abs(erased.mean() - 0.5) < 0.03
    rows, cols = changed.any(axis=3)[:, 0], changed.any(axis=2)[:, 0]
    box = rows.sum(axis=1) * cols.sum(axis=1)
    assert (box[erased] / 784).min() > 0.01 and (box[erased] / 784).max() < 0.45
    # E[s] = 0.21 at the first draw; redrawing the boxes that do not fit (tall or wide ones) lowers it slightly
    assert abs((box[erased] / 784).mean() - 0.21) < 0.02
    fill = out[changed]
    assert abs(fill.mean() - 127.5) < 2 and fill.min() == 0 and fill.max() == 255


def test_random_erase_errors() -> None:
    images = _images()
    with pytest.raises(ValueError, match="random_erase: images must be uint8"):
        random_erase(images.astype(np.float32), 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"random_erase: p must be in \[0, 1\], got 1.5"):
        random_erase(images, 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_erase(images[0], 0.5, np.random.default_rng(0))


def test_normalize() -> None:
    images = _images()
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    x = normalize(images, mean, std)
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape == images.shape
    ref = (images / 255.0 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    np.testing.assert_allclose(x, ref, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="must be uint8"):
        normalize(images.astype(np.float32), mean, std)
    with pytest.raises(ValueError, match="need 3 means"):
        normalize(images, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="std must be positive"):
        normalize(images, mean, (0.2, 0.0, 0.2))


def test_one_hot() -> None:
    t = one_hot(np.array([2, 0, 1]), 4)
    assert t.dtype == np.float32
    np.testing.assert_array_equal(t, np.eye(4, dtype=np.float32)[[2, 0, 1]])
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        one_hot(np.array([4]), 4)
    with pytest.raises(ValueError, match="1-d integer"):
        one_hot(np.array([0.5]), 4)


def _float_batch(n: int = 8, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, 8, 8)).astype(np.float32)
    labels = rng.integers(0, k, n)
    return x, labels, one_hot(labels, k)


def test_mixup_matches_its_draws_and_feeds_the_loss() -> None:
    x, _, t = _float_batch()
    x0, t0 = x.copy(), t.copy()
    out, soft = mixup(x, t, 0.4, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    lam = rng.beta(0.4, 0.4)
    perm = rng.permutation(len(x))
    np.testing.assert_allclose(out, lam * x + (1 - lam) * x[perm], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(soft, lam * t + (1 - lam) * t[perm], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(t, t0)
    assert out.dtype == np.float32 and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    logits = np.random.default_rng(9).standard_normal((len(x), 5)).astype(np.float32)
    loss, cache = cross_entropy_forward(logits, soft, label_smoothing=0.1)
    assert np.isfinite(loss)
    assert cross_entropy_backward(1.0, cache).shape == logits.shape


def test_cutmix_box_and_targets() -> None:
    x, _, t = _float_batch(n=8, k=5, seed=1)
    for seed in range(5):
        out, soft = cutmix(x, t, 1.0, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        rng.beta(1.0, 1.0)
        perm = rng.permutation(len(x))
        moved = [i for i in range(len(x)) if perm[i] != i]
        # the pasted box, seen in an image whose partner is another image (random floats differ everywhere)
        box = out[moved[0], 0] != x[moved[0], 0]
        area = box.mean()
        rows, cols = np.nonzero(box)
        if rows.size:  # a rectangle
            assert box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        for i in range(len(x)):
            np.testing.assert_array_equal(out[i][:, box], x[perm[i]][:, box])
            np.testing.assert_array_equal(out[i][:, ~box], x[i][:, ~box])
        np.testing.assert_allclose(soft, (1 - area) * t + area * t[perm], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)


def test_mix_errors() -> None:
    x, _, t = _float_batch()
    with pytest.raises(ValueError, match="alpha must be > 0"):
        mixup(x, t, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="floating point"):
        cutmix(x.astype(np.uint8), t, 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"targets must be \(N, K\)"):
        cutmix(x, t[:3], 1.0, np.random.default_rng(0))


def test_augment_pipeline() -> None:
    images = _images(n=8)
    labels = np.arange(8) % 4
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    kw = {"mean": mean, "std": std, "num_classes": 4}
    plain = Augment(crop_padding=2, hflip=True)
    x, y = plain(images, labels, rng=np.random.default_rng(0), **kw)
    rng = np.random.default_rng(0)
    ref = normalize(random_flip(random_crop(images, 2, rng), rng), mean, std)
    np.testing.assert_array_equal(x, ref)
    assert y.dtype == np.int64 and not plain.mixes
    erasing = Augment(crop_padding=1, hflip=True, erase_prob=0.5)
    x, _ = erasing(images, labels, rng=np.random.default_rng(2), **kw)
    rng = np.random.default_rng(2)
    ref = normalize(random_erase(random_flip(random_crop(images, 1, rng), rng), 0.5, rng), mean, std)
    np.testing.assert_array_equal(x, ref)
    mixing = Augment(crop_padding=0, hflip=False, mixup_alpha=0.2, cutmix_alpha=1.0)
    x1, y1 = mixing(images, labels, rng=np.random.default_rng(1), **kw)
    x2, y2 = mixing(images, labels, rng=np.random.default_rng(1), **kw)
    assert x1.tobytes() == x2.tobytes() and y1.tobytes() == y2.tobytes()  # seeded: bit-identical
    assert y1.shape == (8, 4) and y1.dtype == np.float32 and x1.flags.c_contiguous and x1.dtype == np.float32
    never = Augment(crop_padding=0, hflip=False, cutmix_alpha=1.0, mix_prob=0.0)
    x3, y3 = never(images, labels, rng=np.random.default_rng(0), **kw)
    np.testing.assert_array_equal(x3, normalize(images, mean, std))
    np.testing.assert_array_equal(y3, one_hot(labels, 4))
    assert Augment(**mixing.config()) == mixing
    for bad in (
        {"crop_padding": -1},
        {"mixup_alpha": -0.1},
        {"mix_prob": 2.0},
        {"switch_prob": -1.0},
        {"erase_prob": 1.5},
    ):
        with pytest.raises(ValueError, match="Augment"):
            Augment(**bad)  # type: ignore[arg-type]
