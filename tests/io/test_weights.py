"""Tests for :mod:`c2f_numpy.io.weights` (state dicts as .npz / .safetensors) and :mod:`c2f_numpy.io.atomic`.

Round trips must be bitwise (dtype, shape, bytes: NaN payloads and -0.0 included). Files written here are read
back with the plain third-party readers (``np.load(allow_pickle=False)``, ``safetensors.torch.load_file``),
and files those libraries write are read here. Damaged files must give a :class:`WeightsFileError` naming the
file; a failed save must leave the previous file and its directory exactly as they were.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
import safetensors
import safetensors.numpy
import safetensors.torch
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from c2f_numpy.io import (
    ENTRIES_KEY,
    METADATA_KEY,
    CheckpointError,
    WeightsFileError,
    atomic_open,
    atomic_write,
    load_weights,
    save_weights,
)
from c2f_numpy.io import atomic as atomic_module

FORMATS = ["npz", "safetensors"]
METADATA = {"variant": "conv2former_n", "kernel_size": "7", "dtype": "float32", "note": 'ünïcode \0 "quoted"'}

# ------------------------------------------------------------------------------------------------------------
# Helpers


def _float_specials(dtype: type[np.floating[Any]], bits: type[np.unsignedinteger[Any]]) -> np.ndarray:
    """NaN with a payload, -0.0, +-inf, the smallest subnormal: values a lossy round trip would change."""
    info = np.finfo(dtype)
    values = np.array([np.nan, -0.0, np.inf, -np.inf, info.smallest_subnormal, info.max, 1.0 / 3.0], dtype=dtype)
    values.view(bits)[0] |= 1  # a NaN payload survives only a bitwise copy
    return values


def _state_dict() -> dict[str, np.ndarray]:
    """A Conv2Former-like state dict: mixed dtypes, 0-d and empty arrays, awkward memory layouts."""
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    conv.reshape(-1)[:7] = _float_specials(np.float32, np.uint32)
    return {
        "stem.0.weight": conv,
        "stem.0.bias": _float_specials(np.float64, np.uint64),
        "stages.0.1.attn.att.2.weight": _float_specials(np.float16, np.uint16).reshape(7, 1),
        "downsample_layers.0.2.running_mean": rng.standard_normal(5).astype(">f4"),  # big-endian input
        "downsample_layers.0.2.num_batches_tracked": np.array(123456789012, dtype=np.int64),  # 0-d
        "stages.0.1.gamma": np.array(0.5, dtype=np.float32),  # 0-d float
        "stages.1.0.mlp.fc1.weight": rng.standard_normal((3, 6)).astype(np.float32).T,  # F-contiguous
        "stages.1.0.mlp.fc2.weight": rng.standard_normal((8, 8))[::-2, 1::3],  # negative and step strides
        "mask": np.array([True, False, True]),
        "codes.int8": np.array([-128, 0, 127], dtype=np.int8),
        "codes.uint8": np.array([0, 255], dtype=np.uint8),
        "codes.int32": np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
        "codes.uint64": np.array([2**64 - 1], dtype=np.uint64),
        "phase": np.array([1 + 2j, -0.0 - 1j], dtype=np.complex64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def _expected(array: np.ndarray) -> np.ndarray:
    """What a saved array comes back as: same values, native byte order, C order."""
    return np.asarray(array, dtype=array.dtype.newbyteorder("="), order="C")


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key, array in want.items():
        expected = _expected(array)
        g = got[key]
        assert isinstance(g, np.ndarray), key
        assert g.dtype == expected.dtype, f"{key}: {g.dtype} != {expected.dtype}"
        assert g.shape == expected.shape, f"{key}: {g.shape} != {expected.shape}"
        assert g.tobytes() == expected.tobytes(), key
        assert g.flags.c_contiguous and g.flags.writeable, key


def _listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def _npy_bytes(array: np.ndarray, *, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def _write_zip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


_UNPICKLED: list[str] = []


def _mark_unpickled() -> str:
    _UNPICKLED.append("ran")
    return "ran"


class _Tripwire:
    """Unpickling this calls :func:`_mark_unpickled`: proof that a loader ran code from the file."""

    def __reduce__(self) -> tuple[Callable[[], str], tuple[()]]:
        return _mark_unpickled, ()


# ------------------------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_bitwise(tmp_path: Path, fmt: str) -> None:
    state = _state_dict()
    path = save_weights(tmp_path / f"model.{fmt}", state, METADATA)
    assert path == tmp_path / f"model.{fmt}"
    got, metadata = load_weights(path)
    _assert_same(got, state)
    assert metadata == METADATA
    assert _listing(tmp_path) == [f"model.{fmt}"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_without_metadata(tmp_path: Path, fmt: str) -> None:
    state = {"w": np.ones((2, 2), dtype=np.float32)}
    for metadata in (None, {}):
        path = save_weights(tmp_path / f"m.{fmt}", state, metadata)
        got, meta = load_weights(path)
        _assert_same(got, state)
        assert meta == {}
    # The only metadata stored is the entry list the reader checks (and does not return).
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as npz:
            assert npz.files == [METADATA_KEY, "w"]
            assert json.loads(str(npz[METADATA_KEY])) == {ENTRIES_KEY: '["w"]'}
    else:
        with safetensors.safe_open(path, framework="np") as f:
            assert f.metadata() == {ENTRIES_KEY: '["w"]'}


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_state_dict(tmp_path: Path, fmt: str) -> None:
    path = save_weights(tmp_path / f"m.{fmt}", {}, {"a": "b"})
    assert load_weights(path) == ({}, {"a": "b"})


def test_npz_keeps_key_order_and_safetensors_sorts(tmp_path: Path) -> None:
    state = {name: np.array(i, dtype=np.int64) for i, name in enumerate(["z", "stages.10.w", "a", "stages.2.w"])}
    got_npz, _ = load_weights(save_weights(tmp_path / "m.npz", state))
    assert list(got_npz) == list(state)
    got_st, _ = load_weights(save_weights(tmp_path / "m.safetensors", state))
    assert list(got_st) == sorted(state)


@pytest.mark.parametrize("fmt", FORMATS)
def test_names_that_clash_with_savez_arguments(tmp_path: Path, fmt: str) -> None:
    # np.savez(path, **arrays) would take these as its own arguments.
    state = {name: np.arange(3, dtype=np.int64) + i for i, name in enumerate(["file", "allow_pickle", "args"])}
    state["x.npy"] = np.zeros(1, dtype=np.uint8)  # alone (without "x") it is unambiguous for np.load
    state["a/b c.ü"] = np.ones(1, dtype=np.float32)
    got, _ = load_weights(save_weights(tmp_path / f"m.{fmt}", state))
    _assert_same(got, state)


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    state = {"w": np.ones(3, dtype=np.float32)}
    for name in ("M.NPZ", "M.SafeTensors"):
        got, _ = load_weights(save_weights(tmp_path / name, state))
        _assert_same(got, state)


def test_compressed_npz(tmp_path: Path) -> None:
    state = {"zeros": np.zeros((256, 256), dtype=np.float32), "n": np.array(3, dtype=np.int64)}
    plain = save_weights(tmp_path / "plain.npz", state)
    packed = save_weights(tmp_path / "packed.npz", state, {"k": "v"}, compress=True)
    assert packed.stat().st_size < plain.stat().st_size / 10
    with zipfile.ZipFile(packed) as zf:
        assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_DEFLATED}
    got, meta = load_weights(packed)
    _assert_same(got, state)
    assert meta == {"k": "v"}
    stored = json.dumps({ENTRIES_KEY: json.dumps(list(state)), "k": "v"}, sort_keys=True)
    _assert_same(dict(np.load(packed, allow_pickle=False)), {**state, METADATA_KEY: np.array(stored)})


def test_npz_output_is_reproducible(tmp_path: Path) -> None:
    # (safetensors is not: the package writes its metadata from a hash map, in varying order.)
    state = _state_dict()
    first = save_weights(tmp_path / "a.npz", state, METADATA).read_bytes()
    second = save_weights(tmp_path / "b.npz", state, METADATA).read_bytes()
    assert first == second
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


_DTYPES = [np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
_DTYPES += [np.float16, np.float32, np.float64, np.complex64]


@given(
    arrays=st.lists(
        hnp.arrays(
            dtype=st.sampled_from(_DTYPES).map(np.dtype),
            shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4),
            elements={"allow_nan": True, "allow_infinity": True, "allow_subnormal": True},
        ),
        max_size=4,
    ),
    fmt=st.sampled_from(FORMATS),
    metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
def test_round_trip_property(arrays: list[np.ndarray], fmt: str, metadata: dict[str, str]) -> None:
    state = {f"layer.{i}.weight": a for i, a in enumerate(arrays)}
    with tempfile.TemporaryDirectory() as tmp:
        got, meta = load_weights(save_weights(Path(tmp) / f"m.{fmt}", state, metadata))
    _assert_same(got, state)
    assert meta == metadata


# ------------------------------------------------------------------------------------------------------------
# Interoperability with the reference readers and writers


def test_npz_loads_with_plain_numpy(tmp_path: Path) -> None:
    state = _state_dict()
    path = save_weights(tmp_path / "m.npz", state, METADATA)
    with np.load(path, allow_pickle=False) as npz:
        assert npz.files == [METADATA_KEY, *state]
        stored = npz[METADATA_KEY]
        assert stored.shape == () and stored.dtype.kind == "U"
        assert json.loads(str(stored)) == {**METADATA, ENTRIES_KEY: json.dumps(list(state))}
        _assert_same({key: npz[key] for key in state}, state)


def test_safetensors_loads_with_safetensors_torch(tmp_path: Path) -> None:
    state = _state_dict()
    path = save_weights(tmp_path / "m.safetensors", state, METADATA)
    tensors = safetensors.torch.load_file(path)
    assert sorted(tensors) == sorted(state)
    for key, array in state.items():
        tensor = tensors[key]
        assert tuple(tensor.shape) == array.shape, key
        assert tensor.numpy().dtype == _expected(array).dtype, key
        assert tensor.numpy().tobytes() == _expected(array).tobytes(), key
    with safetensors.safe_open(path, framework="pt") as f:
        assert f.metadata() == {**METADATA, ENTRIES_KEY: json.dumps(list(state))}


def test_reads_safetensors_written_by_torch(tmp_path: Path) -> None:
    tensors = {
        "w": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
        "n": torch.tensor(7, dtype=torch.int64),
        "bf": torch.tensor([[1.5, -2.25], [float("nan"), 3.0e38]], dtype=torch.bfloat16),
    }
    path = tmp_path / "t.safetensors"
    safetensors.torch.save_file(tensors, path, metadata={"format": "pt"})
    got, meta = load_weights(path)
    assert meta == {"format": "pt"}
    assert list(got) == ["bf", "n", "w"]
    np.testing.assert_array_equal(got["w"], tensors["w"].numpy())
    assert got["n"].shape == () and got["n"].dtype == np.int64 and got["n"] == 7
    # bfloat16 has no NumPy dtype: widened exactly to float32, as the .pth reader does.
    assert got["bf"].dtype == np.float32 and got["bf"].shape == (2, 2)
    assert got["bf"].tobytes() == tensors["bf"].float().numpy().tobytes()


def test_safetensors_dtype_numpy_lacks_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "f8.safetensors"
    safetensors.torch.save_file({"q": torch.zeros(2, dtype=torch.float8_e4m3fn)}, path)
    with pytest.raises(WeightsFileError, match=r"f8\.safetensors: tensor 'q' has dtype F8_E4M3"):
        load_weights(path)


def test_reads_npz_written_by_numpy(tmp_path: Path) -> None:
    state = {"a": np.arange(6.0).reshape(2, 3), "b": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))}
    np.savez_compressed(tmp_path / "np.npz", **state)
    got, meta = load_weights(tmp_path / "np.npz")
    _assert_same(got, state)
    assert meta == {}


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin"])
def test_torch_checkpoints_go_through_the_pth_reader(tmp_path: Path, suffix: str) -> None:
    state = {"w": torch.randn(2, 3), "num_batches_tracked": torch.tensor(5)}
    path = tmp_path / f"ckpt{suffix}"
    torch.save({"state_dict": state, "epoch": 3}, path)
    got, meta = load_weights(path)
    assert meta == {}
    _assert_same(got, {k: v.numpy() for k, v in state.items()})


def test_garbage_torch_checkpoint_raises_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"bad\.pth"):
        load_weights(path)


# ------------------------------------------------------------------------------------------------------------
# What save_weights refuses (before any file is created)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("state", "metadata", "error", "match"),
    [
        ({METADATA_KEY: np.zeros(1)}, None, ValueError, "reserved"),
        ({"w": np.array([{"a": 1}], dtype=object)}, None, TypeError, r"dtype object.*pickle"),
        ({"w": np.array(["text"])}, None, TypeError, "dtype <U4"),
        ({"w": np.array([1], dtype="datetime64[s]")}, None, TypeError, "datetime64"),
        ({"w": np.zeros(1, dtype=[("x", "f4")])}, None, TypeError, "only bool, integer"),
        ({1: np.zeros(1)}, None, TypeError, "keys must be str"),
        ({"w": [1.0, 2.0]}, None, TypeError, "must be a numpy.ndarray, got list"),
        ({"w": 1.5}, None, TypeError, "must be a numpy.ndarray, got float"),
        ({"w": torch.zeros(2)}, None, TypeError, r"got Tensor \(convert torch tensors"),
        ({"w": np.ma.masked_array([1.0, 2.0], mask=[0, 1])}, None, TypeError, "MaskedArray"),
        ({"a\0b": np.zeros(1)}, None, ValueError, "NUL"),
        ({"w": np.zeros(1)}, {"k": 7}, TypeError, "metadata must map str to str"),
        ({"w": np.zeros(1)}, {7: "v"}, TypeError, "metadata must map str to str"),
        ({"w": np.zeros(1)}, [("k", "v")], TypeError, "metadata must be a mapping"),
        ([("w", np.zeros(1))], None, TypeError, "state_dict must be a mapping"),
    ],
)
def test_save_refuses(tmp_path: Path, fmt: str, state: Any, metadata: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        save_weights(tmp_path / f"m.{fmt}", state, metadata)
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("dtype", [np.complex128, np.longdouble])
def test_safetensors_refuses_dtypes_it_cannot_store(tmp_path: Path, dtype: type) -> None:
    state = {"w": np.ones(2, dtype=dtype)}
    with pytest.raises(TypeError, match="safetensors cannot store"):
        save_weights(tmp_path / "m.safetensors", state)
    assert _listing(tmp_path) == []
    got, _ = load_weights(save_weights(tmp_path / "m.npz", state))  # npz holds any numeric dtype
    _assert_same(got, state)


def test_npz_refuses_names_np_load_would_confuse(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"both 'x' and 'x\.npy'"):
        save_weights(tmp_path / "m.npz", {"x": np.zeros(1), "x.npy": np.ones(1)})
    got, _ = load_weights(save_weights(tmp_path / "m.safetensors", {"x": np.zeros(1), "x.npy": np.ones(1)}))
    assert sorted(got) == ["x", "x.npy"]


@pytest.mark.parametrize(
    ("name", "match"),
    [("m.npy", "use a .npz or .safetensors"), ("m", "use a .npz"), ("m.pth", "can be read but not written")],
)
def test_save_refuses_unknown_suffix(tmp_path: Path, name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        save_weights(tmp_path / name, {"w": np.zeros(1)})
    assert _listing(tmp_path) == []


def test_safetensors_cannot_be_compressed(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be compressed"):
        save_weights(tmp_path / "m.safetensors", {"w": np.zeros(1)}, compress=True)


def test_save_into_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError) as info:
        save_weights(missing / "m.npz", {"w": np.zeros(1)})
    assert info.value.filename == str(missing)
    assert _listing(tmp_path) == []


# ------------------------------------------------------------------------------------------------------------
# What load_weights refuses


def test_load_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "weights.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(WeightsFileError, match=r"weights\.npy: unknown weights file suffix '\.npy'") as info:
        load_weights(path)
    assert isinstance(info.value, CheckpointError)


@pytest.mark.parametrize("name", ["gone.npz", "gone.safetensors", "gone.pth"])
def test_load_missing_file(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError, match=name) as info:
        load_weights(tmp_path / name)
    assert info.value.filename == str(tmp_path / name)


def _good_npz() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return save_weights(Path(tmp) / "good.npz", {"w": np.arange(64, dtype=np.float32)}, {"k": "v"}).read_bytes()


def _good_safetensors() -> bytes:
    return safetensors.numpy.save({"w": np.arange(64, dtype=np.float32)}, metadata={"k": "v"})


def _flip_npz_data_byte(data: bytes) -> bytes:
    """Flip one byte of the last array's data: the zip CRC no longer matches."""
    out = bytearray(data)
    out[data.rindex(b"\x93NUMPY") + 140] ^= 0x01
    return bytes(out)


def _lying_safetensors_header(data: bytes) -> bytes:
    """Claim a larger header than the file holds."""
    return (10**6).to_bytes(8, "little") + data[8:]


@pytest.mark.parametrize(
    ("suffix", "content", "match"),
    [
        (".npz", b"", "file is empty"),
        (".npz", b"this is not a zip archive", "not an .npz"),
        (".npz", _good_npz()[:-10], "corrupt or truncated"),
        (".npz", _good_npz()[: len(_good_npz()) // 2], "corrupt or truncated"),
        (".npz", _flip_npz_data_byte(_good_npz()), "Bad CRC-32"),
        (".npz", _npy_bytes(np.zeros(3)), "single-array .npy file"),
        (".npz", _good_safetensors(), "not an .npz"),
        (".safetensors", b"", "not a readable safetensors file"),
        (".safetensors", b"garbage" * 10, "not a readable safetensors file"),
        (".safetensors", _good_safetensors()[:-1], "not a readable safetensors file"),
        (".safetensors", _good_safetensors()[:20], "not a readable safetensors file"),
        (".safetensors", _lying_safetensors_header(_good_safetensors()), "not a readable safetensors file"),
        (".safetensors", _good_npz(), "not a readable safetensors file"),
    ],
)
def test_load_corrupt_file(tmp_path: Path, suffix: str, content: bytes, match: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(content)
    with pytest.raises(WeightsFileError, match=match) as info:
        load_weights(path)
    assert str(path) in str(info.value)


def test_load_truncated_at_every_length(tmp_path: Path) -> None:
    """Whatever the cut, a truncated file fails cleanly (never with an unrelated exception)."""
    for fmt, good in (("npz", _good_npz()), ("safetensors", _good_safetensors())):
        path = tmp_path / f"cut.{fmt}"
        for length in range(0, len(good), 7):
            path.write_bytes(good[:length])
            with pytest.raises(WeightsFileError, match="cut"):
                load_weights(path)


def test_load_refuses_pickled_npz_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    np.savez(path, w=np.zeros(2), evil=np.array([_Tripwire()], dtype=object))
    with pytest.raises(WeightsFileError, match=r"pickled\.npz: entry 'evil\.npy' holds a Python object array"):
        load_weights(path)
    assert _UNPICKLED == []
    # Sanity check: the tripwire does fire under a pickle-enabled load.
    np.load(path, allow_pickle=True)["evil"]
    assert _UNPICKLED == ["ran"]
    _UNPICKLED.clear()


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([("w.npy", _npy_bytes(np.array(["text"])))], r"'w\.npy' has dtype <U4; weights must be numeric"),
        ([("w.npy", _npy_bytes(np.zeros(1))), ("notes.txt", b"hi")], r"'notes\.txt' is not a \.npy array"),
        ([("w.npy", _npy_bytes(np.zeros(2))[:-3])], "holds .* bytes, but its header"),
        ([("w.npy", _npy_bytes(np.zeros(2)) + b"extra")], "holds .* bytes, but its header"),
        ([("w.npy", b"\x93NUMPY\x09\x00rest")], r"\.npy format version \(9, 0\)"),
        ([("w.npy", b"\x93NUMPY\x01\x00\x0e\x00{'descr': 1}\n")], "corrupt or truncated"),
        ([("w.npy", b"not npy at all")], "corrupt or truncated"),
        ([("__metadata__.npy", _npy_bytes(np.array("{not json")))], "not valid JSON"),
        ([("__metadata__.npy", _npy_bytes(np.array('["a"]')))], "JSON object of strings"),
        ([("__metadata__.npy", _npy_bytes(np.array('{"a": 1}')))], "JSON object of strings"),
        ([("__metadata__.npy", _npy_bytes(np.array(["{}"])))], "must be a 0-d unicode array"),
        ([("__metadata__.npy", _npy_bytes(np.zeros(())))], "must be a 0-d unicode array"),
    ],
)
def test_load_malformed_npz(tmp_path: Path, entries: list[tuple[str, bytes]], match: str) -> None:
    path = _write_zip(tmp_path / "bad.npz", entries)
    with pytest.raises(WeightsFileError, match=match):
        load_weights(path)


def test_load_npy_format_version_2(tmp_path: Path) -> None:
    # np.save switches to version 2.0 when a header exceeds 64 KiB; any numeric array may carry one.
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.arange(5, dtype=np.int16), version=(2, 0))
    got, _ = load_weights(_write_zip(tmp_path / "v2.npz", [("w.npy", buf.getvalue())]))
    _assert_same(got, {"w": np.arange(5, dtype=np.int16)})


def test_load_refuses_npy_header_larger_than_its_data(tmp_path: Path) -> None:
    """A header announcing 8 GB over 8 bytes of data is refused before anything is allocated."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
    path = _write_zip(tmp_path / "huge.npz", [("w.npy", buf.getvalue() + bytes(8))])
    with pytest.raises(WeightsFileError, match=r"huge\.npz: entry 'w\.npy' holds \d+ bytes"):
        load_weights(path)


def test_load_refuses_duplicate_npz_entries(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = _write_zip(tmp_path / "dup.npz", [("w.npy", _npy_bytes(np.zeros(1))), ("w.npy", _npy_bytes(np.ones(1)))])
    with pytest.raises(WeightsFileError, match=r"'w\.npy' twice"):
        load_weights(path)


# ------------------------------------------------------------------------------------------------------------
# Atomic replacement


@pytest.mark.parametrize("fmt", FORMATS)
def test_save_over_existing_file_replaces_it(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"m.{fmt}"
    save_weights(path, {"old": np.zeros(1000, dtype=np.float64)}, {"v": "1"})
    old_inode = path.stat().st_ino
    new = {"new": np.ones(3, dtype=np.float32)}
    save_weights(path, new, {"v": "2"})
    got, meta = load_weights(path)
    _assert_same(got, new)
    assert meta == {"v": "2"}
    assert path.stat().st_ino != old_inode  # a new file renamed into place, not the old one rewritten
    assert _listing(tmp_path) == [f"m.{fmt}"]


def test_failure_midway_through_npz_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_weights(tmp_path / "m.npz", {"w": np.zeros(4)}, {"v": "old"})
    before = path.read_bytes()
    real_write_array = np.lib.format.write_array
    calls: list[int] = []

    def write_then_fail(fp: BinaryIO, array: np.ndarray, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 3:  # metadata and one array are written; the third entry dies halfway
            whole = io.BytesIO()
            real_write_array(whole, array)
            fp.write(whole.getvalue()[:50])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_array(fp, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_weights(path, {"a": np.ones(10_000), "b": np.ones(10_000)}, {"v": "new"})
    assert len(calls) == 3
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.npz"]
    assert load_weights(path)[1] == {"v": "old"}


def test_failure_before_commit_leaves_old_safetensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_weights(tmp_path / "m.safetensors", {"w": np.zeros(4)})
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        save_weights(path, {"w": np.ones(4)})
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.safetensors"]


def test_failed_rename_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_weights(tmp_path / "m.npz", {"w": np.zeros(4)})
    before = path.read_bytes()

    def failing_replace(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        save_weights(path, {"w": np.ones(4)})
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.npz"]


def test_interrupt_inside_writer_leaves_old_file(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"old content")

    def write_then_interrupt(fh: BinaryIO) -> None:
        fh.write(b"new partial content" * 1000)
        fh.flush()
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, write_then_interrupt)
    assert path.read_bytes() == b"old content"
    assert _listing(tmp_path) == ["data.bin"]


def test_atomic_open_and_atomic_write(tmp_path: Path) -> None:
    with atomic_open(tmp_path / "a.bin") as fh:
        fh.write(b"hello")
        fh.seek(0)
        fh.write(b"J")
    assert (tmp_path / "a.bin").read_bytes() == b"Jello"
    assert atomic_write(str(tmp_path / "b.bin"), lambda fh: fh.write(b"bytes")) == tmp_path / "b.bin"
    assert (tmp_path / "b.bin").read_bytes() == b"bytes"
    with atomic_open(tmp_path / "a.bin"):
        pass  # an empty block commits an empty file
    assert (tmp_path / "a.bin").read_bytes() == b""
    assert _listing(tmp_path) == ["a.bin", "b.bin"]


def test_temporary_file_is_hidden_next_to_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def recording_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    long_name = "w" * 240 + ".npz"  # the temporary name must stay under the 255-byte limit
    save_weights(tmp_path / long_name, {"w": np.zeros(1)})
    [(src, dst)] = renames
    assert dst == tmp_path / long_name and src.parent == tmp_path
    assert src.name.startswith(".") and src.name.endswith(".tmp")
    assert _listing(tmp_path) == [long_name]


def test_fsyncs_file_then_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def recording_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    atomic_write(tmp_path / "x", lambda fh: fh.write(b"x"))
    expected = ["fsync file", "replace"] + ([] if os.name == "nt" else ["fsync dir"])
    assert events == expected
    events.clear()
    atomic_write(tmp_path / "x", lambda fh: fh.write(b"y"), fsync=False)
    assert events == ["replace"]


@pytest.mark.skipif(os.name == "nt", reason="directory fsync is POSIX-only")
def test_directory_fsync_unsupported_is_tolerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def fsync_no_directories(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_no_directories)
    atomic_write(tmp_path / "x", lambda fh: fh.write(b"x"))
    assert (tmp_path / "x").read_bytes() == b"x"


@pytest.mark.skipif(os.name == "nt", reason="directory fsync is POSIX-only")
def test_directory_fsync_failure_is_raised_after_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def fsync_directory_fails(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_directory_fails)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write(tmp_path / "x", lambda fh: fh.write(b"x"))
    assert (tmp_path / "x").read_bytes() == b"x"  # already renamed: only durability is in doubt
    assert _listing(tmp_path) == ["x"]


def test_temporary_name_collision_leaves_other_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stranger = tmp_path / ".x.000000000000.tmp"  # e.g. another writer's temporary file
    stranger.write_bytes(b"not ours")
    tokens = iter(["000000000000", "111111111111"])
    monkeypatch.setattr(atomic_module.secrets, "token_hex", lambda n: next(tokens))
    atomic_write(tmp_path / "x", lambda fh: fh.write(b"ours"))
    assert stranger.read_bytes() == b"not ours"
    assert (tmp_path / "x").read_bytes() == b"ours"
    assert _listing(tmp_path) == [stranger.name, "x"]


def test_target_problems_are_reported_before_writing(tmp_path: Path) -> None:
    called: list[int] = []
    with pytest.raises(FileNotFoundError, match="no such directory") as missing:
        atomic_write(tmp_path / "nope" / "x", lambda fh: called.append(1))
    assert missing.value.filename == str(tmp_path / "nope")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError) as not_dir:
        atomic_write(tmp_path / "file" / "x", lambda fh: called.append(1))
    assert not_dir.value.filename == str(tmp_path / "file")
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "dir", lambda fh: called.append(1))
    assert called == []
    assert _listing(tmp_path) == ["dir", "file"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_permissions_follow_umask_or_replaced_file(tmp_path: Path) -> None:
    old_umask = os.umask(0o027)
    try:
        new = atomic_write(tmp_path / "new", lambda fh: fh.write(b"1"))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o640  # 0o666 minus the umask, not mkstemp's 0o600
    existing = tmp_path / "existing"
    existing.write_bytes(b"old")
    existing.chmod(0o604)
    atomic_write(existing, lambda fh: fh.write(b"new"))
    assert stat.S_IMODE(existing.stat().st_mode) == 0o604
    assert existing.read_bytes() == b"new"


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_symlink_is_replaced_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"real")
    link = tmp_path / "link"
    link.symlink_to(real)
    atomic_write(link, lambda fh: fh.write(b"new"))
    assert not link.is_symlink() and link.read_bytes() == b"new"
    assert real.read_bytes() == b"real"
