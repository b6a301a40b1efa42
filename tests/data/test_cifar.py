"""CIFAR-10/100 from small archives in the exact official binary layout (a few records per file, no network)."""

from __future__ import annotations

import dataclasses
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from c2f_numpy.data import cifar, load_dataset
from c2f_numpy.data import download as dl
from c2f_numpy.data.download import ChecksumError, DataFormatError, DataNotFoundError, DownloadError
from tests.data import CIFAR10_NAMES, build_cifar_archive, md5_bytes, small_cifar_spec

RECORDS = 3  # per .bin file (the official files hold 10000 / 50000)


@pytest.fixture
def cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, Any]]:
    """An official-layout cifar-10-binary.tar.gz in a fresh data directory, registered with its MD5."""
    root = tmp_path / "data"
    root.mkdir()
    raw, expected = build_cifar_archive(root / "cifar-10-binary.tar.gz", cifar.CIFAR10, RECORDS, seed=1)
    monkeypatch.setitem(cifar.SPECS, "cifar10", small_cifar_spec(cifar.CIFAR10, RECORDS, md5_bytes(raw)))
    return root, expected


@pytest.fixture
def cifar100(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, Any]]:
    root = tmp_path / "data100"
    root.mkdir()
    raw, expected = build_cifar_archive(root / "cifar-100-binary.tar.gz", cifar.CIFAR100, RECORDS, seed=2)
    monkeypatch.setitem(cifar.SPECS, "cifar100", small_cifar_spec(cifar.CIFAR100, RECORDS, md5_bytes(raw)))
    return root, expected


def test_official_facts() -> None:
    assert cifar.CIFAR10.md5 == "c32a1d4ab5d03f1284b67883e8d87530"
    assert cifar.CIFAR100.md5 == "03b5dce01913d631647c71ecec9e9cb8"
    assert cifar.CIFAR10.url == "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    assert cifar.CIFAR100.url == "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
    m10 = cifar.CIFAR10.members()
    assert m10["cifar-10-batches-bin/data_batch_1.bin"] == 30_730_000  # the size the data set's page gives
    assert sorted(m10) == sorted(
        [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)]
        + ["cifar-10-batches-bin/test_batch.bin", "cifar-10-batches-bin/batches.meta.txt"]
    )
    m100 = cifar.CIFAR100.members()
    assert m100["cifar-100-binary/train.bin"] == 50000 * 3074
    assert m100["cifar-100-binary/test.bin"] == 10000 * 3074
    assert {"cifar-100-binary/fine_label_names.txt", "cifar-100-binary/coarse_label_names.txt"} <= set(m100)


def test_cifar10_loads_official_layout(cifar10: tuple[Path, dict[str, Any]]) -> None:
    root, expected = cifar10
    for split, n in (("train", 5 * RECORDS), ("test", RECORDS)):
        ds = load_dataset("CIFAR-10", split, data_dir=root, download=False)
        images, label_bytes = expected[split]
        assert ds.name == "cifar10" and ds.split == split and len(ds) == n
        assert ds.images.dtype == np.uint8 and ds.images.shape == (n, 3, 32, 32) and ds.images.flags.c_contiguous
        np.testing.assert_array_equal(ds.images, images)  # R, G, B planes -> channels 0, 1, 2
        assert ds.labels.dtype == np.int64
        np.testing.assert_array_equal(ds.labels, label_bytes[:, 0])
        assert ds.classes == CIFAR10_NAMES and ds.num_classes == 10
        assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2470, 0.2435, 0.2616)
    # extracted: only the expected members, in the official folder; the archive is kept
    folder = root / "cifar-10-batches-bin"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["batches.meta.txt", "test_batch.bin"] + [f"data_batch_{i}.bin" for i in range(1, 6)]
    )
    # second load uses the extracted files (works without the archive)
    (root / "cifar-10-binary.tar.gz").unlink()
    np.testing.assert_array_equal(load_dataset("cifar10", "test", root, download=False).images, expected["test"][0])


def test_cifar100_fine_and_coarse(cifar100: tuple[Path, dict[str, Any]]) -> None:
    root, expected = cifar100
    fine = load_dataset("cifar100", "train", root, download=False)
    coarse = load_dataset("cifar_100", "train", root, download=False, label="coarse")
    images, label_bytes = expected["train"]
    np.testing.assert_array_equal(fine.images, images)
    np.testing.assert_array_equal(fine.labels, label_bytes[:, 1])  # second label byte: fine
    np.testing.assert_array_equal(coarse.labels, label_bytes[:, 0])  # first label byte: coarse
    assert fine.num_classes == 100 and fine.classes[7] == "class_7" and fine.label_kind == "fine"
    assert coarse.num_classes == 20 and coarse.classes[3] == "super_3" and coarse.label_kind == "coarse"
    test = load_dataset("cifar100", "test", root, download=False)
    assert len(test) == RECORDS
    with pytest.raises(ValueError, match="unknown label kind 'medium'"):
        load_dataset("cifar100", "train", root, download=False, label="medium")
    with pytest.raises(ValueError, match="unknown label kind 'coarse'"):
        load_dataset("cifar10", "train", root, download=False, label="coarse")


def test_download_path_verifies_md5_and_extracts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    raw, expected = build_cifar_archive(mirror / "cifar-10-binary.tar.gz", cifar.CIFAR10, RECORDS)
    spec = small_cifar_spec(cifar.CIFAR10, RECORDS, md5_bytes(raw))
    spec = dataclasses.replace(spec, url=(mirror / "cifar-10-binary.tar.gz").as_uri())
    monkeypatch.setitem(cifar.SPECS, "cifar10", spec)
    monkeypatch.setenv("C2F_DATA_DIR", str(tmp_path / "cache" / "c2f"))  # default cache, created on demand
    ds = load_dataset("cifar10", "train", progress=False)
    np.testing.assert_array_equal(ds.images, expected["train"][0])
    cache = tmp_path / "cache" / "c2f"
    assert (cache / "cifar-10-binary.tar.gz").read_bytes() == raw
    assert (cache / "cifar-10-batches-bin" / "test_batch.bin").stat().st_size == RECORDS * 3073


def test_download_with_wrong_md5_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    build_cifar_archive(mirror / "cifar-10-binary.tar.gz", cifar.CIFAR10, RECORDS)
    spec = small_cifar_spec(cifar.CIFAR10, RECORDS, "0" * 32)
    spec = dataclasses.replace(spec, url=(mirror / "cifar-10-binary.tar.gz").as_uri())
    monkeypatch.setitem(cifar.SPECS, "cifar10", spec)
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(ChecksumError, match=r"expected 0{32}"):
        load_dataset("cifar10", "train", root, progress=False)
    assert list(root.iterdir()) == []


def test_download_failure_says_where_to_put_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float) -> Any:
        raise urllib.error.URLError("Network is unreachable")

    monkeypatch.setattr(dl, "_open_url", offline)
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DownloadError) as info:
        load_dataset("cifar100", "test", root, progress=False)  # the real spec: official URL and MD5
    msg = str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz" in msg and "Network is unreachable" in msg
    assert str(root / "cifar-100-binary.tar.gz") in msg and "03b5dce01913d631647c71ecec9e9cb8" in msg
    assert list(root.iterdir()) == []


def test_not_found_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"download=False; download https://www\.cs\.toronto\.edu/.*binary"):
        load_dataset("cifar10", "train", tmp_path, download=False)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"pickles")
    with pytest.raises(DataNotFoundError, match="python/pickle version"):
        load_dataset("cifar10", "train", tmp_path, download=False)


def test_placed_archive_with_wrong_md5(cifar10: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = cifar10
    spec = cifar.SPECS["cifar10"]
    monkeypatch.setitem(cifar.SPECS, "cifar10", dataclasses.replace(spec, md5="1" * 32))
    with pytest.raises(ChecksumError, match=r"expected 1{32}: corrupt or not the official file. Delete it"):
        load_dataset("cifar10", "train", root, download=False)
    # an archive that is the python version is recognised by its MD5
    archive = root / "cifar-10-binary.tar.gz"
    python_md5 = dl.md5_file(archive)
    spec = cifar.SPECS["cifar10"]
    py = (*spec.python_version[:2], python_md5)
    monkeypatch.setitem(cifar.SPECS, "cifar10", dataclasses.replace(spec, python_version=py))
    with pytest.raises(ChecksumError, match="the python/pickle version"):
        load_dataset("cifar10", "train", root, download=False)


def test_corrupt_extracted_file_is_reextracted(cifar10: tuple[Path, dict[str, Any]]) -> None:
    root, expected = cifar10
    load_dataset("cifar10", "test", root, download=False)
    bad = root / "cifar-10-batches-bin" / "test_batch.bin"
    bad.write_bytes(bad.read_bytes()[:-5])  # truncated by hand
    ds = load_dataset("cifar10", "test", root, download=False)  # sizes differ: extracted again from the archive
    np.testing.assert_array_equal(ds.images, expected["test"][0])
    assert bad.stat().st_size == RECORDS * 3073


def test_label_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw, _ = build_cifar_archive(tmp_path / "cifar-10-binary.tar.gz", cifar.CIFAR10, RECORDS, bad_label=True)
    monkeypatch.setitem(cifar.SPECS, "cifar10", small_cifar_spec(cifar.CIFAR10, RECORDS, md5_bytes(raw)))
    with pytest.raises(DataFormatError, match=r"test_batch\.bin'?: label label 10 out of range \[0, 10\)"):
        load_dataset("cifar10", "test", tmp_path, download=False)
    load_dataset("cifar10", "train", tmp_path, download=False)  # the train files are fine


def test_wrong_record_counts(cifar10: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = cifar10
    load_dataset("cifar10", "test", root, download=False)
    # the official count is 10000 per file: a complete-looking folder of small files is checked, not trusted
    spec = cifar.SPECS["cifar10"]
    monkeypatch.setitem(cifar.SPECS, "cifar10", small_cifar_spec(spec, RECORDS + 1, spec.md5))
    with pytest.raises(DataFormatError, match=f"has {RECORDS * 3073} bytes, expected {(RECORDS + 1) * 3073}"):
        load_dataset("cifar10", "test", root, download=False)


def test_parse_records_validates_size() -> None:
    rec = bytes([3]) + bytes(range(256)) * 12
    images, labels = cifar.parse_records(rec * 2, 1, 2, "x.bin")
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [[3], [3]]
    assert images[0, 0, 0, :4].tolist() == [0, 1, 2, 3] and images[0, 1, 0, 0] == 0  # 1024 red, then green
    with pytest.raises(DataFormatError, match=r"x\.bin: 6147 bytes is not a whole number of 3073-byte records"):
        cifar.parse_records(rec * 2 + b"\0", 1, 2, "x.bin")
    with pytest.raises(DataFormatError, match="2 records, expected 3"):
        cifar.parse_records(rec * 2, 1, 3, "x.bin")
    with pytest.raises(DataFormatError, match="not a whole number of 3074-byte records"):
        cifar.parse_records(rec * 2, 2, 2, "y.bin")


def test_names_file_checked(cifar10: tuple[Path, dict[str, Any]]) -> None:
    root, _ = cifar10
    load_dataset("cifar10", "test", root, download=False)
    names = root / "cifar-10-batches-bin" / "batches.meta.txt"
    names.write_text("a\nb\n")
    with pytest.raises(DataFormatError, match="2 class names, expected 10"):
        load_dataset("cifar10", "test", root, download=False)
    names.write_bytes(b"\xff\xfe" * 10)
    with pytest.raises(DataFormatError, match="class names are not text"):
        load_dataset("cifar10", "test", root, download=False)
