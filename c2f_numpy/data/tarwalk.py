"""A bounded walk over the members of a tar archive (raw, gzip, bzip2 or xz), read as one stream.

Python's :mod:`tarfile` trusts the headers: a member with a negative size sends Python 3.11 into an endless
loop, a pax header of 300 MiB is read whole, and a ``.tar.gz`` whose gzip CRC fails extracts anyway (tarfile
stops at the tar end marker and never reads the gzip trailer). :func:`walk` reads the headers itself:

* every header's checksum is verified; sizes are octal or base-256 and never negative;
* a pax extended header (``path``, ``size``) is at most :data:`MAX_PAX_BYTES`, a GNU long name at most
  :data:`MAX_NAME_BYTES`; every other member type but regular files, directories, links and special files is
  refused;
* nothing is read beyond what the (compressed) file can hold: a gzip stream at most
  :data:`~c2f_numpy.io.safezip.MAX_DEFLATE_RATIO` times the file, a raw tar the file itself, bzip2 / xz at
  most :data:`MAX_UNPACKED_BYTES`;
* after the end marker the stream is read to its end, so the gzip CRC and length (or the bzip2 / xz checks)
  are verified before the walk returns.

Every problem is a :class:`~.download.DataFormatError` naming the file. Public API: :func:`walk`,
:class:`TarMember`.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

from ..io.errors import FileFormatError, brief
from ..io.safezip import MAX_DEFLATE_RATIO

__all__ = ["MAX_NAME_BYTES", "MAX_PAX_BYTES", "MAX_UNPACKED_BYTES", "TarMember", "TarStream", "walk"]

MAX_PAX_BYTES: Final = 1 << 20
MAX_NAME_BYTES: Final = 1 << 16
MAX_UNPACKED_BYTES: Final = 1 << 36
_BLOCK: Final = 512
_CHUNK: Final = 1 << 20
_KINDS: Final[dict[int, Literal["file", "dir", "link", "special"]]] = {
    ord("0"): "file", 0: "file", ord("7"): "file", ord("5"): "dir", ord("1"): "link", ord("2"): "link",
    ord("3"): "special", ord("4"): "special", ord("6"): "special",
}  # fmt: skip


@dataclass(frozen=True)
class TarMember:
    """One member: its name as stored (pax ``path`` / GNU long name applied), kind and data size."""

    name: str
    kind: Literal["file", "dir", "link", "special"]
    size: int


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class TarStream:
    """The decompressed stream with a byte budget; ``read`` and ``skip`` raise on a short or overlong stream."""

    def __init__(self, path: Path, error: type[FileFormatError]) -> None:
        self.path = path
        self.error = error
        self._raw = open(path, "rb")  # noqa: SIM115 - closed by close()
        size = os.fstat(self._raw.fileno()).st_size
        magic = self._raw.read(6)
        self._raw.seek(0)
        # The decompressors only wrap self._raw; close() closes both.
        self.fh: _Readable
        if magic[:2] == b"\x1f\x8b":
            self.fh, self.budget = gzip.GzipFile(fileobj=self._raw, mode="rb"), MAX_DEFLATE_RATIO * size + _CHUNK
        elif magic[:3] == b"BZh":
            self.fh, self.budget = bz2.BZ2File(self._raw), MAX_UNPACKED_BYTES
        elif magic == b"\xfd7zXZ\x00":
            self.fh, self.budget = lzma.LZMAFile(self._raw), MAX_UNPACKED_BYTES  # noqa: SIM115
        else:
            self.fh, self.budget = self._raw, size
        self.pos = 0

    def close(self) -> None:
        if self.fh is not self._raw:
            self.fh.close()
        self._raw.close()

    def fail(self, message: str) -> FileFormatError:
        return self.error(f"{str(self.path)!r} is not a readable tar archive (truncated or corrupt?): {message}")

    def _read(self, n: int) -> bytes:
        try:
            return self.fh.read(n)
        except (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
            raise self.fail(f"{type(exc).__name__}: {brief(str(exc), 200)}") from None
        except OSError as exc:
            if exc.errno is not None:
                raise  # a real I/O error, not damaged bytes (bz2 reports bad data as OSError without errno)
            raise self.fail(f"{brief(str(exc), 200)}") from None

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (at most :data:`_CHUNK` per call)."""
        if self.pos + n > self.budget:
            raise self.fail(f"expected at most {self.budget} bytes unpacked from this file, found more")
        data = self._read(n)
        self.pos += len(data)
        if len(data) != n:
            raise self.fail(f"expected {n} more bytes at offset {self.pos - len(data)}, found {len(data)}")
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            k = min(n, _CHUNK)
            self.read(k)
            n -= k

    def drain(self) -> None:
        """Read to the end of the stream, so the compressor's trailer (gzip CRC and length) is checked."""
        while True:
            room = self.budget - self.pos
            data = self._read(min(_CHUNK, room + 1))
            self.pos += len(data)
            if not data:
                return
            if self.pos > self.budget:
                raise self.fail(f"expected at most {self.budget} bytes unpacked from this file, found more")


def _number(field: bytes, stream: TarStream, what: str) -> int:
    """A header number: octal text, or base-256 when the first byte has its top bit set (negative refused)."""
    if field[:1] and field[0] & 0x80:
        if field[0] == 0xFF:
            raise stream.fail(f"expected a non-negative {what}, found a negative base-256 number")
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise stream.fail(f"expected an octal {what}, found {brief(bytes(text))}")
    return int(text, 8)


def _pax(data: bytes, stream: TarStream) -> dict[str, str]:
    """Records ``"<length> <key>=<value>\\n"``; each length covers its whole record."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos, pos + 20)
        if space < 0 or not data[pos:space].isdigit():
            raise stream.fail("expected pax records '<length> <key>=<value>', found malformed bytes")
        length = int(data[pos:space])
        end = pos + length
        if length <= space - pos + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise stream.fail("expected pax records that end with a newline inside the header, found otherwise")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise stream.fail("expected pax records '<key>=<value>', found one without '='")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = end
    return out


def _checksum_ok(block: bytes) -> bool:
    stored = block[148:156].split(b"\0", 1)[0].strip(b" ")
    if not stored or not all(48 <= c <= 55 for c in stored):
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    signed = unsigned - sum(256 for c in block[:148] + block[156:] if c > 127)
    return int(stored, 8) in (unsigned, signed)


def walk(stream: TarStream) -> Iterator[TarMember]:
    """Yield each member; before the next one, whatever of its data the caller did not ``read`` is skipped."""
    pax: dict[str, str] = {}
    long_name: str | None = None
    while True:
        block = stream.read(_BLOCK)
        if block == bytes(_BLOCK):
            stream.drain()  # the second zero block, and the compressor's trailer
            return
        if not _checksum_ok(block):
            raise stream.fail(f"expected a tar header with a valid checksum at offset {stream.pos - _BLOCK}")
        size = _number(block[124:136], stream, "member size")
        if size > stream.budget - stream.pos:
            raise stream.fail(f"expected a member of at most {stream.budget - stream.pos} bytes, found {size}")
        kind_byte = block[156]
        if kind_byte in (ord("x"), ord("g"), ord("L"), ord("K")):
            limit = MAX_PAX_BYTES if kind_byte in (ord("x"), ord("g")) else MAX_NAME_BYTES
            if size > limit:
                raise stream.fail(f"expected an extended header of at most {limit} bytes, found {size}")
            data = stream.read(size)
            stream.skip(-size % _BLOCK)
            if kind_byte == ord("x"):
                pax = _pax(data, stream)
            elif kind_byte == ord("L"):
                long_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            continue  # a global header ('g') and a long link name ('K') change nothing we use
        kind = _KINDS.get(kind_byte)
        if kind is None:
            raise stream.fail(f"expected a regular file, directory, link or device, found member type {kind_byte!r}")
        name = block[0:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        prefix = block[345:500].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if block[257:262] == b"ustar" and prefix:
            name = f"{prefix}/{name}"
        name = pax.get("path", long_name if long_name is not None else name)
        if "size" in pax:
            if not pax["size"].isdigit():
                raise stream.fail(f"expected a non-negative pax size, found {brief(pax['size'])}")
            size = int(pax["size"])
            if size > stream.budget - stream.pos:
                raise stream.fail(f"expected a member of at most {stream.budget - stream.pos} bytes, found {size}")
        pax, long_name = {}, None
        data_size = size if kind == "file" else 0
        start = stream.pos
        yield TarMember(name, kind, data_size)
        stream.skip(start + data_size - stream.pos)
        stream.skip(-data_size % _BLOCK)
