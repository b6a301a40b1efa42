"""IDX files and the Fashion-MNIST / MNIST loaders, on small synthetic files (no network, no system files)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from c2f_numpy.data import Dataset, idx, load_dataset, read_idx, write_idx
from c2f_numpy.data import download as dl
from c2f_numpy.data.download import ChecksumError, DataFormatError, DataNotFoundError, DownloadError
from tests.data import idx_bytes, md5_bytes, small_idx_spec, write_mnist_like

COUNTS = {"train": 6, "test": 4}

# ---------------------------------------------------------------- the IDX format


def test_read_hand_built_images_and_labels(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">iiii", 2051, 2, 3, 4) + images.tobytes()  # magic 0x00000803, then N, rows, cols
    (tmp_path / "im").write_bytes(raw)
    (tmp_path / "im.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "lab").write_bytes(struct.pack(">ii", 2049, 3) + bytes([7, 0, 9]))
    for name in ("im", "im.gz"):
        got = read_idx(tmp_path / name, magic=idx.IDX_IMAGES_MAGIC)
        assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
        np.testing.assert_array_equal(got, images)
    assert read_idx(tmp_path / "lab", magic=idx.IDX_LABELS_MAGIC).tolist() == [7, 0, 9]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_read_round_trip(tmp_path: Path, dtype: type, suffix: str) -> None:
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    p = write_idx(tmp_path / f"a{suffix}", arr)
    got = read_idx(p)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)
    if dtype == np.int16 and not suffix:
        assert p.read_bytes()[:4] == b"\x00\x00\x0b\x03"  # type code 0x0B, 3 dimensions


def test_write_idx_rejects() -> None:
    with pytest.raises(ValueError, match="cannot store dtype int64"):
        write_idx("unused", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="0 dimensions"):
        write_idx("unused", np.uint8(3))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (struct.pack(">ii", 2049, 3) + bytes(3), "magic number 2049 .*expected 2051"),
        (struct.pack(">iiii", 2051, 2, 3, 4) + bytes(23), r"truncated data .*: 23 of 24 bytes"),
        (struct.pack(">iiii", 2051, 2, 3, 4) + bytes(25), "trailing bytes"),
        (struct.pack(">ii", 2051, 2), "truncated header: 4 of 12 bytes"),
        (b"\x00\x00", "truncated header: 2 of 4 bytes"),
        (b"GIF89a" + bytes(20), "is not an IDX file"),
        (bytes([0, 0, 0x07, 3]) + bytes(20), "is not an IDX file"),  # unknown type code
        (bytes([0, 0, 0x08, 0]) + bytes(20), "is not an IDX file"),  # no dimensions
        (struct.pack(">iiii", 2051, -1, 3, 4), "negative dimension"),
        (struct.pack(">iiii", 2051, 2**31 - 1, 2**31 - 1, 2**31 - 1), "announces .* bytes .*corrupt"),
    ],
)
def test_corrupt_files_name_the_file(tmp_path: Path, data: bytes, match: str) -> None:
    for name, payload in (("bad-idx3-ubyte", data), ("bad-idx3-ubyte.gz", gzip.compress(data))):
        p = tmp_path / name
        p.write_bytes(payload)
        with pytest.raises(DataFormatError, match=match) as info:
            read_idx(p, magic=idx.IDX_IMAGES_MAGIC)
        assert str(p) in str(info.value)


def test_corrupt_gzip(tmp_path: Path) -> None:
    good = gzip.compress(idx_bytes(np.arange(600, dtype=np.uint8).reshape(6, 10, 10) % 251))
    cases = {
        "trunc.gz": good[: len(good) // 2],
        "flipped.gz": good[:20] + bytes(b ^ 0xFF for b in good[20:40]) + good[40:],
    }
    for name, payload in cases.items():
        p = tmp_path / name
        p.write_bytes(payload)
        with pytest.raises(DataFormatError, match=f"{name}'?: (corrupt or truncated gzip|truncated)"):
            read_idx(p)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "absent")


# ---------------------------------------------------------------- Fashion-MNIST and MNIST


@pytest.fixture
def no_system_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Small counts, no real system directory, an empty default cache."""
    for name, spec in list(idx.SPECS.items()):
        monkeypatch.setitem(idx.SPECS, name, small_idx_spec(spec, COUNTS, system_dirs=()))
    monkeypatch.setenv("C2F_DATA_DIR", str(tmp_path / "cache"))


def _check(ds: Dataset, expected: tuple[np.ndarray, np.ndarray]) -> None:
    assert ds.images.dtype == np.uint8 and ds.images.ndim == 4 and ds.images.shape[1] == 1
    np.testing.assert_array_equal(ds.images[:, 0], expected[0])
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, expected[1])


@pytest.mark.usefixtures("no_system_dirs")
@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_dir(tmp_path: Path, gz: bool) -> None:
    expected = write_mnist_like(tmp_path / "d" / "fashion-mnist", COUNTS, gz=gz)
    for split in ("train", "test"):
        ds = load_dataset("fashion-mnist", split, data_dir=tmp_path / "d", download=False)
        _check(ds, expected[split])
        assert ds.name == "fashion_mnist" and ds.image_shape == (1, 28, 28)
        assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
        assert ds.mean == (0.2860,) and ds.std == (0.3530,)


@pytest.mark.usefixtures("no_system_dirs")
def test_data_dir_itself_and_alternative_names(tmp_path: Path) -> None:
    expected = write_mnist_like(tmp_path / "flat", COUNTS, seed=3, gz=False)
    ds = load_dataset("mnist", "test", tmp_path / "flat", download=False)
    _check(ds, expected["test"])
    assert ds.classes == [str(d) for d in range(10)]
    for stem in idx.FILES["test"]:  # the t10k-images.idx3-ubyte spelling of some mirrors
        (tmp_path / "flat" / stem).rename(tmp_path / "flat" / stem.replace("-idx", ".idx"))
    _check(load_dataset("mnist", "test", tmp_path / "flat", download=False), expected["test"])


def test_system_directory_used_when_data_dir_lacks_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lookup of /usr/share/datasets/fashion-mnist, exercised on files this test writes in its place."""
    system = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    expected = write_mnist_like(system, COUNTS, seed=5)  # .gz, as the Debian package ships them
    spec = small_idx_spec(idx.FASHION_MNIST, COUNTS, system_dirs=(system,))
    monkeypatch.setitem(idx.SPECS, "fashion_mnist", spec)
    monkeypatch.setenv("C2F_DATA_DIR", str(tmp_path / "empty-cache"))
    (tmp_path / "mine").mkdir()
    assert idx.find_idx_split(spec, "train", tmp_path / "mine") == (
        system / "train-images-idx3-ubyte.gz",
        system / "train-labels-idx1-ubyte.gz",
    )
    ds = load_dataset("fashion_mnist", "train", tmp_path / "mine", download=False)
    _check(ds, expected["train"])
    ds = load_dataset("fashion_mnist", "test", download=False)  # no data_dir: cache (empty), then system
    _check(ds, expected["test"])
    # the data_dir wins over the system directory
    mine = write_mnist_like(tmp_path / "mine" / "fashion-mnist", COUNTS, seed=6)
    _check(load_dataset("fashion_mnist", "test", tmp_path / "mine", download=False), mine["test"])


def test_real_system_directory_is_the_debian_path() -> None:
    assert idx.FASHION_MNIST.system_dirs == (Path("/usr/share/datasets/fashion-mnist"),)
    assert (
        idx.FASHION_MNIST.base_url
        == "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
    )
    assert idx.MNIST.base_url == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert idx.MNIST.system_dirs == ()


@pytest.mark.usefixtures("no_system_dirs")
def test_download_checks_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    expected = write_mnist_like(mirror, COUNTS, seed=7)
    md5 = {p.name: md5_bytes(p.read_bytes()) for p in mirror.iterdir()}
    spec = small_idx_spec(idx.MNIST, COUNTS, base_url=mirror.as_uri() + "/", md5=md5, system_dirs=())
    monkeypatch.setitem(idx.SPECS, "mnist", spec)
    ds = load_dataset("mnist", "train", progress=False)  # into $C2F_DATA_DIR/mnist, created on demand
    _check(ds, expected["train"])
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    # a wrong MD5 for the test split: nothing is written
    md5["t10k-images-idx3-ubyte.gz"] = "f" * 32
    monkeypatch.setitem(idx.SPECS, "mnist", small_idx_spec(spec, COUNTS, md5=md5))
    with pytest.raises(ChecksumError, match=r"expected f{32}"):
        load_dataset("mnist", "test", progress=False)
    assert not (cache / "t10k-images-idx3-ubyte.gz").exists()


@pytest.mark.usefixtures("no_system_dirs")
def test_download_failure_and_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(dl, "_open_url", offline)
    (tmp_path / "d").mkdir()
    with pytest.raises(DownloadError) as info:
        load_dataset("fashion_mnist", "train", tmp_path / "d", progress=False)
    msg = str(info.value)
    assert "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/" in msg
    assert str(tmp_path / "d" / "fashion-mnist" / "train-images-idx3-ubyte.gz") in msg
    assert "8d4fb7e6c68d591d4c3dfef9ec88bf0d" in msg
    assert "train-labels-idx1-ubyte.gz (MD5 25c81989df183df01b3e8a0aad5dffbe)" in msg  # the other file it needs
    with pytest.raises(
        DataNotFoundError, match=r"not found in any of .*'.*/d/fashion-mnist', '.*/d'\].*download=False"
    ):
        load_dataset("fashion_mnist", "train", tmp_path / "d", download=False)


@pytest.mark.usefixtures("no_system_dirs")
def test_dataset_level_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d" / "fashion-mnist"
    write_mnist_like(d, COUNTS)
    # count differs from the expected one (the official counts are 60000 / 10000)
    monkeypatch.setitem(
        idx.SPECS, "fashion_mnist", small_idx_spec(idx.FASHION_MNIST, {"train": 6, "test": 5}, system_dirs=())
    )
    with pytest.raises(DataFormatError, match=r"4 images .* and 4 labels .* expected 5 of each"):
        load_dataset("fashion_mnist", "test", tmp_path / "d", download=False)
    # labels out of range
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.array([1, 2, 10, 3, 4], np.uint8))))
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28), np.uint8))
    with pytest.raises(DataFormatError, match=r"t10k-labels-idx1-ubyte.gz'?: label 10 out of range \[0, 10\)"):
        load_dataset("fashion_mnist", "test", tmp_path / "d", download=False)
    # wrong image size; images and labels swapped
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((5, 32, 32), np.uint8))
    with pytest.raises(DataFormatError, match=r"images of \(32, 32\), expected \(28, 28\)"):
        load_dataset("fashion_mnist", "test", tmp_path / "d", download=False)
    (d / "t10k-images-idx3-ubyte.gz").rename(d / "tmp")
    (d / "t10k-labels-idx1-ubyte.gz").rename(d / "t10k-images-idx3-ubyte.gz")
    (d / "tmp").rename(d / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte\.gz'?: magic number 2049"):
        load_dataset("fashion_mnist", "test", tmp_path / "d", download=False)
