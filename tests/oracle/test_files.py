"""Unreadable and mismatched dump files: clear errors, clear report lines; the tolerance rule of compare."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from c2f_numpy.oracle import CompareError, DumpFileError, compare, load_dump, save_dump

Tensors = dict[str, np.ndarray]


def small_dump() -> Tensors:
    rng = np.random.default_rng(0)
    return {
        "input": rng.standard_normal((1, 3, 4, 6)),
        "stages.0.0.attn.norm.out": rng.standard_normal((1, 8, 2, 3)),
        "stages.0.0.attn.out": rng.standard_normal((1, 8, 2, 3)),
        "logits": rng.standard_normal((1, 5)),
        "input.grad": rng.standard_normal((1, 3, 4, 6)),
        "pred.weight.grad": rng.standard_normal((5, 8)),
    }


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return save_dump(tmp_path / "good.npz", small_dump(), {"variant": "test"})


# ------------------------------------------------------------------------------------------------------------
# Unreadable files


def test_truncated_npz(good: Path, tmp_path: Path) -> None:
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DumpFileError, match=r"truncated\.npz: .*(corrupt or truncated)"):
        load_dump(bad)


def test_corrupted_bytes_in_an_npz(good: Path, tmp_path: Path) -> None:
    data = bytearray(good.read_bytes())
    data[400:420] = b"\xff" * 20  # inside the first array's bytes: the CRC check fails
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DumpFileError, match=r"flipped\.npz: corrupt or truncated"):
        load_dump(bad)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.npz", b"", "the file is empty"),
        ("text.npz", b"input,logits\n1,2\n", r"not an \.npz \(zip\) archive"),
        ("header.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", "not a readable safetensors file"),
        ("empty.safetensors", b"", "not a readable safetensors file"),
    ],
)
def test_wrong_format(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DumpFileError, match=message):
        load_dump(path)


def test_a_single_npy_array_renamed_npz(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(DumpFileError, match=r"single-array \.npy file"):
        load_dump(path)


def test_a_pickled_object_array_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.npz"
    np.savez(path, input=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DumpFileError, match="refusing to unpickle"):
        load_dump(path)


def test_no_arrays_and_non_numeric_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "nothing.npz")
    with pytest.raises(DumpFileError, match="holds no arrays"):
        load_dump(tmp_path / "nothing.npz")
    np.savez(tmp_path / "text.npz", input=np.array(["a", "b"]))
    with pytest.raises(DumpFileError, match="numeric"):
        load_dump(tmp_path / "text.npz")


@pytest.mark.parametrize("name", ["weights.pth", "dump.npy", "dump"])
def test_suffixes_other_than_npz_and_safetensors(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"PK")
    with pytest.raises(DumpFileError, match=r"a dump is a \.npz or \.safetensors file"):
        load_dump(tmp_path / name)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DumpFileError, match="no such file"):
        load_dump(tmp_path / "absent.npz")
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(DumpFileError, match="is a directory"):
        load_dump(tmp_path / "dir.npz")


# ------------------------------------------------------------------------------------------------------------
# Mismatched files: report lines


def test_shape_mismatch_is_a_divergence_with_a_layout_hint(good: Path) -> None:
    b = small_dump()
    b["stages.0.0.attn.norm.out"] = np.ascontiguousarray(b["stages.0.0.attn.norm.out"].transpose(0, 2, 3, 1))
    b["pred.weight.grad"] = b["pred.weight.grad"].T.copy()
    report = compare(good, b)
    assert not report.ok and [r.name for r in report.shape_mismatches] == [
        "stages.0.0.attn.norm.out", "pred.weight.grad"
    ]  # fmt: skip
    first = report.first_divergence
    assert first is not None and first.name == "stages.0.0.attn.norm.out" and math.isnan(first.max_abs)
    text = report.format()
    assert "shape mismatch: A 1x8x2x3 vs B 1x2x3x8; B looks channels-last (NHWC)" in text
    assert "B looks transposed" in text
    assert text.splitlines()[-1].startswith("first divergence: stages.0.0.attn.norm.out (shape mismatch")


def test_missing_and_extra_names_are_listed_not_blamed(good: Path) -> None:
    b = small_dump()
    del b["stages.0.0.attn.out"], b["input.grad"]
    b["stages.0.0.mlp.act.call1.out"] = np.zeros(3)
    report = compare(good, b)
    assert report.ok and report.missing == ["stages.0.0.attn.out", "input.grad"]
    assert report.extra == ["stages.0.0.mlp.act.call1.out"]
    text = report.format()
    assert "2 in A but missing from B, not compared: stages.0.0.attn.out, input.grad" in text
    assert "1 extra in B (not in A), not compared: stages.0.0.mlp.act.call1.out" in text
    assert text.splitlines()[-1] == "no divergence: all 4 compared tensors OK"
    strict = compare(good, b, strict=True)
    assert not strict.ok and "(strict)" in strict.last_line()


def test_nothing_in_common_fails(good: Path) -> None:
    report = compare(good, {"x": np.zeros(1)})
    assert not report.ok and report.last_line().startswith("nothing compared")


def test_nan_and_inf_are_never_ok(good: Path) -> None:
    for bad_value in (np.nan, np.inf):
        b = small_dump()
        b["logits"][0, 1] = bad_value
        report = compare(good, b)
        assert report.first_divergence is not None and report.first_divergence.name == "logits"


def test_gradients_only_come_first_when_the_forward_agrees(good: Path) -> None:
    b = small_dump()
    b["input.grad"] = b["input.grad"] + 1.0
    b["logits"] = b["logits"] * (1 + 1e-6)
    first = compare(good, b).first_divergence
    assert first is not None and first.name == "logits"
    b["logits"] = small_dump()["logits"]
    first = compare(good, b).first_divergence
    assert first is not None and first.name == "input.grad"


# ------------------------------------------------------------------------------------------------------------
# The tolerance rule: max|a - b| <= atol + rtol * max|a|


def test_rtol_and_atol_combine_as_documented() -> None:
    a = {"t": np.array([2.0, -4.0, 1.0])}
    b = {"t": np.array([2.0, -4.0 + 4e-6, 1.0])}  # max abs 4e-6, max|a| 4: scaled 1e-6
    row = compare(a, b).rows[0]
    assert row.max_abs == pytest.approx(4e-6) and row.max_rel == pytest.approx(1e-6) and row.rtol == 1e-10
    assert not row.ok  # float64 table: 1e-10
    assert compare(a, b, rtol=1e-6 * 1.01).ok and not compare(a, b, rtol=1e-6 * 0.99).ok
    assert compare(a, b, rtol=0.0, atol=4.01e-6).ok and not compare(a, b, rtol=0.0, atol=3.99e-6).ok
    assert compare(a, b, rtol=0.5e-6, atol=2.01e-6).ok and not compare(a, b, rtol=0.5e-6, atol=1.99e-6).ok
    # float32 on either side: the float32 entry of the table; integers must match exactly
    assert compare(a, {"t": b["t"].astype(np.float32)}).rows[0].rtol == 1e-4
    assert compare({"n": np.array(3)}, {"n": np.array(3)}).ok and not compare({"n": np.array(3)}, {"n": np.array(4)}).ok
    # a reference of zeros is compared absolutely (scale 1)
    assert compare({"z": np.zeros(2)}, {"z": np.array([0.0, 1e-11])}).ok


def test_dtypes_without_a_default_tolerance_need_rtol() -> None:
    a = {"t": np.ones(2, dtype=np.float16)}
    with pytest.raises(CompareError, match=r"no default tolerance for float16.*pass rtol"):
        compare(a, a)
    assert compare(a, a, rtol=1e-3).ok
    with pytest.raises(CompareError, match="real numeric"):
        compare({"t": np.ones(2, dtype=complex)}, {"t": np.ones(2, dtype=complex)})
    with pytest.raises(CompareError, match="rtol must be a finite number >= 0"):
        compare(a, a, rtol=-1.0)
