"""Weights in and out of the model: torch training checkpoints, hostile files, our own npz/safetensors files."""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import c2f_numpy as c2f
from c2f_numpy.io import CheckpointError, UnsafeCheckpointError, WeightsFileError
from c2f_numpy.testing import assert_close, randomize_for_parity
from c2f_numpy.torch_reference import build_torch_conv2former


def _torch_state(model: c2f.Conv2Former, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v.copy()).to(dtype) if v.dtype.kind == "f" else torch.from_numpy(v.copy())
            for k, v in model.state_dict().items()}  # fmt: skip


def write_checkpoint_saver_file(path: Path, plain: dict, ema: dict | None, params: list) -> None:
    """A file in the layout timm's CheckpointSaver writes (the official training script uses it)."""
    opt = torch.optim.AdamW(params, lr=1e-3)
    sum(p.sum() for p in params).backward()
    opt.step()
    ckpt = {"epoch": 299, "arch": "conv2former_n", "state_dict": plain, "optimizer": opt.state_dict(), "version": 2,
            "args": argparse.Namespace(model="conv2former_n", lr=4e-3, drop_path=0.1), "metric": 81.5}  # fmt: skip
    if ema is not None:
        ckpt["state_dict_ema"] = ema
    torch.save(ckpt, path)


@pytest.mark.parametrize("which", ["auto", "ema"])
def test_a_torch_training_checkpoint_reproduces_torch_logits(tmp_path: Path, which: str) -> None:
    src = c2f.create_model("n", num_classes=10, dtype=np.float64)
    randomize_for_parity(src, seed=1)
    ema_src = c2f.create_model("n", num_classes=10, dtype=np.float64)
    randomize_for_parity(ema_src, seed=2)
    torch_model = build_torch_conv2former("n", num_classes=10, dtype=torch.float32)
    plain, ema = _torch_state(src), _torch_state(ema_src)
    torch_model.load_state_dict(ema if which == "ema" else plain)
    path = tmp_path / "checkpoint-299.pth.tar.pth"
    write_checkpoint_saver_file(path, plain, ema, list(torch_model.parameters()))

    ours = c2f.create_model("conv2former_n", checkpoint=path, weights=which, dtype=np.float64)  # no torch inside
    assert (ours.kernel_size, ours.num_classes) == (7, 10)
    torch_model = torch_model.double().eval()
    torch_model.load_state_dict(ema if which == "ema" else plain)  # undo the optimizer step above
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64))
    expected = torch_model(torch.from_numpy(x)).detach().numpy()
    assert_close("logits from the .pth", ours.eval()(x), expected)


@pytest.mark.parametrize("protocol", [0, 2, 4])  # 0: GLOBAL + REDUCE in text form, 2: GLOBAL, 4: STACK_GLOBAL
def test_hostile_payload_nested_deep_in_a_checkpoint_runs_nothing(tmp_path: Path, protocol: int) -> None:
    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = tmp_path / "hostile.pth"
    tree = {"state_dict": {"pred.bias": 0.0}, "args": {"nested": [{"deeper": (1, Payload())}]}}
    with zipfile.ZipFile(path, "w") as zf:  # torch.save's layout, with a hostile pickle inside
        zf.writestr("hostile/data.pkl", pickle.dumps(tree, protocol=protocol))
        zf.writestr("hostile/byteorder", "little")
    with pytest.raises(UnsafeCheckpointError, match=r"(posix|os|nt)\.system"):
        c2f.create_model("n", checkpoint=path)
    assert not (tmp_path / "ran").exists()


def test_truncated_and_storage_less_files_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(build_torch_conv2former("n", num_classes=10).state_dict(), path)
    data = path.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth"):
        c2f.create_model("n", checkpoint=tmp_path / "cut.pth")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "hole.pth", "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("/data/3"):
                dst.writestr(info, src.read(info))
    with pytest.raises(CheckpointError, match=r"data/3"):
        c2f.create_model("n", checkpoint=tmp_path / "hole.pth")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_model_and_load_model_round_trip(tmp_path: Path, suffix: str, dtype: type) -> None:
    model = c2f.conv2former_n(num_classes=7, kernel_size=11, dtype=dtype, in_chans=1)
    randomize_for_parity(model)
    model.eval()
    path = c2f.save_model(model, tmp_path / f"m{suffix}")
    again = c2f.load_model(path)
    assert (again.kernel_size, again.num_classes, again.in_chans, again.dtype) == (11, 7, 1, np.dtype(dtype))
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(dtype)
    assert np.array_equal(again.eval()(x), model(x))  # bitwise
    assert sorted(os.listdir(tmp_path)) == [f"m{suffix}"]  # written atomically: no temp file left
    by_name = c2f.create_model("n", checkpoint=path, dtype=dtype)
    assert np.array_equal(by_name.eval()(x), model(x))


def test_load_model_needs_our_metadata_and_ema_needs_a_torch_file(tmp_path: Path) -> None:
    path = c2f.save_weights(tmp_path / "bare.npz", c2f.conv2former_n(num_classes=3).state_dict())
    with pytest.raises(ValueError, match=r"not written by save_model.*create_model\(name, checkpoint=path\)"):
        c2f.load_model(path)
    with pytest.raises(WeightsFileError, match="hold a single set of weights"):
        c2f.create_model("n", checkpoint=path, weights="ema")
