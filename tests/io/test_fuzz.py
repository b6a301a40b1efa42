"""Seeded mutation fuzzing of every file reader: each mutant loads identically or raises FileFormatError.

For each kind of file we read (npz weights, safetensors weights, training checkpoint, oracle dump, torch
``.pth``, IDX raw and gzip, CIFAR-style ``.tar.gz``) a valid file is mutated: bytes flipped, runs overwritten
with extreme integers (0, 0xFF.., 0x7F.., 0x80..), cut short, bytes inserted or deleted. Each mutant must
either load to exactly what the original loads to, or raise :class:`~c2f_numpy.io.FileFormatError` (the one
error contract); any other exception, or a case over its time bound (a hang), fails the test. Formats without
a checksum (safetensors, raw IDX) can change without a trace (a data byte, a type code from uint8 to int8, a
name and the entry list both): for them a successful load must only be of the same kind (arrays in a dict).

CI runs :data:`CASES` mutants per kind in a few seconds; ``C2F_FUZZ_CASES=20000`` runs a longer search.
"""

from __future__ import annotations

import io
import os
import random
import signal
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from c2f_numpy.data import read_idx, write_idx
from c2f_numpy.data.download import extract_members
from c2f_numpy.io import FileFormatError, load_weights, save_weights
from c2f_numpy.oracle.dump import load_dump, save_dump
from c2f_numpy.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

CASES = int(os.environ.get("C2F_FUZZ_CASES", "250"))
CASE_SECONDS = 5  # per mutant: every reader is linear in the file's size, and these files are a few KB


@contextmanager
def _time_bound(seconds: int, what: str) -> Iterator[None]:
    """Fail (rather than hang) when the block runs longer than ``seconds``."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"{what} ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "stem.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "stem.bias": rng.standard_normal(4).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }


def _meta() -> dict[str, object]:
    return {
        "config": {"epochs": 1},
        "step": 3,
        "loader": {"epoch": 0},
        "drop_path_rng": {"state": 1},
        "partial": {},
        "best": {},
        "history": [],
        "wall_seconds": 1.5,
    }


# Each kind: (file name, writer of the valid file, reader returning a comparable value).
def _write_weights(p: Path) -> None:
    save_weights(p, _state(), {"k": "v"})  # the suffix picks npz or safetensors


def _write_checkpoint(p: Path) -> None:
    state = _state()
    save_checkpoint(
        p, Checkpoint(state, {"lr": np.array(0.1)}, {k: np.asarray(v + 1) for k, v in state.items()}, _meta())
    )


def _read_checkpoint(p: Path) -> object:
    c = load_checkpoint(p)
    return (c.model, c.optim, c.ema, c.meta, c.model_config)


def _write_dump(p: Path) -> None:
    save_dump(p, _state(), {"note": "x"})


def _write_pth(p: Path) -> None:
    state = {k: torch.from_numpy(v) for k, v in _state().items()}
    torch.save({"state_dict": state, "epoch": 3, "names": ("a", "b"), "view": state["stem.weight"][1:3]}, p)


def _read_pth(p: Path) -> object:
    from c2f_numpy.io import read_torch_file

    return read_torch_file(p)


def _write_idx(p: Path) -> None:
    write_idx(p, np.arange(2 * 5 * 5, dtype=np.uint8).reshape(2, 5, 5))


def _write_tar(p: Path) -> None:
    with tarfile.open(p, "w:gz") as tf:
        for name, data in (("top/a.bin", bytes(range(256)) * 3), ("top/names.txt", b"x\ny\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _read_tar(p: Path) -> object:
    out = p.parent / "out"
    for old in out.rglob("*"):
        if old.is_file():
            old.unlink()
    out.mkdir(exist_ok=True)
    got = extract_members(p, {"top/a.bin": 768, "top/names.txt": None}, out)
    return {name: path.read_bytes() for name, path in got.items()}


KINDS: dict[str, tuple[str, Callable[[Path], None], Callable[[Path], object], bool]] = {
    # name: (file name, writer, reader, checksummed: a changed byte can never load as a different value)
    "npz": ("w.npz", _write_weights, load_weights, True),
    "safetensors": ("w.safetensors", _write_weights, load_weights, False),
    "checkpoint": ("c.npz", _write_checkpoint, _read_checkpoint, True),
    "dump": ("d.npz", _write_dump, load_dump, True),
    "pth": ("t.pth", _write_pth, _read_pth, True),
    "idx": ("i-idx3-ubyte", _write_idx, read_idx, False),
    "idx.gz": ("i-idx3-ubyte.gz", _write_idx, read_idx, True),
    "tar.gz": ("a.tar.gz", _write_tar, _read_tar, True),
}


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    kind = rng.randrange(6)
    at = rng.randrange(len(out))
    if kind == 0:  # flip bits of one byte
        out[at] ^= rng.randrange(1, 256)
    elif kind == 1:  # flip a few bytes
        for _ in range(rng.randrange(2, 6)):
            out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
    elif kind == 2:  # an extreme integer over a 1-8 byte field
        width = rng.choice((1, 2, 4, 8))
        fill = rng.choice((b"\x00", b"\xff", b"\x7f", b"\x80"))
        value = (fill * width) if fill in (b"\x00", b"\xff") else fill + b"\xff" * (width - 1)
        out[at : at + width] = value[: len(out) - at] if rng.random() < 0.5 else value[::-1][: len(out) - at]
    elif kind == 3:  # cut short
        del out[at:]
    elif kind == 4:  # insert bytes
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    else:  # delete bytes
        del out[at : at + rng.randrange(1, 9)]
    return bytes(out)


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _arrays(result: object) -> object:
    """The arrays of a reader's result (load_weights returns them with the metadata, which has no checksum)."""
    return result[0] if isinstance(result, tuple) and len(result) == 2 else result


def _kind(a: object) -> object:
    """What an unchecksummed file's result must keep: an array, or a dict of arrays."""
    if isinstance(a, dict):
        return ("dict", all(isinstance(v, np.ndarray) for v in a.values()))
    return type(a)


@pytest.mark.parametrize("kind", list(KINDS))
def test_mutants_load_identically_or_raise_file_format_error(tmp_path: Path, kind: str) -> None:
    name, write, read, checksummed = KINDS[kind]
    good = tmp_path / name
    write(good)
    original = good.read_bytes()
    expected = read(good)
    rng = random.Random(f"c2f-fuzz-{kind}")
    target = tmp_path / "mutant" / name
    target.parent.mkdir()
    outcomes = {"identical": 0, "refused": 0, "changed": 0}
    start = time.perf_counter()
    for case in range(CASES):
        mutant = _mutate(original, rng)
        target.write_bytes(mutant)
        with _time_bound(CASE_SECONDS, f"{kind} mutant {case}"):
            try:
                got = read(target)
            except FileFormatError:
                outcomes["refused"] += 1
                continue
            except Exception as exc:
                pytest.fail(f"{kind} mutant {case} ({mutant.hex()[:200]}...) raised {type(exc).__name__}: {exc}")
        if _same(got, expected):
            outcomes["identical"] += 1
        elif not checksummed and _kind(_arrays(got)) == _kind(_arrays(expected)):
            outcomes["changed"] += 1
        else:
            pytest.fail(f"{kind} mutant {case} loaded a different result without an error: {mutant.hex()[:200]}")
    print(f"{kind}: {CASES} mutants, {outcomes}")  # shown with -s: the counts the note asks for
    assert outcomes["refused"] > CASES // 4, outcomes  # the mutations do reach the checks
    assert time.perf_counter() - start < 60
