"""Cache directory, downloads (file:// URLs and a patched opener: no network), MD5 and safe tar extraction."""

from __future__ import annotations

import io
import tarfile
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from c2f_numpy.data import download as dl
from c2f_numpy.data.download import (
    ChecksumError,
    DataFormatError,
    DownloadError,
    UnsafeArchiveError,
    default_data_dir,
    extract_members,
    md5_file,
    resolve_data_dir,
)
from tests.data import md5_bytes

# ---------------------------------------------------------------- cache directory


def test_default_data_dir_env_and_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("C2F_DATA_DIR", str(tmp_path / "d"))
    assert default_data_dir() == tmp_path / "d"
    monkeypatch.setenv("C2F_DATA_DIR", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "c2f_numpy"


def test_resolve_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("C2F_DATA_DIR", str(tmp_path / "cache" / "deep"))
    assert resolve_data_dir(None, create=False) == tmp_path / "cache" / "deep"
    assert not (tmp_path / "cache").exists()
    assert resolve_data_dir(None, create=True).is_dir()
    assert resolve_data_dir(tmp_path, create=False) == tmp_path
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_data_dir(tmp_path / "typo", create=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        resolve_data_dir(tmp_path / "file", create=False)


# ---------------------------------------------------------------- download


def test_download_file_url_checks_md5(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 5000  # > one 1 MiB chunk
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    dest = tmp_path / "out" / "dest.bin"
    dest.parent.mkdir()
    assert dl.download(src.as_uri(), dest, md5_bytes(payload), progress=False) == dest
    assert dest.read_bytes() == payload
    assert md5_file(dest) == md5_bytes(payload)
    assert [p.name for p in dest.parent.iterdir()] == ["dest.bin"]  # no temporary file left


def test_download_wrong_md5_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello")
    dest = tmp_path / "dest.bin"
    with pytest.raises(ChecksumError, match=r"MD5 .* expected 0{32}.*nothing was written"):
        dl.download(src.as_uri(), dest, "0" * 32, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.bin"]


def test_download_keeps_old_file_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "dest.bin"
    dest.write_bytes(b"old")
    with pytest.raises(DownloadError):
        dl.download((tmp_path / "absent.bin").as_uri(), dest, None, progress=False)
    assert dest.read_bytes() == b"old"


def test_download_network_error_says_where_to_put_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(url: str, timeout: float) -> Any:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(dl, "_open_url", refuse)
    dest = tmp_path / "cifar-10-binary.tar.gz"
    with pytest.raises(DownloadError) as info:
        dl.download("https://example.invalid/cifar-10-binary.tar.gz", dest, "ab" * 16)
    msg = str(info.value)
    assert "https://example.invalid/cifar-10-binary.tar.gz" in msg and "name resolution" in msg
    assert str(dest) in msg and "ab" * 16 in msg and "another machine" in msg
    assert list(tmp_path.iterdir()) == []


class _FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, length: int | None, fail_after: int | None = None) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(length)} if length is not None else {}
        self.fail_after = fail_after

    def read(self, n: int | None = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(n)


def test_download_truncated_or_reset_transfer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dl, "_open_url", lambda url, timeout: _FakeResponse(b"x" * 10, 20))
    with pytest.raises(DownloadError, match="after 10 of 20 bytes"):
        dl.download("https://h/f", tmp_path / "f", None, progress=False)
    monkeypatch.setattr(dl, "_open_url", lambda url, timeout: _FakeResponse(b"x" * (3 << 20), None, 1 << 20))
    with pytest.raises(DownloadError, match="connection reset"):
        dl.download("https://h/f", tmp_path / "f", None, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_progress_bar(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = b"y" * 3000
    monkeypatch.setattr(dl, "_open_url", lambda url, timeout: _FakeResponse(data, len(data)))
    dl.download("https://h/file.bin", tmp_path / "file.bin", md5_bytes(data), progress=True)
    err = capsys.readouterr().err
    assert "file.bin" in err and "100%" in err


def test_download_into_missing_directory(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.write_bytes(b"1")
    with pytest.raises(DownloadError, match="cannot write"):
        dl.download(src.as_uri(), tmp_path / "no" / "such" / "f", None, progress=False)


# ---------------------------------------------------------------- safe extraction


def _tar(path: Path, entries: list[tuple[str, str, bytes]]) -> Path:
    """entries: (name, kind, data) with kind in file, dir, symlink, hardlink, chr, fifo."""
    types = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
             "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}  # fmt: skip
    with tarfile.open(path, "w:gz") as tf:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                info.type = types[kind]
                if kind in ("symlink", "hardlink"):
                    info.linkname = data.decode()
                tf.addfile(info)
    return path


def test_extract_only_the_wanted_members(tmp_path: Path) -> None:
    entries = [("top/", "dir", b""), ("top/a.bin", "file", b"A" * 7), ("./top/names.txt", "file", b"x\ny\n")]
    archive = _tar(tmp_path / "a.tar.gz", [*entries, ("top/other", "file", b"zz")])
    out = tmp_path / "out"
    out.mkdir()
    got = extract_members(archive, {"top/a.bin": 7, "top/names.txt": None}, out)
    assert got == {"top/a.bin": out / "top" / "a.bin", "top/names.txt": out / "top" / "names.txt"}
    assert (out / "top" / "a.bin").read_bytes() == b"A" * 7
    assert sorted(p.name for p in (out / "top").iterdir()) == ["a.bin", "names.txt"]


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([("../evil", "file", b"x")], r"contains '\.\.'"),
        ([("top/../../evil", "file", b"x")], r"contains '\.\.'"),
        ([("/tmp/evil", "file", b"x")], "absolute"),
        ([("top/a.bin", "symlink", b"/etc/passwd")], "is a link"),
        ([("top/x", "symlink", b"../../x")], "is a link"),
        ([("top/a.bin", "hardlink", b"/etc/passwd")], "is a link"),
        ([("top/dev", "chr", b"")], "device, FIFO"),
        ([("top/fifo", "fifo", b"")], "device, FIFO"),
        ([("top/a.bin", "file", b"A"), ("top/a.bin", "file", b"B")], "appears twice"),
    ],
)
def test_extract_refuses_unsafe_archives(tmp_path: Path, entries: list[tuple[str, str, bytes]], match: str) -> None:
    archive = _tar(tmp_path / "a.tar.gz", [*entries, ("top/ok", "file", b"ok")])
    out = tmp_path / "sub" / "out"
    out.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError, match=match):
        extract_members(archive, {"top/ok": 2}, out)
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "sub"]


def test_extract_member_problems(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [("top/a.bin", "file", b"A" * 7), ("top/d", "dir", b"")])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataFormatError, match=r"'top/b\.bin' missing"):
        extract_members(archive, {"top/b.bin": 7}, out)
    with pytest.raises(DataFormatError, match="'top/d' is not a regular file"):
        extract_members(archive, {"top/d": None}, out)
    with pytest.raises(DataFormatError, match="has 7 bytes, expected 8 bytes"):
        extract_members(archive, {"top/a.bin": 8}, out)
    big = _tar(tmp_path / "b.tar", [("t.txt", "file", b"x" * ((1 << 20) + 1))])
    with pytest.raises(DataFormatError, match="expected at most 1 MiB"):
        extract_members(big, {"t.txt": None}, out)
    with pytest.raises(UnsafeArchiveError):
        extract_members(archive, {"../a.bin": 7}, out)


def test_extract_corrupt_archive(tmp_path: Path) -> None:
    good = _tar(tmp_path / "a.tar.gz", [("top/a.bin", "file", bytes(range(256)) * 400)])
    raw = good.read_bytes()
    (tmp_path / "trunc.tar.gz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.tar.gz").write_bytes(b"this is not an archive" * 10)
    out = tmp_path / "out"
    out.mkdir()
    for name in ("trunc.tar.gz", "junk.tar.gz"):
        with pytest.raises(DataFormatError, match=f"{name}.*(truncated or corrupt|missing)"):
            extract_members(tmp_path / name, {"top/a.bin": 256 * 400}, out)
    assert list(out.rglob("*.bin")) == []
