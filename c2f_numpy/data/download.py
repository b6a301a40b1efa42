"""Getting data files onto the disk: the cache directory, downloads with a progress bar, MD5, safe tar extraction.

* :func:`default_data_dir` is ``$C2F_DATA_DIR`` when set, else ``~/.cache/c2f_numpy``.
* :func:`download` streams a URL into a temporary file next to the destination (with a tqdm progress bar),
  checks its MD5 and only then renames it into place (:func:`c2f_numpy.io.atomic_open`): an interrupted or
  corrupt download never leaves a file under the final name. A network failure is a :class:`DownloadError`
  that says which file to fetch by hand and where to put it.
* :func:`extract_members` takes a fixed list of members out of a tar archive and nothing else. It refuses the
  whole archive if any member has an absolute name, a ``..`` component, or is a link, a device or a FIFO, and
  requires each wanted member to be a regular file of the expected size (so a crafted archive can neither
  write outside the target directory nor fill the disk). Each file is written atomically.

Every error raised here derives from :class:`DataError`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import posixpath
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final

from ..io import FileFormatError, atomic_open
from .tarwalk import TarStream, walk

__all__ = [
    "ChecksumError",
    "DataError",
    "DataFormatError",
    "DataNotFoundError",
    "DownloadError",
    "UnsafeArchiveError",
    "default_data_dir",
    "download",
    "extract_members",
    "md5_file",
    "resolve_data_dir",
]

_CHUNK: Final = 1 << 20
_TIMEOUT_S: Final = 60.0


class DataError(Exception):
    """Base class of every error raised by :mod:`c2f_numpy.data`."""


class DataFormatError(DataError, FileFormatError):
    """A data file is truncated, corrupt or not in the expected format; the message names the file."""


class DataNotFoundError(DataError):
    """The files of a data set are in none of the places looked at and could not (or may not) be downloaded."""


class DownloadError(DataError):
    """A download failed; the message says where to put the file by hand."""


class ChecksumError(DataError):
    """A file's MD5 differs from the official one."""


class UnsafeArchiveError(DataError):
    """An archive holds a member that could write outside the target directory or is not a regular file."""


def default_data_dir() -> Path:
    """``$C2F_DATA_DIR`` when set and non-empty, else ``~/.cache/c2f_numpy`` (neither is created here)."""
    env = os.environ.get("C2F_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "c2f_numpy"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None, *, create: bool) -> Path:
    """The directory to read and download into.

    ``None`` means :func:`default_data_dir`, created (with its parents) when ``create`` is true. A directory the
    caller names explicitly must already exist: a typo should be an error, not a fresh empty cache.
    Raises ``FileNotFoundError`` / ``NotADirectoryError`` naming the path.
    """
    if data_dir is None:
        root = default_data_dir()
        if create:
            root.mkdir(parents=True, exist_ok=True)
        elif root.exists() and not root.is_dir():
            raise NotADirectoryError(
                f"data directory {str(root)!r} (from $C2F_DATA_DIR or the default) is not a directory"
            )
        return root
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data directory {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"data directory {str(root)!r} is not a directory")
    return root


def md5_file(path: str | os.PathLike[str]) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _open_url(url: str, timeout: float) -> Any:
    """Open ``url`` for reading (a seam for tests). Returns a response with ``read`` and ``headers``."""
    request = urllib.request.Request(url, headers={"User-Agent": "c2f_numpy"})
    return urllib.request.urlopen(request, timeout=timeout)


def _progress_bar(total: int | None, desc: str, enabled: bool) -> Any:
    # tqdm ships no type information; importing it through importlib keeps mypy quiet with or without stubs.
    tqdm = importlib.import_module("tqdm").tqdm
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled)


class _TransferError(Exception):
    """A failure on the network side of a download (wrapped into :class:`DownloadError` by the caller)."""


def _copy_with_md5(src: Any, dst: BinaryIO, total: int | None, desc: str, progress: bool) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    done = 0
    with _progress_bar(total, desc, progress) as bar:
        while True:
            try:
                chunk = src.read(_CHUNK)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise _TransferError(str(exc)) from exc
            if not chunk:
                break
            digest.update(chunk)
            dst.write(chunk)
            done += len(chunk)
            bar.update(len(chunk))
    if total is not None and done != total:
        raise _TransferError(f"connection closed after {done} of {total} bytes")
    return digest.hexdigest()


def download(url: str, dest: str | os.PathLike[str], md5: str | None, *, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (its directory must exist) and check the MD5 before the file appears.

    Raises :class:`DownloadError` when the transfer fails (the message names the URL and the path to copy the
    file to by hand) and :class:`ChecksumError` when the bytes do not match ``md5``; in both cases ``dest`` is
    left as it was.
    """
    target = Path(dest)
    by_hand = (
        f"Without network access, download {url} on another machine and copy it to {str(target)!r}"
        + (f" (MD5 {md5})" if md5 else "")
        + ", then run again."
    )
    try:
        with atomic_open(target) as out:
            try:
                try:
                    response = _open_url(url, _TIMEOUT_S)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    raise _TransferError(str(getattr(exc, "reason", None) or exc)) from exc
                with response:
                    headers = getattr(response, "headers", None)
                    length = headers.get("Content-Length") if headers is not None else None
                    total = int(length) if length and str(length).isdigit() else None
                    got = _copy_with_md5(response, out, total, target.name, progress)
            except _TransferError as exc:
                raise DownloadError(f"could not download {url}: {exc}. {by_hand}") from exc
            if md5 is not None and got != md5.lower():
                raise ChecksumError(
                    f"{url} downloaded with MD5 {got}, expected {md5}: the transfer was corrupted or the file "
                    f"changed upstream; nothing was written to {str(target)!r}. {by_hand}"
                )
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise DownloadError(f"cannot write {str(target)!r}: {exc}") from exc
    return target


def _safe_member_name(name: str) -> str:
    """The normalised relative POSIX name of a member, or raise for an absolute or escaping name."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"absolute member name {name!r}")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"member name {name!r} contains '..'")
    return posixpath.join(*parts) if parts else ""


def extract_members(
    archive: str | os.PathLike[str], members: Mapping[str, int | None], dest: str | os.PathLike[str]
) -> dict[str, Path]:
    """Extract exactly ``members`` (name inside the archive -> expected size in bytes, or ``None`` for a text
    file of at most 1 MiB) from a tar archive (raw, gzip, bzip2 or xz) into ``dest``.

    Every member of the archive is checked first, in a full pass over it that also verifies the compressor's
    checksum (:mod:`.tarwalk`: header checksums, sizes, pax headers bounded): absolute names, ``..``
    components, links, devices, FIFOs and a file name that occurs twice make the whole archive an
    :class:`UnsafeArchiveError` (directories and other regular files are allowed and skipped). A wanted member
    that is missing, not a regular file or of the wrong size is a :class:`DataFormatError`, as is any damage.
    Returns name -> extracted path. Files are written atomically; nothing outside ``dest`` is touched, and
    nothing at all unless the whole archive passed.
    """
    src = Path(archive)
    root = Path(dest)
    wanted = {_safe_member_name(n): size for n, size in members.items()}
    found: dict[str, int] = {}
    seen: set[str] = set()
    names: set[str] = set()
    stream = TarStream(src, DataFormatError)
    try:
        for member in walk(stream):
            try:
                name = _safe_member_name(member.name)
                if member.kind == "link":
                    raise UnsafeArchiveError(f"member {member.name!r} is a link")
                if member.kind == "special":
                    raise UnsafeArchiveError(f"member {member.name!r} is a device, FIFO or other special file")
            except UnsafeArchiveError as exc:
                raise UnsafeArchiveError(f"refusing to extract {str(src)!r}: {exc}") from None
            names.add(name)
            if member.kind == "file":
                if name in seen:
                    raise UnsafeArchiveError(f"refusing to extract {str(src)!r}: member {name!r} appears twice")
                seen.add(name)
                if name in wanted:
                    found[name] = member.size
    finally:
        stream.close()
    for name, size in wanted.items():
        if name not in found:
            kind = "is not a regular file" if name in names else "missing"
            raise DataFormatError(f"{str(src)!r}: member {name!r} {kind}")
        limit = size if size is not None else 1 << 20
        if (size is not None and found[name] != size) or found[name] > limit:
            want = f"{size} bytes" if size is not None else "at most 1 MiB"
            raise DataFormatError(f"{str(src)!r}: member {name!r} has {found[name]} bytes, expected {want}")
    out: dict[str, Path] = {}
    stream = TarStream(src, DataFormatError)
    try:
        for member in walk(stream):
            name = _safe_member_name(member.name)
            if member.kind != "file" or name not in wanted or name in out:
                continue
            target = root.joinpath(*name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(target, fsync=False) as w:
                remaining = member.size
                while remaining > 0:
                    chunk = stream.read(min(_CHUNK, remaining))
                    w.write(chunk)
                    remaining -= len(chunk)
            out[name] = target
    finally:
        stream.close()
    return out
