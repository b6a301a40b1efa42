"""CIFAR-10 and CIFAR-100 from the official **binary** archives (no pickle anywhere).

Facts from the data set's page (https://www.cs.toronto.edu/~kriz/cifar.html):

* ``cifar-10-binary.tar.gz`` (MD5 ``c32a1d4ab5d03f1284b67883e8d87530``) holds ``cifar-10-batches-bin/`` with
  ``data_batch_1.bin`` .. ``data_batch_5.bin``, ``test_batch.bin`` and ``batches.meta.txt`` (the 10 class
  names, one per line). Each ``.bin`` file is 10000 records of 1 label byte (0-9) + 3072 pixel bytes: the
  1024 red values, then green, then blue, each plane 32x32 in row-major order; so 30 730 000 bytes.
* ``cifar-100-binary.tar.gz`` (MD5 ``03b5dce01913d631647c71ecec9e9cb8``) holds ``cifar-100-binary/`` with
  ``train.bin`` (50000 records), ``test.bin`` (10000), ``fine_label_names.txt`` (100 names) and
  ``coarse_label_names.txt`` (20). Records are 2 label bytes, coarse (0-19) then fine (0-99), + 3072 pixels.

The record's pixel bytes are already channel-major, so the images come out as NCHW uint8 without a transpose.

Files live under the data directory (``data_dir``, else ``$C2F_DATA_DIR``, else ``~/.cache/c2f_numpy``):
``<root>/<archive>`` and the extracted ``<root>/<folder>/``. Already extracted files of the right sizes are
used as they are; otherwise the archive is MD5-checked (downloaded first if absent and allowed) and only the
expected members are extracted, safely (:func:`~.download.extract_members`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from .download import (
    ChecksumError,
    DataFormatError,
    DataNotFoundError,
    extract_members,
    md5_file,
    resolve_data_dir,
)
from .download import download as download_file

__all__ = ["CIFAR10", "CIFAR100", "IMAGE_BYTES", "SPECS", "CifarSpec", "load_cifar_split", "parse_records", "prepare"]

IMAGE_SHAPE: Final = (3, 32, 32)
IMAGE_BYTES: Final = 3 * 32 * 32


@dataclass(frozen=True)
class CifarSpec:
    """One CIFAR archive: where to fetch it, what it holds and how its records are laid out."""

    name: str
    url: str
    md5: str
    archive: str  # file name of the archive
    folder: str  # top-level directory inside the archive
    files: Mapping[str, tuple[tuple[str, int], ...]]  # split -> ((file in folder, number of records), ...)
    label_bytes: int  # label bytes before the 3072 pixel bytes of each record
    labels: Mapping[str, tuple[int, str, int]]  # label kind -> (byte offset in the record, names file, classes)
    default_label: str
    mean: tuple[float, ...]  # per channel (R, G, B), pixels scaled to [0, 1], train split
    std: tuple[float, ...]
    python_version: tuple[str, str, str]  # (archive, folder, MD5) of the pickle version, to recognise it

    @property
    def record_bytes(self) -> int:
        return self.label_bytes + IMAGE_BYTES

    def members(self) -> dict[str, int | None]:
        """Archive member -> expected size in bytes (``None`` for the small text files of class names)."""
        out: dict[str, int | None] = {}
        for entries in self.files.values():
            for name, records in entries:
                out[f"{self.folder}/{name}"] = records * self.record_bytes
        for _, names_file, _ in self.labels.values():
            out[f"{self.folder}/{names_file}"] = None
        return out


CIFAR10: Final = CifarSpec(
    name="cifar10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    md5="c32a1d4ab5d03f1284b67883e8d87530",
    archive="cifar-10-binary.tar.gz",
    folder="cifar-10-batches-bin",
    files={
        "train": tuple((f"data_batch_{i}.bin", 10000) for i in range(1, 6)),
        "test": (("test_batch.bin", 10000),),
    },
    label_bytes=1,
    labels={"label": (0, "batches.meta.txt", 10)},
    default_label="label",
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    python_version=("cifar-10-python.tar.gz", "cifar-10-batches-py", "c58f30108f718f92721af3b95e74349a"),
)

CIFAR100: Final = CifarSpec(
    name="cifar100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    md5="03b5dce01913d631647c71ecec9e9cb8",
    archive="cifar-100-binary.tar.gz",
    folder="cifar-100-binary",
    files={"train": (("train.bin", 50000),), "test": (("test.bin", 10000),)},
    label_bytes=2,
    labels={"coarse": (0, "coarse_label_names.txt", 20), "fine": (1, "fine_label_names.txt", 100)},
    default_label="fine",
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    python_version=("cifar-100-python.tar.gz", "cifar-100-python", "eb9058c3a382ffc7106e4002c42a8d85"),
)

SPECS: dict[str, CifarSpec] = {CIFAR10.name: CIFAR10, CIFAR100.name: CIFAR100}


def parse_records(
    data: bytes | bytearray | memoryview, label_bytes: int, expected: int, source: str = "<bytes>"
) -> tuple[np.ndarray, np.ndarray]:
    """Split fixed-size records into images (N, 3, 32, 32) uint8 (a read-only view of ``data``) and label bytes
    (N, label_bytes) uint8. ``data`` must hold exactly ``expected`` records; ``source`` names it in errors."""
    record = label_bytes + IMAGE_BYTES
    size = len(data)
    if size % record:
        raise DataFormatError(f"{source}: {size} bytes is not a whole number of {record}-byte records (truncated?)")
    if size // record != expected:
        raise DataFormatError(f"{source}: {size // record} records, expected {expected} ({expected * record} bytes)")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(expected, record)
    return rows[:, label_bytes:].reshape(expected, *IMAGE_SHAPE), rows[:, :label_bytes]


def _read_names(path: Path, count: int) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{str(path)!r}: class names are not text: {exc}") from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != count:
        raise DataFormatError(f"{str(path)!r}: {len(names)} class names, expected {count}")
    return names


def _extracted_ok(spec: CifarSpec, root: Path) -> bool:
    for member, size in spec.members().items():
        p = root / member
        if not p.is_file() or (size is not None and p.stat().st_size != size):
            return False
    return True


def prepare(
    spec: CifarSpec, data_dir: str | os.PathLike[str] | None = None, *, download: bool = True, progress: bool = True
) -> Path:
    """Make sure the extracted files of ``spec`` are under the data directory; return ``<root>/<folder>``.

    Order: extracted files already there -> the archive there (MD5-checked) -> download it (when allowed).
    Raises :class:`~.download.DataNotFoundError` (with where to put the archive by hand),
    :class:`~.download.ChecksumError`, :class:`~.download.DownloadError` or an archive error.
    """
    root = resolve_data_dir(data_dir, create=download and data_dir is None)
    if _extracted_ok(spec, root):
        return root / spec.folder
    archive = root / spec.archive
    if not archive.is_file():
        if not download:
            py_archive, py_folder, _ = spec.python_version
            hint = ""
            if (root / py_archive).exists() or (root / py_folder).exists():
                hint = f" (found the python/pickle version, {py_archive}; this loader reads the binary version only)"
            raise DataNotFoundError(
                f"{spec.name}: neither {str(root / spec.folder)!r} nor {str(archive)!r} is complete{hint} and "
                f"download=False; download {spec.url} (MD5 {spec.md5}) and put it at {str(archive)!r}"
            )
        download_file(spec.url, archive, spec.md5, progress=progress)
    else:
        got = md5_file(archive)
        if got != spec.md5:
            what = "the python/pickle version" if got == spec.python_version[2] else "corrupt or not the official file"
            raise ChecksumError(
                f"{str(archive)!r} has MD5 {got}, expected {spec.md5}: {what}. Delete it and run again to download "
                f"{spec.url}, or put the official binary archive there by hand"
            )
    extract_members(archive, spec.members(), root)
    return root / spec.folder


def load_cifar_split(
    spec: CifarSpec,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    label: str | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, 3, 32, 32) uint8, labels (N,) int64 and class names of one split.

    ``label`` picks the label kind: CIFAR-100 has ``"fine"`` (default, 100 classes) and ``"coarse"`` (20
    super-classes); CIFAR-10 has only its default. Files are validated: whole records, the official count per
    file, labels in range.
    """
    if split not in spec.files:
        raise ValueError(f"{spec.name}: unknown split {split!r}; expected one of {sorted(spec.files)}")
    kind = spec.default_label if label is None else label
    if kind not in spec.labels:
        raise ValueError(f"{spec.name}: unknown label kind {label!r}; expected one of {sorted(spec.labels)}")
    folder = prepare(spec, data_dir, download=download, progress=progress)
    offset, names_file, num_classes = spec.labels[kind]
    classes = _read_names(folder / names_file, num_classes)
    entries = spec.files[split]
    total = sum(records for _, records in entries)
    images = np.empty((total, *IMAGE_SHAPE), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    start = 0
    for name, records in entries:
        path = folder / name
        imgs, lab = parse_records(path.read_bytes(), spec.label_bytes, records, repr(str(path)))
        col = lab[:, offset]
        if records and int(col.max()) >= num_classes:
            raise DataFormatError(f"{str(path)!r}: {kind} label {int(col.max())} out of range [0, {num_classes})")
        images[start : start + records] = imgs
        labels[start : start + records] = col
        start += records
    return images, labels, classes
