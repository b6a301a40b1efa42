"""IDX files (the MNIST format) and the two data sets shipped in it: Fashion-MNIST and MNIST.

IDX layout (big-endian): two zero bytes, a type code (0x08 unsigned byte, 0x09 signed byte, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then one int32 per dimension, then the data
in C order. So the magic number, read as a big-endian int32, is 2051 (0x00000803) for unsigned-byte images
(N, rows, cols) and 2049 (0x00000801) for unsigned-byte labels (N,). Files may be gzip-compressed or raw; the
gzip header is recognised by its bytes, not by the file name.

:func:`read_idx` checks the magic number, the dimension count and that the payload is exactly as long as the
header says (a truncated file, or one with trailing bytes, is a :class:`~.download.DataFormatError` naming the
file); it never reads more than the header announces, and checks what the header announces against the file's
size (raw) or the gzip trailer's length and a bounded ratio (gzip) before allocating anything.

Where the data sets are looked for (first complete pair of images + labels wins), see :func:`find_idx_split`:
``data_dir/<folder>``, ``data_dir`` itself (when ``data_dir`` is given) or the cache's ``<folder>`` (when not),
then the system directories (``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist``
package puts Fashion-MNIST), then a download of the official ``.gz`` files (MD5-checked) into
``<data_dir or cache>/<folder>``. Fashion-MNIST and MNIST use the same file names: keep them in separate folders.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from ..io import atomic_write
from ..io.safezip import MAX_DEFLATE_RATIO
from .download import DataFormatError, DataNotFoundError, DownloadError, resolve_data_dir
from .download import download as download_file

__all__ = [
    "FASHION_MNIST",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "MNIST",
    "SPECS",
    "IdxSpec",
    "find_idx_split",
    "load_idx_split",
    "read_idx",
    "write_idx",
]

IDX_IMAGES_MAGIC: Final = 2051
IDX_LABELS_MAGIC: Final = 2049

# type code -> big-endian dtype
_IDX_TYPES: Final[dict[int, np.dtype]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: Final = {dt.newbyteorder("="): code for code, dt in _IDX_TYPES.items()}
_MAX_PAYLOAD: Final = 1 << 34  # 16 GiB: a header announcing more is corrupt, not a data set we can hold


def _read_exact(fh: io.BufferedIOBase, n: int, path: Path, what: str) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = fh.readinto(view[got:])
        if not k:
            raise DataFormatError(f"{str(path)!r}: truncated {what}: {got} of {n} bytes")
        got += k
    return buf


def read_idx(path: str | os.PathLike[str], *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a native-endian array of the shape its header gives.

    ``magic`` (e.g. :data:`IDX_IMAGES_MAGIC`, :data:`IDX_LABELS_MAGIC`) makes any other magic number an error.
    Raises :class:`~.download.DataFormatError` naming the file for a bad magic number, a zero dimension count,
    a truncated or over-long payload or a corrupt gzip stream; ``FileNotFoundError`` when the file is absent.
    """
    p = Path(path)
    raw = open(p, "rb")  # noqa: SIM115 - closed in the finally below
    try:
        is_gzip = raw.read(2) == b"\x1f\x8b"
        file_size = os.fstat(raw.fileno()).st_size
        gzip_isize = -1
        if is_gzip and file_size >= 18:
            raw.seek(file_size - 4)
            gzip_isize = struct.unpack("<I", raw.read(4))[0]  # the trailer's length of the unpacked data
        raw.seek(0)
        fh: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw
        try:
            head = _read_exact(fh, 4, p, "header")
            found = struct.unpack(">i", head)[0]
            if head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES or head[3] == 0:
                raise DataFormatError(f"{str(p)!r} is not an IDX file: magic number {found} (0x{found:08x})")
            if magic is not None and found != magic:
                raise DataFormatError(
                    f"{str(p)!r}: magic number {found} (0x{found:08x}), expected {magic} (0x{magic:08x})"
                )
            dtype = _IDX_TYPES[head[2]]
            ndim = head[3]
            dims = struct.unpack(f">{ndim}i", _read_exact(fh, 4 * ndim, p, "header"))
            if any(d < 0 for d in dims):
                raise DataFormatError(f"{str(p)!r}: negative dimension in header {dims}")
            nbytes = math.prod(dims) * dtype.itemsize
            if nbytes > _MAX_PAYLOAD:
                raise DataFormatError(f"{str(p)!r}: header announces {nbytes} bytes of data {dims}: corrupt")
            # Checked against the file before allocating: the header alone must never decide the allocation.
            total = 4 + 4 * ndim + nbytes
            if not is_gzip and total < file_size:
                raise DataFormatError(f"{str(p)!r}: trailing bytes after the {nbytes} bytes of data the header gives")
            if not is_gzip and total > file_size:
                raise DataFormatError(
                    f"{str(p)!r}: truncated data (header says {dims}): {file_size - 4 - 4 * ndim} of {nbytes} bytes"
                )
            if is_gzip and (total > MAX_DEFLATE_RATIO * file_size or total % (1 << 32) != gzip_isize):
                # The trailer of a truncated stream is whatever bytes end up last: a length beyond the ratio.
                plausible = 0 <= gzip_isize <= MAX_DEFLATE_RATIO * file_size and total < 1 << 32
                if plausible and total > gzip_isize:
                    problem = (
                        f"truncated data (header says {dims}): {max(gzip_isize - 4 - 4 * ndim, 0)} of {nbytes} bytes"
                    )
                elif plausible:
                    problem = f"trailing bytes after the {nbytes} bytes of data the header gives"
                else:
                    problem = "corrupt or truncated gzip stream"
                raise DataFormatError(
                    f"{str(p)!r}: {problem} (the header announces {nbytes} bytes of data {dims}; the gzip stream of "
                    f"{file_size} bytes records {gzip_isize} (mod 2^32) unpacked bytes)"
                )
            buf = _read_exact(fh, nbytes, p, f"data (header says {dims})")
            if fh.read(1):
                raise DataFormatError(f"{str(p)!r}: trailing bytes after the {nbytes} bytes of data the header gives")
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise DataFormatError(f"{str(p)!r}: corrupt or truncated gzip stream: {exc}") from exc
        finally:
            if fh is not raw:
                fh.close()
    finally:
        raw.close()
    arr = np.frombuffer(buf, dtype=dtype).reshape(dims)
    return arr if dtype.itemsize == 1 and dtype.kind == "u" else arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when the name ends in ``.gz`` (used by tests and tools).

    Supported dtypes: uint8, int8, int16, int32, float32, float64; at least one dimension. Written atomically.
    """
    arr = np.asarray(array)
    code = _IDX_CODES.get(arr.dtype.newbyteorder("="))
    if code is None or arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"write_idx: cannot store dtype {arr.dtype} with {arr.ndim} dimensions")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape)
    payload = header + np.ascontiguousarray(arr, dtype=_IDX_TYPES[code]).tobytes()
    p = Path(path)
    if p.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    return atomic_write(p, lambda fh: fh.write(payload))


@dataclass(frozen=True)
class IdxSpec:
    """One data set in IDX files: where to find and fetch it and what it must contain."""

    name: str
    folder: str  # sub-directory of the data/cache directory
    base_url: str  # official location of the .gz files
    md5: Mapping[str, str]  # .gz file name -> official MD5
    counts: Mapping[str, int]  # split -> number of images
    image_size: tuple[int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, pixel values scaled to [0, 1], train split
    std: tuple[float, ...]
    system_dirs: tuple[Path, ...] = ()


# split -> (images stem, labels stem)
FILES: Final = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

FASHION_MNIST: Final = IdxSpec(
    name="fashion_mnist",
    folder="fashion-mnist",
    base_url="https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    counts={"train": 60000, "test": 10000},
    image_size=(28, 28),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    mean=(0.2860,),
    std=(0.3530,),
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
)

MNIST: Final = IdxSpec(
    name="mnist",
    folder="mnist",
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    counts={"train": 60000, "test": 10000},
    image_size=(28, 28),
    classes=tuple(str(d) for d in range(10)),
    mean=(0.1307,),
    std=(0.3081,),
)

SPECS: dict[str, IdxSpec] = {FASHION_MNIST.name: FASHION_MNIST, MNIST.name: MNIST}


def _candidates(stem: str) -> list[str]:
    alt = stem.replace("-idx", ".idx", 1)  # some mirrors name them train-images.idx3-ubyte
    return [stem, stem + ".gz", alt, alt + ".gz"]


def _find_in(directory: Path, stem: str) -> Path | None:
    for name in _candidates(stem):
        p = directory / name
        if p.is_file():
            return p
    return None


def _search_dirs(spec: IdxSpec, data_dir: str | os.PathLike[str] | None) -> tuple[Path, list[Path]]:
    root = resolve_data_dir(data_dir, create=False)
    dirs = [root / spec.folder, root] if data_dir is not None else [root / spec.folder]
    return root, dirs + list(spec.system_dirs)


def find_idx_split(
    spec: IdxSpec, split: str, data_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, Path] | None:
    """The (images, labels) files of ``split`` from the first directory holding both, or ``None``."""
    images_stem, labels_stem = FILES[split]
    for d in _search_dirs(spec, data_dir)[1]:
        images, labels = _find_in(d, images_stem), _find_in(d, labels_stem)
        if images is not None and labels is not None:
            return images, labels
    return None


def _fetch_split(spec: IdxSpec, split: str, root: Path, progress: bool) -> tuple[Path, Path]:
    target = root / spec.folder
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem in FILES[split]:
        name = stem + ".gz"
        dest = target / name
        if not dest.is_file():
            try:
                download_file(spec.base_url + name, dest, spec.md5[name], progress=progress)
            except DownloadError as exc:
                wanted = ", ".join(f"{stem}.gz (MD5 {spec.md5[stem + '.gz']})" for stem in FILES[split])
                raise DownloadError(f"{exc} The {split} split needs {wanted} in {str(target)!r}.") from exc
        paths.append(dest)
    return paths[0], paths[1]


def load_idx_split(
    spec: IdxSpec,
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N, 1, H, W) uint8, labels (N,) int64 and class names of one split; see the module docstring for
    where the files are looked for. Checks the magic numbers, that images and labels agree in number, the image
    size, the official image count and the label range."""
    if split not in FILES:
        raise ValueError(f"{spec.name}: unknown split {split!r}; expected one of {sorted(FILES)}")
    found = find_idx_split(spec, split, data_dir)
    if found is None:
        root, dirs = _search_dirs(spec, data_dir)
        names = " and ".join(f"{s}[.gz]" for s in FILES[split])
        if not download:
            raise DataNotFoundError(
                f"{spec.name} {split}: {names} not found in any of {[str(d) for d in dirs]} and download=False; "
                f"copy the files from {spec.base_url} into {str(root / spec.folder)!r}"
            )
        if data_dir is None:
            root = resolve_data_dir(None, create=True)
        found = _fetch_split(spec, split, root, progress)
    images_path, labels_path = found
    images = read_idx(images_path, magic=IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, magic=IDX_LABELS_MAGIC)
    if images.shape[1:] != spec.image_size:
        raise DataFormatError(f"{str(images_path)!r}: images of {images.shape[1:]}, expected {spec.image_size}")
    want = spec.counts[split]
    if images.shape[0] != want or labels.shape[0] != want:
        raise DataFormatError(
            f"{spec.name} {split}: {images.shape[0]} images in {str(images_path)!r} and {labels.shape[0]} labels in "
            f"{str(labels_path)!r}, expected {want} of each"
        )
    k = len(spec.classes)
    if labels.size and int(labels.max()) >= k:
        raise DataFormatError(f"{str(labels_path)!r}: label {int(labels.max())} out of range [0, {k})")
    return images[:, None, :, :], labels.astype(np.int64), list(spec.classes)
