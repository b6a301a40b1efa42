"""Write a file atomically: readers see either the old content or the complete new content, never a mix.

Recipe (POSIX semantics; on Windows the same steps minus the directory fsync):

1. Create a new temporary file ``.<name>.<random>.tmp`` in the target's own directory: ``os.replace`` is only
   atomic within one filesystem, and a hidden name keeps globs such as ``*.npz`` from picking it up.
2. Let the caller write it, then flush Python's buffer and ``os.fsync`` the file, so its bytes are on disk
   before any name points at them (otherwise a crash right after the rename can leave an empty file).
3. ``os.replace`` the temporary file onto the target. This is the commit point: one atomic rename.
4. ``os.fsync`` the directory, so the rename itself survives a power loss.

If anything fails before the commit (the caller's code, a full disk, Ctrl-C) the temporary file is removed and
the target is left exactly as it was. Only a hard crash (SIGKILL, power loss) can leave a ``.*.tmp`` file
behind, and even then the target is intact.

The new file gets the permission bits of the file it replaces, or ``0o666`` minus the umask when there is
none (as ``open(path, "w")`` would give; ``tempfile.mkstemp`` would give ``0o600``). A symbolic link at the
target is replaced by the new file, not followed. The parent directory must exist: it is never created.

Public API: :func:`atomic_open` (a context manager yielding the binary file to write) and
:func:`atomic_write` (the same with a callback).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

__all__ = ["atomic_open", "atomic_write"]

# Room left for ".<name>.<12 hex digits>.tmp" under the usual 255-byte file-name limit.
_MAX_STEM: Final = 200
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)


def _check_target(target: Path) -> None:
    """Fail before writing anything when the target can never be replaced by a file."""
    parent = target.parent
    if not parent.exists():
        raise FileNotFoundError(errno.ENOENT, f"cannot write {str(target)!r}: no such directory", str(parent))
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"cannot write {str(target)!r}: not a directory", str(parent))
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "cannot replace a directory with a file", str(target))


def _create_temp(target: Path) -> tuple[BinaryIO, Path]:
    """Create and open a fresh temporary file next to ``target``."""
    while True:
        tmp = target.with_name(f".{target.name[:_MAX_STEM]}.{secrets.token_hex(6)}.tmp")
        try:
            # O_EXCL: never reuse (or follow a symlink planted at) an existing name. Mode 0o666 lets the umask
            # decide, as for any new file.
            fd = os.open(tmp, _OPEN_FLAGS, 0o666)
        except FileExistsError:
            continue
        try:
            return os.fdopen(fd, "wb"), tmp
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise


def _copy_mode(target: Path, fh: BinaryIO) -> None:
    """Give the new file the permission bits of the regular file it is about to replace, if any."""
    try:
        st = os.stat(target)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode) and hasattr(os, "fchmod"):
        os.fchmod(fh.fileno(), stat.S_IMODE(st.st_mode))


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable. Windows cannot open directories; there NTFS journals it."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (certain network and FUSE mounts) cannot fsync a directory: nothing more to do there.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _discard(fh: BinaryIO, tmp: Path) -> None:
    """Close and delete the temporary file without masking the exception being handled."""
    with contextlib.suppress(OSError, ValueError):
        fh.close()
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary binary file that replaces ``path`` atomically when the ``with`` block succeeds.

    In: the target path (its directory must exist; the file itself may or may not) and ``fsync``: ``False``
    skips the two fsyncs, keeping atomicity but not durability across a power loss (for frequent, cheap files).
    Yields: a writable, seekable binary file. Do not close it; leaving the block commits it.
    Raises: ``FileNotFoundError`` / ``NotADirectoryError`` naming the parent when it is missing or not a
    directory, ``IsADirectoryError`` when ``path`` is a directory, both before anything is created. An
    exception inside the block propagates after the temporary file is removed; the old file is untouched.
    An error from the final directory fsync is raised although the new file is already in place.
    """
    target = Path(path)
    _check_target(target)
    fh, tmp = _create_temp(target)
    try:
        yield fh
        fh.flush()
        _copy_mode(target, fh)
        if fsync:
            os.fsync(fh.fileno())
        fh.close()
        os.replace(tmp, target)
    except BaseException:
        _discard(fh, tmp)
        raise
    if fsync:
        _fsync_directory(target.parent)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object], *, fsync: bool = True) -> Path:
    """Call ``write(fh)`` on a temporary file and atomically replace ``path`` with it; see :func:`atomic_open`.

    Out: ``path`` as a :class:`~pathlib.Path`. Example: ``atomic_write(p, lambda fh: fh.write(data))``.
    """
    with atomic_open(path, fsync=fsync) as fh:
        write(fh)
    return Path(path)
