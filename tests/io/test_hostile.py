"""Regression tests for each class of hostile or damaged file in issue 20: no crash, no hang, no silent loss.

Every reader must raise its FileFormatError subclass, naming the file, within a time bound and without an
allocation the file's size cannot justify.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

import c2f_numpy as c2f
from c2f_numpy.data import read_idx
from c2f_numpy.data.download import DataFormatError, extract_members
from c2f_numpy.io import CheckpointError, FileFormatError, WeightsFileError, load_weights, read_torch_file, save_weights
from c2f_numpy.io.pickle_vm import MAX_DEPTH
from c2f_numpy.models import CONFIG_KEY
from c2f_numpy.oracle.dump import DumpFileError, load_dump, save_dump
from c2f_numpy.train.checkpoint import Checkpoint, TrainCheckpointError, load_checkpoint, save_checkpoint

from .test_fuzz import _meta, _state, _time_bound

# ------------------------------------------------------------------------------------------------------------
# Helpers


def _pth(path: Path, pkl: bytes, extra: dict[str, bytes] | None = None) -> Path:
    """A torch.save-shaped archive around a hand-made data.pkl."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/data.pkl", pkl)
        zf.writestr("a/byteorder", "little")
        for name, data in (extra or {}).items():
            zf.writestr(f"a/{name}", data)
    return path


@contextmanager
def _bounded(seconds: float = 2.0, peak_bytes: int = 64 << 20) -> Iterator[None]:
    """The block must finish in ``seconds`` and allocate at most ``peak_bytes`` (Python-tracked) at its peak."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with _time_bound(int(seconds) + 5, "hostile file"):
            yield
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - start < seconds
    assert peak < peak_bytes, f"peak allocation {peak} bytes"


def _raises(error: type[Exception], path: Path, load: Callable[[Path], object], match: str | None = None) -> str:
    with _bounded(), pytest.raises(error, match=match) as info:
        load(path)
    assert str(path) in str(info.value)
    assert len(str(info.value)) < 1000
    return str(info.value)


# ------------------------------------------------------------------------------------------------------------
# Pickles: recursion, early STOP, shared structure, memo, cycles, BUILD


@pytest.mark.parametrize("depth", [5000, 300_000])
def test_deeply_nested_tuple_as_dict_key(tmp_path: Path, depth: int) -> None:
    # Under pickle.Unpickler, hashing the key recursed: RecursionError at 5000, SIGSEGV at 300,000.
    pkl = b"\x80\x02}" + b")" + b"\x85" * depth + b"K\x01s."
    _raises(CheckpointError, _pth(tmp_path / "deep.pth", pkl), read_torch_file, f"at most {MAX_DEPTH} deep")


def test_deeply_nested_lists(tmp_path: Path) -> None:
    depth = 5000
    pkl = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    _raises(CheckpointError, _pth(tmp_path / "deep.pth", pkl), read_torch_file, f"at most {MAX_DEPTH} deep")


def test_nesting_up_to_the_limit_loads(tmp_path: Path) -> None:
    pkl = b"\x80\x02" + b"]" * MAX_DEPTH + b"a" * (MAX_DEPTH - 1) + b"."
    obj = read_torch_file(_pth(tmp_path / "ok.pth", pkl))
    for _ in range(MAX_DEPTH - 1):
        assert isinstance(obj, list) and len(obj) == 1
        obj = obj[0]
    assert obj == []


def test_early_stop_is_not_a_short_result(tmp_path: Path) -> None:
    # A whole dict {'a': 1}, STOP, then the rest of a larger pickle: the old reader returned {'a': 1}.
    pkl = b"\x80\x02}(X\x01\x00\x00\x00aK\x01u.X\x01\x00\x00\x00bK\x02s."
    _raises(CheckpointError, _pth(tmp_path / "stop.pth", pkl), read_torch_file, "STOP to be the last byte")
    with pytest.raises(CheckpointError, match="expected a STOP"):
        read_torch_file(_pth(tmp_path / "nostop.pth", b"\x80\x02}"))


@pytest.mark.parametrize("as_key", [False, True])
def test_shared_structure_of_2_to_the_40_leaves(tmp_path: Path, as_key: bool) -> None:
    # 40 tuples, each holding the previous one twice: 1 KB, 2^40 leaves when hashed or repr'd (minutes).
    chain = b"K\x01" + b"2\x86" * 40
    pkl = b"\x80\x02" + (b"}" + chain + b"K\x01s." if as_key else chain + b".")
    _raises(CheckpointError, _pth(tmp_path / "dag.pth", pkl), read_torch_file, "counting shared ones")


def test_shared_structure_in_mutable_containers(tmp_path: Path) -> None:
    chain = b"]" + b"2\x86" * 40  # 40 tuples over one list: no hash, but a repr or any walk would be 2^40
    _raises(CheckpointError, _pth(tmp_path / "dag.pth", b"\x80\x02" + chain + b"."), read_torch_file)


def test_large_memo_index_allocates_nothing(tmp_path: Path) -> None:
    # pickle's C unpickler sized its memo table by the index: GiBs from 5 bytes.
    path = _pth(tmp_path / "memo.pth", b"\x80\x02K\x07r\xf0\xff\xff\xffj\xf0\xff\xff\xff\x86.")
    with _bounded():
        assert read_torch_file(path) == (7, 7)


def test_reference_cycle(tmp_path: Path) -> None:
    _raises(CheckpointError, _pth(tmp_path / "cycle.pth", b"\x80\x02]q\x00h\x00a."), read_torch_file, "cycle")


def _s(text: str) -> bytes:
    return b"\x8c" + bytes([len(text)]) + text.encode()


def test_build_on_an_array_is_refused(tmp_path: Path) -> None:
    # numpy's ndarray.__setstate__ would take dtype and bytes from the file (an object dtype: pointers).
    pid = b"(" + _s("storage") + b"ctorch\nFloatStorage\n" + _s("0") + _s("cpu") + b"K\x02tQ"
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"K\x00K\x02\x85K\x01\x85\x89NtR"
    extra = {"data/0": bytes(8)}
    got = read_torch_file(_pth(tmp_path / "ok.pth", b"\x80\x02" + tensor + b".", extra))
    assert isinstance(got, np.ndarray) and got.shape == (2,)
    path = _pth(tmp_path / "build.pth", b"\x80\x02" + tensor + b"}b.", extra)
    _raises(CheckpointError, path, read_torch_file, "sets the state of <array float32")
    _raises(CheckpointError, _pth(tmp_path / "list.pth", b"\x80\x02]}b."), read_torch_file, "sets the state")


def test_stride_0_view_cannot_expand_a_storage(tmp_path: Path) -> None:
    path = tmp_path / "expanded.pth"
    torch.save({"w": torch.zeros(4)[:1].expand(1 << 28)}, path)  # 16 bytes of storage, a 1 GiB view
    _raises(CheckpointError, path, read_torch_file, "at most the 4 elements")


def test_overlapping_views_are_bounded_by_the_file(tmp_path: Path) -> None:
    base = torch.arange(1 << 16, dtype=torch.float32)
    views = {f"v{i}": base[i:] for i in range(64)}  # 64 views of one 256 KiB storage: 16 MiB copied out
    path = tmp_path / "views.pth"
    torch.save(views, path)
    _raises(CheckpointError, path, read_torch_file, "expected tensors of at most 4x")
    few = tmp_path / "few.pth"
    torch.save({f"v{i}": base[i:] for i in range(3)}, few)
    got = read_torch_file(few)
    assert isinstance(got, dict) and np.array_equal(got["v2"], base[2:].numpy())


def test_error_messages_never_repr_file_objects(tmp_path: Path) -> None:
    # A huge string as a persistent id: the message shows a bounded excerpt.
    pkl = b"\x80\x02X" + struct.pack("<I", 1 << 20) + b"x" * (1 << 20) + b"Q."
    message = _raises(CheckpointError, _pth(tmp_path / "pid.pth", pkl), read_torch_file, "persistent id")
    assert len(message) < 400


# ------------------------------------------------------------------------------------------------------------
# Zip: edited fields, missing entries, encryption, methods


def _checkpoint(path: Path) -> Path:
    state = _state()
    return save_checkpoint(path, Checkpoint(state, {"lr": np.array(0.1)}, dict(state), _meta()))


def _edit_central_directory(data: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite a field of the first central-directory header."""
    at = data.index(b"PK\x01\x02") + offset
    return data[:at] + value + data[at + len(value) :]


READERS: dict[str, tuple[Callable[[Path], Path], Callable[[Path], object], type[FileFormatError]]] = {
    "weights": (lambda p: save_weights(p, _state(), {"k": "v"}), load_weights, WeightsFileError),
    "checkpoint": (_checkpoint, load_checkpoint, TrainCheckpointError),
    "dump": (lambda p: save_dump(p, _state()), load_dump, DumpFileError),
}


@pytest.mark.parametrize("kind", list(READERS))
@pytest.mark.parametrize(
    "edit",
    [
        lambda d: _edit_central_directory(d, 32, b"\x40\x00"),  # an entry's comment length: swallows entries
        lambda d: d[:-2] + b"\x10\x00",  # the archive comment length
        lambda d: d[:-12] + struct.pack("<H", 2) + d[-10:],  # the entry count
        lambda d: _edit_central_directory(d, 8, b"\x01\x00"),  # the encrypted flag
        lambda d: _edit_central_directory(d, 10, b"\x63\x00"),  # compression method 99
        lambda d: _edit_central_directory(d, 42, b"\xff\xff\xff\xff"),  # the local header offset
        lambda d: _edit_central_directory(d, 24, b"\xff\xff\xff\x7f"),  # the uncompressed size
        lambda d: d + b"appended",
    ],
    ids=["entry-comment", "archive-comment", "count", "encrypted", "method", "offset", "size", "appended"],
)
def test_edited_zip_fields_are_errors(tmp_path: Path, kind: str, edit: Callable[[bytes], bytes]) -> None:
    write, load, error = READERS[kind]
    good = write(tmp_path / "good.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(edit(good.read_bytes()))
    _raises(error, bad, load)


def _without(src: Path, dst: Path, drop: Callable[[str], bool]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if not drop(info.filename):
                zout.writestr(info, zin.read(info))
    return dst


def test_checkpoint_without_its_ema_arrays_is_an_error(tmp_path: Path) -> None:
    good = _checkpoint(tmp_path / "c.npz")
    assert load_checkpoint(good).ema is not None
    bad = _without(good, tmp_path / "bad.npz", lambda n: n.startswith("ema."))
    _raises(TrainCheckpointError, bad, load_checkpoint, "missing")


def test_dump_and_weights_with_entries_removed_are_errors(tmp_path: Path) -> None:
    dump = save_dump(tmp_path / "d.npz", _state())
    _raises(DumpFileError, _without(dump, tmp_path / "d2.npz", lambda n: n == "stem.bias.npy"), load_dump, "missing")
    weights = save_weights(tmp_path / "w.safetensors", _state())
    with safe_rewrite(weights) as (tensors, _):
        del tensors["stem.bias"]
    _raises(WeightsFileError, weights, load_weights, "1 missing")


@contextmanager
def safe_rewrite(path: Path) -> Iterator[tuple[dict[str, np.ndarray], dict[str, str]]]:
    """Rewrite a safetensors file with its metadata kept and tensors edited by the caller."""
    import safetensors.numpy

    with safetensors.safe_open(path, framework="np") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    yield tensors, meta
    path.write_bytes(safetensors.numpy.save(tensors, metadata=meta))


@pytest.mark.parametrize("where", ["npz", "checkpoint"])
def test_deeply_nested_json_metadata(tmp_path: Path, where: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    if where == "npz":
        path = tmp_path / "w.npz"
        with zipfile.ZipFile(path, "w") as zf:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.array(json.dumps({"a": "b"})[:-1] + f', "x": {deep}}}'))
            zf.writestr("__metadata__.npy", buf.getvalue())
        _raises(WeightsFileError, path, load_weights, "nested at most")
    else:
        path = save_weights(tmp_path / "c.npz", _state(), {"c2f_numpy.checkpoint": deep})
        _raises(TrainCheckpointError, path, load_checkpoint, "nested at most")


def test_checkpoint_missing_training_state_is_named(tmp_path: Path) -> None:
    meta = _meta()
    del meta["config"]
    state = _state()
    path = save_checkpoint(tmp_path / "c.npz", Checkpoint(state, {}, None, meta))
    _raises(TrainCheckpointError, path, load_checkpoint, "'config' to be a JSON object, found no such key")


# ------------------------------------------------------------------------------------------------------------
# load_model: the stored architecture is checked before anything is built


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"dims": [4096, 8192], "depths": [2, 2], "kernel_size": 4001}, "kernel_size"),
        ({"dims": [4096, 8192], "depths": [2, 2]}, "blocks need at least"),
        ({"dims": "wide"}, "list of 1-16 integers"),
        ({"depths": [2, 2]}, "as many of each"),
        ({"num_classes": None}, "num_classes"),
        ({"dtype": "object"}, "dtype"),
    ],
)
def test_load_model_checks_the_stored_architecture_first(tmp_path: Path, change: dict, match: str) -> None:
    model = c2f.create_model("micro", num_classes=10)
    path = c2f.models.save_model(model, tmp_path / "m.npz")
    state, meta = load_weights(path)
    config = {**json.loads(meta[CONFIG_KEY]), **change}
    bad = save_weights(tmp_path / "bad.npz", state, {**meta, CONFIG_KEY: json.dumps(config)})
    _raises(WeightsFileError, bad, c2f.models.load_model, match)
    no_config = save_weights(tmp_path / "nc.npz", state, {**meta, CONFIG_KEY: "[]"})
    _raises(WeightsFileError, no_config, c2f.models.load_model, "JSON object")


# ------------------------------------------------------------------------------------------------------------
# Tar and IDX


def _tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _set_header(tar: bytes, at: int, offset: int, value: bytes) -> bytes:
    """Overwrite a field of the header at ``at`` and recompute its checksum."""
    block = bytearray(tar[at : at + 512])
    block[offset : offset + len(value)] = value
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return tar[:at] + bytes(block) + tar[at + 512 :]


def _extract(path: Path) -> object:
    out = path.parent / "out"
    out.mkdir(exist_ok=True)
    return extract_members(path, {"top/a.bin": 4}, out)


def test_tar_member_with_negative_size(tmp_path: Path) -> None:
    # Python 3.11's tarfile loops forever on this header.
    tar = _set_header(_tar_gz([("top/a.bin", b"abcd")]), 0, 124, b"\xff" * 12)
    path = tmp_path / "neg.tar.gz"
    path.write_bytes(gzip.compress(tar))
    _raises(DataFormatError, path, _extract, "negative")


def test_tar_pax_header_of_300_mib(tmp_path: Path) -> None:
    tar = _tar_gz([("top/a.bin", b"abcd")])
    pax = _set_header(tar, 0, 124, f"{300 << 20:011o}\0".encode())
    pax = _set_header(pax, 0, 156, b"x")
    path = tmp_path / "pax.tar.gz"
    path.write_bytes(gzip.compress(pax))
    _raises(DataFormatError, path, _extract)


def test_tar_gz_with_bad_crc_is_not_extracted(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(_tar_gz([("top/a.bin", b"abcd")])))
    packed[-8] ^= 0x01  # the CRC-32 in the gzip trailer; tarfile never read it
    path = tmp_path / "crc.tar.gz"
    path.write_bytes(bytes(packed))
    _raises(DataFormatError, path, _extract, "CRC")
    assert not (tmp_path / "out" / "top" / "a.bin").exists()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_claiming_16_gib(tmp_path: Path, gz: bool) -> None:
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3i", 1 << 20, 1 << 12, 4) + bytes(64)
    path = tmp_path / ("big-idx3-ubyte.gz" if gz else "big-idx3-ubyte")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    _raises(DataFormatError, path, read_idx)
    huge = bytes([0, 0, 8, 3]) + struct.pack(">3i", 1 << 14, 1 << 12, 6) + bytes(64)  # 1.5 GiB (one under 16)
    path.write_bytes(gzip.compress(huge) if gz else huge)
    _raises(DataFormatError, path, read_idx)


def test_checkpoint_with_an_invalid_training_config_is_named(tmp_path: Path) -> None:
    # --resume rebuilt TrainConfig from it and died with a TypeError traceback.
    path = save_checkpoint(tmp_path / "c.npz", Checkpoint(_state(), {}, None, {**_meta(), "config": {"epochs": "x"}}))
    _raises(TrainCheckpointError, path, load_checkpoint, "stored training config is not valid")
