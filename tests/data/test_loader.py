"""Dataset, load_dataset's argument checks, and the BatchLoader: order, batching, bit-exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from c2f_numpy.data import (
    Augment,
    BatchLoader,
    Dataset,
    canonical_name,
    compute_mean_std,
    load_dataset,
    normalize,
)

N, K = 23, 5


def _dataset(n: int = N, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 8, 8), dtype=np.uint8)
    labels = rng.integers(0, K, size=n).astype(np.int64)
    return Dataset("toy", "train", images, labels, [f"c{i}" for i in range(K)], (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


MIXING = Augment(crop_padding=2, hflip=True, mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=0.8)

# ---------------------------------------------------------------- Dataset and load_dataset


def test_dataset_checks_and_helpers() -> None:
    ds = _dataset()
    assert len(ds) == N and ds.num_classes == K and ds.image_shape == (3, 8, 8)
    sub = ds.subset(slice(2, 7))
    assert len(sub) == 5 and sub.images.flags.c_contiguous
    np.testing.assert_array_equal(sub.images, ds.images[2:7])
    np.testing.assert_array_equal(ds.subset([4, 1]).labels, ds.labels[[4, 1]])
    with pytest.raises(ValueError, match="uint8"):
        Dataset("x", "train", ds.images.astype(np.float32), ds.labels, ds.classes, ds.mean, ds.std)
    with pytest.raises(ValueError, match="int64"):
        Dataset("x", "train", ds.images, ds.labels.astype(np.int32), ds.classes, ds.mean, ds.std)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        Dataset("x", "train", ds.images, ds.labels, ["a", "b"], ds.mean, ds.std)
    with pytest.raises(ValueError, match="mean and std need 3"):
        Dataset("x", "train", ds.images, ds.labels, ds.classes, (0.5,), (0.5,))


def test_compute_mean_std() -> None:
    images = _dataset().images
    mean, std = compute_mean_std(images, chunk=4)
    x = images / 255.0
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3)), rtol=1e-9)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        compute_mean_std(images[0])


def test_names_and_argument_errors(tmp_path: Path) -> None:
    assert canonical_name("CIFAR-10") == "cifar10"
    assert canonical_name("cifar_100") == "cifar100"
    assert canonical_name("FashionMNIST") == canonical_name("fashion-mnist") == "fashion_mnist"
    assert canonical_name("MNIST") == "mnist"
    with pytest.raises(ValueError, match=r"unknown data set 'imagenet'; expected one of \['cifar10'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        load_dataset("mnist", "valid", tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("cifar10", "train", tmp_path / "typo", download=False)
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):
        load_dataset("fashion_mnist", "train", tmp_path / "f", download=False)
    with pytest.raises(ValueError, match="no label kinds"):
        load_dataset("mnist", "train", tmp_path, download=False, label="fine")


# ---------------------------------------------------------------- batching


def test_batches_cover_the_epoch_once() -> None:
    ds = _dataset()
    loader = BatchLoader(ds, 5, shuffle=True, seed=3)
    assert len(loader) == 5
    batches = list(loader)
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    order = loader.order(0)
    assert sorted(order.tolist()) == list(range(N)) and order.tolist() != list(range(N))
    for b, (x, y) in enumerate(batches):
        sel = order[b * 5 : (b + 1) * 5]
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape == (len(sel), 3, 8, 8)
        np.testing.assert_array_equal(x, normalize(ds.images[sel], ds.mean, ds.std))
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, ds.labels[sel])
    assert loader.epoch == 1 and loader.position == 0
    assert loader.order(1).tolist() != order.tolist()  # a new order every epoch


def test_no_shuffle_and_drop_last() -> None:
    ds = _dataset()
    loader = BatchLoader(ds, 5, shuffle=False, drop_last=True)
    ys = [y for _, y in loader]
    assert len(ys) == len(loader) == 4
    np.testing.assert_array_equal(np.concatenate(ys), ds.labels[:20])
    with pytest.raises(ValueError, match="make no batch of 30"):
        BatchLoader(ds, 30, drop_last=True)
    assert len(BatchLoader(ds, 30)) == 1


def test_seeds() -> None:
    ds = _dataset()
    a = [x.tobytes() for x, _ in BatchLoader(ds, 4, seed=1, augment=MIXING)]
    b = [x.tobytes() for x, _ in BatchLoader(ds, 4, seed=1, augment=MIXING)]
    c = [x.tobytes() for x, _ in BatchLoader(ds, 4, seed=2, augment=MIXING)]
    assert a == b and a != c


def test_argument_errors() -> None:
    ds = _dataset()
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        BatchLoader(ds, 0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        BatchLoader(ds, 4, seed=-1)
    with pytest.raises(TypeError, match="must be a Dataset"):
        BatchLoader(ds.images, 4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be an Augment"):
        BatchLoader(ds, 4, augment={"crop_padding": 4})  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        BatchLoader(ds, 4).batch(0, 6)


# ---------------------------------------------------------------- resume


def _run(loader: BatchLoader, count: int) -> list[tuple[int, bytes, bytes]]:
    """The next ``count`` batches across epochs as (epoch, x bytes, targets bytes)."""
    out: list[tuple[int, bytes, bytes]] = []
    while len(out) < count:
        for x, t in loader:
            out.append((loader.epoch, x.tobytes(), t.tobytes()))
            if len(out) == count:
                break
    return out


@pytest.mark.parametrize("augment", [None, MIXING])
@pytest.mark.parametrize("stop", [0, 1, 3, 4, 5, 6, 9])  # mid-epoch, right after an epoch's last batch, ...
def test_resume_is_bitwise(augment: Augment | None, stop: int) -> None:
    ds = _dataset()
    total = 12  # 5 batches per epoch: a bit over two epochs
    reference = _run(BatchLoader(ds, 5, seed=7, augment=augment), total)
    first = BatchLoader(ds, 5, seed=7, augment=augment)
    head = _run(first, stop) if stop else []
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON, no pickle
    resumed = BatchLoader(ds, 5, seed=0, augment=augment)  # the seed comes from the state
    resumed.load_state_dict(state)
    tail = _run(resumed, total - stop)
    assert head + tail == reference


def test_state_dict_contents_and_epoch_end() -> None:
    ds = _dataset()
    loader = BatchLoader(ds, 5, seed=4)
    it = iter(loader)
    next(it)
    next(it)
    s = loader.state_dict()
    assert (s["seed"], s["epoch"], s["position"]) == (4, 0, 2)
    assert s["format"] == "c2f_numpy.data.BatchLoader" and s["version"] == 1 and s["augment"] is None
    for _ in range(3):
        next(it)
    # the epoch's last batch was handed out: the state already points at the next epoch
    assert (loader.state_dict()["epoch"], loader.state_dict()["position"]) == (1, 0)
    # a loop that stopped right after the last batch does not produce an empty epoch
    assert len(list(loader)) == 5 and loader.epoch == 2


def test_break_and_continue_loses_no_batch() -> None:
    ds = _dataset()
    whole = [y.tobytes() for _, y in BatchLoader(ds, 5, seed=1)]
    loader = BatchLoader(ds, 5, seed=1)
    got = []
    for _, y in loader:
        got.append(y.tobytes())
        if len(got) == 2:
            break
    got += [y.tobytes() for _, y in loader]
    assert got == whole


def test_load_state_dict_refuses_other_settings() -> None:
    ds = _dataset()
    state = BatchLoader(ds, 5, seed=1, augment=MIXING).state_dict()
    cases = [
        (BatchLoader(ds, 4, augment=MIXING), "batch_size=5"),
        (BatchLoader(ds, 5, augment=None), "augment="),
        (BatchLoader(ds, 5, augment=MIXING, drop_last=True), "drop_last=False"),
        (BatchLoader(ds, 5, augment=MIXING, shuffle=False), "shuffle=True"),
        (BatchLoader(_dataset(seed=9), 5, augment=MIXING), "labels_crc32="),
        (BatchLoader(ds.subset(slice(0, 20)), 5, augment=MIXING), "num_samples=23"),
    ]
    for loader, match in cases:
        with pytest.raises(ValueError, match=match):
            loader.load_state_dict(state)
    good = BatchLoader(ds, 5, augment=MIXING)
    for bad, match in (
        ({**state, "format": "other"}, "not a BatchLoader state"),
        ({**state, "version": 99}, "unsupported version"),
        ({**state, "position": 6}, "position 6 > 5"),
        ({**state, "epoch": -1}, "epoch must be an integer >= 0"),
        ({k: v for k, v in state.items() if k != "batch_size"}, "missing 'batch_size'"),
    ):
        with pytest.raises(ValueError, match=match):
            good.load_state_dict(bad)
