"""Builders of small data files in the exact official layouts (CIFAR binary archives, IDX files), for the tests.

Nothing here touches the network: the tests point the loaders at these files (and at ``file://`` URLs).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from c2f_numpy.data import cifar, idx

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def small_cifar_spec(spec: cifar.CifarSpec, records: int, md5: str) -> cifar.CifarSpec:
    """``spec`` with ``records`` records in every file (the official files hold 10000 or 50000) and ``md5``."""
    files = {split: tuple((name, records) for name, _ in entries) for split, entries in spec.files.items()}
    return dataclasses.replace(spec, files=files, md5=md5)


def cifar_record(labels: list[int], hwc: np.ndarray) -> bytes:
    """One record as the data set's page describes it: label byte(s), then the 1024 red values (row-major),
    the 1024 green, the 1024 blue. Built from an (H, W, C) image so the layout is checked, not assumed."""
    assert hwc.shape == (32, 32, 3) and hwc.dtype == np.uint8
    planes = b"".join(hwc[:, :, ch].tobytes() for ch in range(3))
    return bytes(labels) + planes


def _add_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 1243000000
    tf.addfile(info, io.BytesIO(data))


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tf.addfile(info)


def build_cifar_archive(
    path: Path, spec: cifar.CifarSpec, records: int, seed: int = 0, *, bad_label: bool = False
) -> tuple[bytes, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Write a ``.tar.gz`` in the official layout of ``spec`` with ``records`` records per ``.bin`` file.

    Returns the archive's bytes and, per split, the expected images (N, 3, 32, 32) uint8 and label bytes
    (N, label_bytes). ``bad_label`` puts an out-of-range label in the first test record.
    """
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    expected: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        _add_dir(tf, spec.folder + "/")
        if spec.label_bytes == 1:  # cifar-10-batches-bin also holds a readme.html, which is not extracted
            _add_file(tf, f"{spec.folder}/batches.meta.txt", ("\n".join(CIFAR10_NAMES) + "\n\n").encode())
            _add_file(tf, f"{spec.folder}/readme.html", b"<html>not extracted</html>")
        else:
            _add_file(tf, f"{spec.folder}/coarse_label_names.txt", "".join(f"super_{i}\n" for i in range(20)).encode())
            _add_file(tf, f"{spec.folder}/fine_label_names.txt", "".join(f"class_{i}\n" for i in range(100)).encode())
        for split in ("train", "test"):
            imgs, labs = [], []
            for name, _ in spec.files[split]:
                data = bytearray()
                for _ in range(records):
                    hwc = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                    if spec.label_bytes == 1:
                        lab = [int(rng.integers(0, 10))]
                    else:
                        lab = [int(rng.integers(0, 20)), int(rng.integers(0, 100))]
                    if bad_label and split == "test" and not data:
                        lab[-1] = 100 if spec.label_bytes == 2 else 10
                    data += cifar_record(lab, hwc)
                    imgs.append(hwc.transpose(2, 0, 1))
                    labs.append(lab)
                _add_file(tf, f"{spec.folder}/{name}", bytes(data))
            expected[split] = (np.stack(imgs), np.array(labs, dtype=np.uint8))
    raw = buf.getvalue()
    path.write_bytes(raw)
    return raw, expected


def idx_bytes(array: np.ndarray, magic_code: int = 0x08) -> bytes:
    """An IDX file built by hand (independent of ``c2f_numpy.data.write_idx``): 0, 0, type, ndim, dims, data."""
    header = bytes([0, 0, magic_code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(">u1" if magic_code == 0x08 else array.dtype.newbyteorder(">")).tobytes()


def write_mnist_like(
    directory: Path, counts: dict[str, int], *, seed: int = 0, gz: bool = True, size: int = 28
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] into ``directory``; return split -> (images
    (N, H, W) uint8, labels (N,) uint8)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in counts.items():
        images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for stem, arr in zip(idx.FILES[split], (images, labels), strict=True):
            data = idx_bytes(arr)
            name = stem + (".gz" if gz else "")
            (directory / name).write_bytes(gzip.compress(data, mtime=0) if gz else data)
        out[split] = (images, labels)
    return out


def small_idx_spec(spec: idx.IdxSpec, counts: dict[str, int], **changes: Any) -> idx.IdxSpec:
    return dataclasses.replace(spec, counts=counts, **changes)
