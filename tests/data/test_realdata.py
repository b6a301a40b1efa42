"""Smoke test on the real Fashion-MNIST files of Debian's ``dataset-fashion-mnist`` package (marker ``realdata``).

Everything else in tests/data runs on small files the tests write; this is the one check against the real
data. Where the files are absent it is skipped with the reason shown, except under CI (``CI`` set), where it
fails: a CI that means to skip it deselects it with ``-m "not realdata"``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from c2f_numpy.data import BatchLoader, compute_mean_std, idx, load_dataset

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# MD5 of the uncompressed official files (Debian recompresses the .gz files, so their own MD5s differ).
RAW_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


@pytest.fixture(scope="module")
def system_files() -> Path:
    if not all((SYSTEM_DIR / f"{stem}.gz").is_file() for stem in RAW_MD5):
        msg = f"real Fashion-MNIST not in {SYSTEM_DIR}: apt-get install -y dataset-fashion-mnist"
        if os.environ.get("CI"):
            pytest.fail(msg + ' (or deselect with -m "not realdata")')
        pytest.skip(msg)
    return SYSTEM_DIR


@pytest.mark.realdata
def test_real_fashion_mnist(system_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert idx.FASHION_MNIST.system_dirs == (system_files,)
    for stem, md5 in RAW_MD5.items():
        with gzip.open(system_files / f"{stem}.gz", "rb") as fh:
            assert hashlib.md5(fh.read(), usedforsecurity=False).hexdigest() == md5, stem
    monkeypatch.setenv("C2F_DATA_DIR", str(tmp_path))  # an empty cache: the system directory must be used
    train = load_dataset("fashion_mnist", "train", download=False)
    test = load_dataset("fashion_mnist", "test", download=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    assert np.bincount(test.labels).tolist() == [1000] * 10
    mean, std = compute_mean_std(train.images)
    np.testing.assert_allclose(mean, train.mean, atol=5e-5)  # the documented 0.2860 / 0.3530
    np.testing.assert_allclose(std, train.std, atol=5e-5)
    x, _ = next(iter(BatchLoader(train, 256, seed=0)))
    assert x.shape == (256, 1, 28, 28) and abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2
