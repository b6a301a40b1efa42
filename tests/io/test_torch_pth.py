"""Tests for :mod:`c2f_numpy.io.torch_pth`: files written by the real ``torch.save``, read without torch.

Every file is compared with what ``torch.load`` returns for it. Hostile and damaged files are built by hand
(a zip with a crafted ``data.pkl``) and must fail with a clear error without running anything.
"""

from __future__ import annotations

import argparse
import builtins
import copy
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from c2f_numpy.io import (
    CheckpointError,
    PickledNamespace,
    TorchDtype,
    UnsafeCheckpointError,
    load_torch_checkpoint,
    read_torch_file,
    torch_allowlist,
    torch_pth,
)

# ------------------------------------------------------------------------------------------------------------
# Helpers


def _save(obj: object, path: Path, **kwargs: object) -> Path:
    torch.save(obj, path, **kwargs)  # type: ignore[arg-type]
    return path


def _torch_to_numpy(obj: object) -> object:
    """What read_torch_file should return for an object torch.load returned (bf16 compared after .float())."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().resolve_conj().resolve_neg()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    if isinstance(obj, argparse.Namespace):
        return {k: _torch_to_numpy(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: _torch_to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_torch_to_numpy(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_torch_to_numpy(v) for v in obj)
    return obj


def _assert_tree_equal(got: object, want: object, where: str = "root") -> None:
    """Exact equality of two object trees; arrays must also match in dtype and be fresh C-contiguous."""
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), f"{where}: {type(got).__name__} is not an array"
        assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}"
        assert got.flags.c_contiguous and got.flags.writeable, f"{where}: not a writable C-contiguous array"
        np.testing.assert_array_equal(got, want, err_msg=where)
    elif isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {type(got).__name__} is not a dict"
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for key in want:
            _assert_tree_equal(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list | tuple):
        assert type(got) is type(want) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_tree_equal(g, w, f"{where}[{i}]")
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"


def _assert_matches_torch(path: Path, *, weights_only: bool = True) -> object:
    """read_torch_file(path) equals torch.load(path); returns what read_torch_file gave."""
    got = read_torch_file(path)
    _assert_tree_equal(got, _torch_to_numpy(torch.load(path, weights_only=weights_only)))
    return got


def _data_pkl(path: Path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        return zf.read(name)


def _write_archive(
    path: Path,
    data_pkl: bytes,
    storages: dict[str, bytes] | None = None,
    *,
    byteorder: bytes = b"little",
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A zip laid out like torch.save's output, with a hand-made data.pkl."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", byteorder)
        for key, raw in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", raw)
        for name, raw in (extra or {}).items():
            zf.writestr(f"archive/{name}", raw)
        zf.writestr("archive/version", b"3\n")
    return path


# A tiny pickle assembler (protocol 2 opcodes) for data.pkl files torch would never write.
def _op_global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _op_str(text: str) -> bytes:
    raw = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _op_int(value: int) -> bytes:
    return pickle.BININT + struct.pack("<i", value)


def _op_tuple(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _op_tensor(
    key: str,
    numel: int,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    storage_type: str = "FloatStorage",
) -> bytes:
    """``_rebuild_tensor_v2(<persistent storage>, offset, size, stride, False, OrderedDict())``."""
    pid = _op_tuple(_op_str("storage"), _op_global("torch", storage_type), _op_str(key), _op_str("cpu"), _op_int(numel))
    args = _op_tuple(
        pid + pickle.BINPERSID,
        _op_int(offset),
        _op_tuple(*map(_op_int, size)),
        _op_tuple(*map(_op_int, stride)),
        pickle.NEWFALSE,
        _op_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE,
    )
    return _op_global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE


def _op_dict(**items: bytes) -> bytes:
    entries = b"".join(_op_str(key) + value for key, value in items.items())
    return pickle.EMPTY_DICT + pickle.MARK + entries + pickle.SETITEMS


def _program(body: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + body + pickle.STOP


_SIX_FLOATS = np.arange(6, dtype="<f4").tobytes()


# ------------------------------------------------------------------------------------------------------------
# Files written by torch.save


def test_bare_state_dict_all_dtypes(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    sd = {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=g),
        "head.weight": torch.randn(2, 5, generator=g, dtype=torch.float64),
        "half": torch.randn(3, 2, generator=g).half(),
        "bf16": torch.randn(7, generator=g).bfloat16(),
        "bn.num_batches_tracked": torch.tensor(17),  # 0-d int64 buffer
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "mask": torch.tensor([True, False, True]),
        "i32": torch.tensor([-3, 4], dtype=torch.int32),
        "i16": torch.tensor([-3, 4], dtype=torch.int16),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "u16": torch.tensor([1, 65535], dtype=torch.uint16),  # no storage class: _rebuild_tensor_v3
        "u32": torch.tensor([1, 2**32 - 1], dtype=torch.uint32),
        "c64": torch.tensor([1 + 2j, -3j], dtype=torch.complex64),
        "c64_conj": torch.tensor([1 + 2j, -3j], dtype=torch.complex64).conj(),  # lazy conj bit
    }
    path = _save(sd, tmp_path / "sd.pth")
    assert b"_rebuild_tensor_v3" in _data_pkl(path)

    got = load_torch_checkpoint(path)
    _assert_tree_equal(got, _torch_to_numpy(torch.load(path, weights_only=True)))
    assert got["bf16"].dtype == np.float32 and got["half"].dtype == np.float16
    assert got["bn.num_batches_tracked"].shape == () and got["bn.num_batches_tracked"].dtype == np.int64
    assert got["empty"].shape == (0, 3)
    np.testing.assert_array_equal(got["c64_conj"], np.array([1 - 2j, 3j], dtype=np.complex64))


def test_views_of_one_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {"full": t, "tail": t[2:], "col": t[:, 1], "T": t.T, "block": t[1:3, 2:5], "step": t[::2, ::3]}
    path = _save(views, tmp_path / "views.pth")
    with zipfile.ZipFile(path) as zf:
        assert sum("/data/" in n for n in zf.namelist()) == 1  # all six share one storage

    reads: list[str] = []
    original = torch_pth._Archive._read_entry

    def counting(self: torch_pth._Archive, key: str, nbytes: int) -> bytes:
        reads.append(key)
        return original(self, key, nbytes)

    monkeypatch.setattr(torch_pth._Archive, "_read_entry", counting)
    got = _assert_matches_torch(path)
    assert reads == ["0"]  # the shared storage is read once

    # Each value is its own copy: writing to one view leaves the others alone.
    assert isinstance(got, dict)
    got["full"][:] = -1
    np.testing.assert_array_equal(got["tail"], t[2:].numpy())


def _small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(16, 2)
    )


def _timm_like_checkpoint(with_ema: bool) -> dict[str, object]:
    """What timm's CheckpointSaver writes (argparse args, AdamW state after one step, optional EMA)."""
    model = _small_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 4, 4)).sum().backward()
    optimizer.step()
    ckpt: dict[str, object] = {
        "epoch": 3,
        "arch": "conv2former_n",
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "version": 2,
        "args": argparse.Namespace(lr=1e-3, model="conv2former_n", betas=(0.9, 0.999), aa=None),
        "metric": 81.5,
    }
    if with_ema:
        ema = copy.deepcopy(model)
        with torch.no_grad():
            for p in ema.parameters():
                p.mul_(0.5)
        ckpt["state_dict_ema"] = ema.state_dict()
    return ckpt


def test_timm_checkpoint_saver_file(tmp_path: Path) -> None:
    ckpt = _timm_like_checkpoint(with_ema=True)
    path = _save(ckpt, tmp_path / "checkpoint-3.pth.tar")

    # torch.load needs weights_only=False for the argparse.Namespace; our reader refuses nothing here.
    tree = _assert_matches_torch(path, weights_only=False)
    assert isinstance(tree, dict)
    args = tree["args"]
    assert isinstance(args, PickledNamespace) and args.lr == 1e-3 and args["model"] == "conv2former_n"

    want_plain = _torch_to_numpy(ckpt["state_dict"])
    want_ema = _torch_to_numpy(ckpt["state_dict_ema"])
    _assert_tree_equal(load_torch_checkpoint(path), want_plain)
    _assert_tree_equal(load_torch_checkpoint(path, weights="plain"), want_plain)
    _assert_tree_equal(load_torch_checkpoint(path, weights="ema"), want_ema)
    assert type(load_torch_checkpoint(path)) is dict


def test_ema_requested_but_missing(tmp_path: Path) -> None:
    path = _save(_timm_like_checkpoint(with_ema=False), tmp_path / "no_ema.pth")
    with pytest.raises(CheckpointError) as info:
        load_torch_checkpoint(path, weights="ema")
    message = str(info.value)
    assert str(path) in message and "state_dict_ema" in message
    assert "'epoch'" in message and "'optimizer'" in message  # lists what the file does have

    bare = _save(_small_model().state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="bare state dict"):
        load_torch_checkpoint(bare, weights="ema")


def test_model_key_and_module_prefix(tmp_path: Path) -> None:
    sd = _small_model().state_dict()
    want = _torch_to_numpy(sd)
    prefixed = OrderedDict((f"module.{k}", v) for k, v in sd.items())

    _assert_tree_equal(load_torch_checkpoint(_save({"model": sd}, tmp_path / "a.pth")), want)
    _assert_tree_equal(load_torch_checkpoint(_save(prefixed, tmp_path / "b.pth")), want)
    ema_only = _save({"model_ema": prefixed, "epoch": 1}, tmp_path / "c.pth")
    _assert_tree_equal(load_torch_checkpoint(ema_only, weights="ema"), want)
    _assert_tree_equal(load_torch_checkpoint(ema_only), want)  # auto falls back to the only weights there
    with pytest.raises(CheckpointError, match="'model_ema', 'epoch'"):
        load_torch_checkpoint(ema_only, weights="plain")

    # Only a prefix shared by every key is stripped.
    partial = {"module.a": torch.ones(1), "b": torch.zeros(1)}
    assert list(load_torch_checkpoint(_save(partial, tmp_path / "d.pth"))) == ["module.a", "b"]


def test_parameters_and_tensors_with_attributes(tmp_path: Path) -> None:
    plain = torch.nn.Parameter(torch.randn(3))
    with_state = torch.nn.Parameter(torch.randn(2, 2))
    with_state.tag = "decay"  # type: ignore[attr-defined]
    tensor_attr = torch.randn(4)
    tensor_attr.tag = "x"  # type: ignore[attr-defined]
    path = _save({"w": plain, "w_state": with_state, "t_attr": tensor_attr}, tmp_path / "params.pth")
    pkl = _data_pkl(path)
    for name in (b"_rebuild_parameter\n", b"_rebuild_parameter_with_state", b"_rebuild_from_type_v2"):
        assert name in pkl
    got = _assert_matches_torch(path, weights_only=False)
    assert isinstance(got, dict) and isinstance(got["w"], np.ndarray)


def test_inert_objects_in_the_tree(tmp_path: Path) -> None:
    obj = {
        "dtype": torch.float32,
        "device": torch.device("cuda", 1),
        "size": torch.Size([2, 3]),
        "layout": torch.strided,
        "bytes": b"\x00\xffab",
        "set": {1, 2},
        "frozen": frozenset({"a"}),
        "complex": 1 + 2j,
        "buffer": bytearray(b"xy"),
        "np_metric": np.float64(81.25),
        "np_count": np.int32(-7),
        "nested": [(1, None, "s"), {"k": 2.5}],
    }
    got = read_torch_file(_save(obj, tmp_path / "misc.pth"))
    assert isinstance(got, dict)
    assert got["dtype"] == TorchDtype("float32") and repr(got["dtype"]) == "torch.float32"
    assert got["device"] == "cuda:1" and got["size"] == (2, 3) and got["layout"] == "torch.strided"
    assert got["bytes"] == b"\x00\xffab" and got["set"] == {1, 2} and got["frozen"] == frozenset({"a"})
    assert got["complex"] == 1 + 2j and got["buffer"] == bytearray(b"xy")
    assert got["np_metric"] == 81.25 and got["np_count"] == -7
    assert got["nested"] == [(1, None, "s"), {"k": 2.5}]


def test_unsupported_dtype_is_a_clear_error(tmp_path: Path) -> None:
    path = _save({"f8": torch.zeros(2, dtype=torch.float8_e4m3fn)}, tmp_path / "f8.pth")
    with pytest.raises(CheckpointError, match="float8_e4m3fn have no NumPy equivalent"):
        read_torch_file(path)


def test_big_endian_file(tmp_path: Path) -> None:
    """A file from a big-endian machine: same pickle, byte-swapped storages, byteorder 'big'."""
    sd = {
        "f": torch.randn(2, 3),
        "i": torch.tensor([1, -2, 3 << 40]),
        "b": torch.randn(3).bfloat16(),
        "h": torch.randn(2).half(),
    }
    little = _save(sd, tmp_path / "little.pth")
    element_types = {"0": "<f4", "1": "<i8", "2": "<u2", "3": "<f2"}  # storage keys in order of first use
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            rest = info.filename.partition("/")[2]
            if rest == "byteorder":
                raw = b"big"
            elif rest.startswith("data/"):
                raw = np.frombuffer(raw, dtype=element_types[rest[5:]]).byteswap().tobytes()
            dst.writestr(info, raw)
    _assert_tree_equal(load_torch_checkpoint(big), load_torch_checkpoint(little))

    _write_archive(tmp_path / "odd.pth", _program(pickle.NONE), byteorder=b"middle")
    with pytest.raises(CheckpointError, match="unknown byteorder"):
        read_torch_file(tmp_path / "odd.pth")


# ------------------------------------------------------------------------------------------------------------
# Hostile files: nothing may run


class _RunsShell:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > marker",))


class _Evals:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (builtins.eval, ("__import__('os').system('echo pwned > marker')",))


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize(
    ("payload", "names"),
    [(_RunsShell(), ("os.system", "posix.system")), (_Evals(), ("builtins.eval",))],
)
def test_malicious_pickle_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, payload: object, names: tuple[str, ...], protocol: int
) -> None:
    monkeypatch.chdir(tmp_path)
    hostile = {"state_dict": {"w": 1.0}, "x": payload}
    path = _write_archive(tmp_path / "evil.pth", pickle.dumps(hostile, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_torch_checkpoint(path)
    assert any(repr(name) in str(info.value) for name in names), str(info.value)
    assert str(path) in str(info.value)
    assert not (tmp_path / "marker").exists()


def test_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    path = _save(torch.nn.Linear(2, 2), tmp_path / "module.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"torch\.nn\.modules\.linear\.Linear.*state_dict"):
        read_torch_file(path)


def test_build_cannot_alter_allow_listed_objects(tmp_path: Path) -> None:
    # BUILD (set state) on shared markers would change them for later loads; it must fail instead.
    for target in (_op_global("torch", "FloatStorage"), _op_global("torch._utils", "_rebuild_tensor_v2")):
        body = target + _op_dict(dtype_name=_op_str("float64")) + pickle.BUILD
        path = _write_archive(tmp_path / "build.pth", _program(body))
        with pytest.raises(CheckpointError):
            read_torch_file(path)
    assert torch_allowlist._ALLOWED["torch.FloatStorage"].dtype_name == "float32"  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------------------
# Damaged, legacy and foreign files


def test_handmade_tensor_loads(tmp_path: Path) -> None:
    # The assembler itself is right: the error tests below differ from this file in one detail each.
    body = _op_dict(t=_op_tensor("0", 6, 1, (2, 2), (1, 2)))
    got = load_torch_checkpoint(_write_archive(tmp_path / "ok.pth", _program(body), {"0": _SIX_FLOATS}))
    np.testing.assert_array_equal(got["t"], np.array([[1, 3], [2, 4]], dtype=np.float32))


@pytest.mark.parametrize(
    ("tensor", "storages", "match"),
    [
        (_op_tensor("0", 6, 4, (3,), (1,)), {"0": _SIX_FLOATS}, "reaches element 6"),
        (_op_tensor("0", 6, 0, (2, 3), (4, 1)), {"0": _SIX_FLOATS}, "reaches element 6"),
        (_op_tensor("0", 6, -1, (2,), (1,)), {"0": _SIX_FLOATS}, "negative"),
        (_op_tensor("0", 6, 0, (2,), (1, 1)), {"0": _SIX_FLOATS}, "differ in length"),
        (_op_tensor("1", 6, 0, (2,), (1,)), {"0": _SIX_FLOATS}, "'archive/data/1'.*missing"),
        (_op_tensor("0", 8, 0, (2,), (1,)), {"0": _SIX_FLOATS}, "holds 24 bytes, but data.pkl declares 32"),
        (_op_tensor("0", 6, 0, (2,), (1,), "QInt8Storage"), {"0": bytes(6)}, "qint8 have no NumPy"),
    ],
)
def test_inconsistent_tensor_records(tmp_path: Path, tensor: bytes, storages: dict[str, bytes], match: str) -> None:
    path = _write_archive(tmp_path / "bad.pth", _program(_op_dict(t=tensor)), storages)
    with pytest.raises(CheckpointError, match=match) as info:
        read_torch_file(path)
    assert not isinstance(info.value, UnsafeCheckpointError)


def test_bad_persistent_id(tmp_path: Path) -> None:
    body = _op_tuple(_op_str("storage"), _op_str("FloatStorage")) + pickle.BINPERSID
    with pytest.raises(CheckpointError, match="persistent id"):
        read_torch_file(_write_archive(tmp_path / "pid.pth", _program(body)))


def test_non_tensor_value_in_state_dict(tmp_path: Path) -> None:
    path = _save({"w": torch.ones(2), "note": "hello"}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="'note' holds a str"):
        load_torch_checkpoint(path)
    path = _save({"state_dict": {"w": torch.ones(2), "n": 3}}, tmp_path / "mixed2.pth")
    with pytest.raises(CheckpointError, match=r"key 'state_dict'.*'n' holds a int"):
        load_torch_checkpoint(path)
    with pytest.raises(CheckpointError, match="found a list"):
        load_torch_checkpoint(_save([torch.ones(1)], tmp_path / "list.pth"))


def test_legacy_format_gives_conversion_hint(tmp_path: Path) -> None:
    path = _save({"w": torch.ones(2)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy") as info:
        load_torch_checkpoint(path)
    assert "torch.save(torch.load(p, weights_only=True), p2)" in str(info.value)


def test_truncated_random_empty_and_corrupt_files(tmp_path: Path) -> None:
    good = _save({"w": torch.arange(64, dtype=torch.float32)}, tmp_path / "good.pth").read_bytes()
    cases = {
        "truncated.pth": (good[: len(good) // 2], "corrupt or truncated"),
        "random.pth": (np.random.default_rng(0).bytes(4096), "not a torch.save zip archive"),
        "empty.pth": (b"", "empty"),
        "plain_pickle.pth": (pickle.dumps({"w": 1}, protocol=2), "plain pickle"),
    }
    # Flip one byte of the stored tensor: the zip CRC check catches it.
    at = good.index(np.arange(64, dtype="<f4").tobytes()) + 17
    cases["crc.pth"] = (good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :], "corrupt")
    for name, (raw, match) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(CheckpointError, match=match) as info:
            load_torch_checkpoint(tmp_path / name)
        assert name in str(info.value)


def test_not_a_checkpoint_archive(tmp_path: Path) -> None:
    no_pickle = tmp_path / "other.zip"
    with zipfile.ZipFile(no_pickle, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match=r"no '<folder>/data\.pkl'"):
        read_torch_file(no_pickle)
    script = _write_archive(
        tmp_path / "scripted.pt", _program(pickle.NONE), extra={"constants.pkl": b"", "code/m.py": b""}
    )
    with pytest.raises(CheckpointError, match="TorchScript"):
        read_torch_file(script)
    bad_pickle = _write_archive(tmp_path / "garbage.pth", b"\x80\x02garbage")
    with pytest.raises(CheckpointError, match=r"malformed data\.pkl"):
        read_torch_file(bad_pickle)


def test_invalid_weights_argument(tmp_path: Path) -> None:
    path = _save({"w": torch.ones(1)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="weights must be"):
        load_torch_checkpoint(path, weights="best")  # type: ignore[arg-type]


def test_accepts_str_paths_and_any_folder_name(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    path = tmp_path / "renamed.pth"
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr("my-model/" + info.filename.partition("/")[2], src.read(info))
    np.testing.assert_array_equal(load_torch_checkpoint(str(path))["w"], np.ones(2, dtype=np.float32))
