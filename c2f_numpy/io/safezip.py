"""Zip archives read only when whole: every entry listed is present, contiguous, of bounded size, CRC-checked.

:mod:`zipfile` reads what the central directory lists and trusts it: an edited field (a comment length, an
entry count) can make it list fewer entries than the archive holds, so an ``.npz``, a checkpoint or a dump
loads with arrays missing and no error. :class:`SafeZip` opens an archive only after checking what its
records promise against each other and the file:

* the end-of-central-directory record (zip64 or not) is the file's last bytes: no comment, nothing appended;
* the number of entries it records is the number the central directory lists, and the central directory ends
  where that record starts;
* the entries' local headers and data tile the file from byte 0 to the central directory, in order, with no
  gap or overlap (a data descriptor may follow an entry whose flags announce one);
* every entry is unencrypted, stored or deflated, has a unique name, at most ``max_entry_bytes`` bytes,
  and a stored entry is as long as its data, a deflated one at most :data:`MAX_DEFLATE_RATIO` times it;
* reading an entry checks its CRC-32 (:mod:`zipfile` does at the end of the entry: :meth:`SafeZip.read`
  always reads to the end).

Every failure is the caller's ``error`` class (a :class:`~.errors.FileFormatError`); callers prefix the path.
Public API: :class:`SafeZip`, :func:`zip_errors`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

from .errors import FileFormatError, brief

__all__ = ["MAX_DEFLATE_RATIO", "MAX_ENTRY_BYTES", "SafeZip", "zip_errors"]

# Deflate cannot expand more than 1032:1; a little more leaves room for the block headers of tiny entries.
MAX_DEFLATE_RATIO: Final = 1100
_DEFLATE_SLACK: Final = 1024
MAX_ENTRY_BYTES: Final = 1 << 36  # 64 GiB: above any state dict this project handles
_EOCD: Final = struct.Struct("<4s4H2LH")
_EOCD64_LOCATOR: Final = struct.Struct("<4sLQL")
_EOCD64: Final = struct.Struct("<4sQ2H2L4Q")
_LOCAL: Final = struct.Struct("<4s5H3L2H")
# Data descriptor lengths: CRC + sizes (4 + 4 + 4, or 4 + 8 + 8 in zip64), optionally after a 4-byte signature.
_DESCRIPTOR_LENGTHS: Final = frozenset({12, 16, 20, 24})


@contextlib.contextmanager
def zip_errors(error: type[FileFormatError], what: str = "zip archive") -> Iterator[None]:
    """Turn what :mod:`zipfile` and :mod:`zlib` raise for damaged bytes into ``error``.

    ``OSError`` is translated only for an invalid seek (``EINVAL``, a negative offset) or none at all: a real
    I/O error (permissions, EIO) stays what it is.
    """
    try:
        yield
    except FileFormatError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        NotImplementedError,
        RuntimeError,
        struct.error,
        OverflowError,
        UnicodeDecodeError,
    ) as exc:
        raise error(f"corrupt or truncated {what} ({type(exc).__name__}: {brief(str(exc), 200)})") from None
    except OSError as exc:
        if exc.errno not in (None, errno.EINVAL):
            raise
        raise error(f"corrupt {what} (bad offset or size: {brief(str(exc), 200)})") from None


class SafeZip:
    """A validated, open zip archive. Use as a context manager; ``infos`` lists the entries in file order."""

    def __init__(
        self, path: str | os.PathLike[str], error: type[FileFormatError], *, max_entry_bytes: int = MAX_ENTRY_BYTES
    ) -> None:
        self.path = Path(path)
        self.error = error
        self.max_entry_bytes = max_entry_bytes
        self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self.size = os.fstat(self._fh.fileno()).st_size
            with zip_errors(error):
                cd_offset, count = self._end_records()
                self.zf = zipfile.ZipFile(self._fh)
                self.infos = self._check_entries(cd_offset, count)
        except BaseException:
            self._fh.close()
            raise

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            self.zf.close()
        self._fh.close()

    def _read_at(self, offset: int, n: int) -> bytes:
        self._fh.seek(offset)
        data = self._fh.read(n)
        if len(data) != n:
            raise self.error(f"expected {n} bytes at offset {offset}, found {len(data)} (truncated)")
        return data

    def _end_records(self) -> tuple[int, int]:
        """(central directory offset, entry count), from the end record(s), checked against the file."""
        if self.size < _EOCD.size:
            raise self.error(f"expected a zip archive, found only {self.size} bytes")
        sig, disk, cd_disk, _, count, cd_size, cd_offset, comment = _EOCD.unpack(
            self._read_at(self.size - _EOCD.size, _EOCD.size)
        )
        if sig != b"PK\x05\x06" or comment != 0:
            # Our writers, torch.save and numpy never write a zip comment.
            raise self.error(
                "the zip archive is corrupt or truncated: expected its end-of-central-directory record as the "
                "file's last 22 bytes (no comment, nothing appended), found none"
            )
        if disk != 0 or cd_disk != 0:
            raise self.error(f"expected a single-disk zip archive, found disk numbers {disk}, {cd_disk}")
        cd_end = self.size - _EOCD.size
        loc_at = cd_end - _EOCD64_LOCATOR.size
        if loc_at >= 0 and self._read_at(loc_at, 4) == b"PK\x06\x07":
            _, _, eocd64_at, _ = _EOCD64_LOCATOR.unpack(self._read_at(loc_at, _EOCD64_LOCATOR.size))
            if eocd64_at + _EOCD64.size != loc_at:
                raise self.error(
                    f"expected the zip64 end record right before its locator (at {loc_at - _EOCD64.size}), "
                    f"found it placed at {eocd64_at}"
                )
            sig64, _, _, _, _, _, _, count, cd_size, cd_offset = _EOCD64.unpack(self._read_at(eocd64_at, _EOCD64.size))
            if sig64 != b"PK\x06\x06":
                raise self.error("expected a zip64 end-of-central-directory record, found other bytes")
            cd_end = eocd64_at
        if cd_offset + cd_size != cd_end:
            raise self.error(
                f"expected the central directory ({cd_size} bytes at {cd_offset}) to end at the end record "
                f"(byte {cd_end}), found it ending at {cd_offset + cd_size}"
            )
        return cd_offset, count

    def _check_entries(self, cd_offset: int, count: int) -> list[zipfile.ZipInfo]:
        infos = self.zf.infolist()
        if len(infos) != count:
            raise self.error(f"expected {count} entries (the end record's count), found {len(infos)} listed")
        if self.zf.start_dir != cd_offset:
            raise self.error(f"expected the central directory at byte {cd_offset}, found it at {self.zf.start_dir}")
        names: set[str] = set()
        position = 0
        ordered = sorted(infos, key=lambda i: i.header_offset)
        for k, info in enumerate(ordered):
            self._check_entry(info, names)
            if info.header_offset != position:
                raise self.error(
                    f"expected entry {brief(info.filename)} at byte {position} (right after the previous one), "
                    f"found it at {info.header_offset}: entries overlap or bytes are unaccounted for"
                )
            sig, *_, name_len, extra_len = _LOCAL.unpack(self._read_at(info.header_offset, _LOCAL.size))
            if sig != b"PK\x03\x04":
                raise self.error(f"expected a local header for entry {brief(info.filename)}, found other bytes")
            position = info.header_offset + _LOCAL.size + name_len + extra_len + info.compress_size
            following = ordered[k + 1].header_offset if k + 1 < len(ordered) else cd_offset
            gap = following - position
            if gap and info.flag_bits & 0x08 and gap in _DESCRIPTOR_LENGTHS:
                position = following  # the data descriptor after an entry whose sizes were not known up front
        if position != cd_offset:
            raise self.error(
                f"expected the entries to end where the central directory starts (byte {cd_offset}), found "
                f"them ending at {position}"
            )
        return ordered

    def _check_entry(self, info: zipfile.ZipInfo, names: set[str]) -> None:
        name = brief(info.filename)
        if info.filename in names:
            raise self.error(f"expected unique entry names, found {name} twice")
        names.add(info.filename)
        if info.flag_bits & 0x01:
            raise self.error(f"expected unencrypted entries, found {name} encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.error(f"expected stored or deflated entries, found {name} with method {info.compress_type}")
        if info.file_size > self.max_entry_bytes:
            raise self.error(
                f"expected entries of at most {self.max_entry_bytes} bytes, found {name} of {info.file_size}"
            )
        if info.compress_size > self.size:
            raise self.error(f"expected entry {name} within the file's {self.size} bytes, found {info.compress_size}")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise self.error(
                f"expected stored entry {name} to hold its {info.file_size} bytes, found {info.compress_size}"
            )
        if info.file_size > MAX_DEFLATE_RATIO * info.compress_size + _DEFLATE_SLACK:
            raise self.error(
                f"expected entry {name} to expand at most {MAX_DEFLATE_RATIO}x, found {info.compress_size} -> "
                f"{info.file_size} bytes"
            )

    def names(self) -> list[str]:
        return [i.filename for i in self.infos]

    def getinfo(self, name: str) -> zipfile.ZipInfo | None:
        try:
            return self.zf.getinfo(name)
        except KeyError:
            return None

    def read(self, info: zipfile.ZipInfo) -> bytes:
        """The whole entry, CRC-checked (its size was bounded when the archive was opened)."""
        with zip_errors(self.error), self.zf.open(info) as entry:
            data = entry.read(info.file_size + 1)
            if len(data) != info.file_size:
                found = f"found {len(data)}"
                raise self.error(f"expected entry {brief(info.filename)} of {info.file_size} bytes, {found}")
            entry.read()  # at the end of the entry zipfile checks the CRC
        return data

    def open(self, info: zipfile.ZipInfo) -> IO[bytes]:
        """A file object of the entry; read it through :func:`zip_errors`."""
        with zip_errors(self.error):
            return self.zf.open(info)
