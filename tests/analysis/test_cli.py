"""``c2f-inspect`` (c2f_numpy.analysis.cli): every kind of source, the files it writes, exit codes and errors.

The models are tiny (dims 8-16, depths 1-2, 32x32 images; micro for a variant name), so each run takes well
under a second after the kernels are compiled.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from c2f_numpy import Conv2Former, save_model
from c2f_numpy.analysis import effective_receptive_field, learned_kernels
from c2f_numpy.analysis.cli import main
from c2f_numpy.io import save_weights
from c2f_numpy.models import model_config
from c2f_numpy.testing import assert_close, randomize_for_parity
from c2f_numpy.train.checkpoint import Checkpoint, save_checkpoint

from ..data.test_realdata import system_files  # noqa: F401  (the fixture: real Fashion-MNIST or a clear failure)

DIMS, DEPTHS, K = (8, 16), (1, 2), 5


def tiny(seed: int) -> Conv2Former:
    model = Conv2Former(DIMS, DEPTHS, K, num_classes=3, head_dim=16, layer_scale_init_value=1.0)
    randomize_for_parity(model, seed=seed)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny model (plain weights) and another (EMA weights) in every format c2f-inspect reads."""
    d = tmp_path_factory.mktemp("sources")
    plain, ema = tiny(1).state_dict(), tiny(2).state_dict()
    pth = d / "official.pth"
    torch.save({"state_dict": {k: torch.tensor(v) for k, v in plain.items()},
                "state_dict_ema": {k: torch.tensor(v) for k, v in ema.items()}, "epoch": 3}, pth)  # fmt: skip
    ckpt = d / "train.npz"
    save_checkpoint(ckpt, Checkpoint(plain, {}, ema, {"step": 1}, model_config(tiny(1))))
    bare = d / "bare.safetensors"
    save_weights(bare, plain)
    return {"pth": pth, "ckpt": ckpt, "bare": bare, "saved": save_model(tiny(1), d / "model.npz")}


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def erf_args(source: object, out: Path, *extra: object) -> list[object]:
    return ["erf", source, "--stage", 2, "--size", 32, "-n", 2, "--no-progress", "-o", out, *extra]


@pytest.mark.parametrize(("kind", "weights", "seed"), [("pth", "auto", 1), ("pth", "ema", 2), ("ckpt", "plain", 1),
                         ("ckpt", "ema", 2), ("bare", "auto", 1), ("saved", "auto", 1)])  # fmt: skip
def test_erf_of_every_source(files, kind, weights, seed, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, *erf_args(files[kind], tmp_path, "--weights", weights))
    assert code == 0, err
    numbers = json.loads((tmp_path / "erf.json").read_text())
    want = effective_receptive_field(tiny(seed), 2, stage=2, size=32, seed=0)
    assert_close(f"{kind} {weights}", np.load(tmp_path / "erf.npy"), want.map)
    assert numbers["feature_shape"] == [16, 4, 4] and numbers["centre_unit"] == [2, 2]
    assert numbers["num_images"] == 2 and numbers["config"]["kernel_size"] == K
    assert len(numbers["area_ratio"]) == 3 and numbers["command"].startswith("c2f-inspect erf")
    assert (tmp_path / "erf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "A = log-scaled map" in (tmp_path / "erf.txt").read_text() and "wrote" in out


def test_kernels_of_a_checkpoint(files, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "kernels", files["ckpt"], "--weights", "ema", "-o", tmp_path)
    assert code == 0, err
    numbers = json.loads((tmp_path / "kernels.json").read_text())
    want = learned_kernels(tiny(2))
    assert numbers["kernel_size"] == K and len(numbers["stages"]) == 2
    np.testing.assert_allclose(numbers["stages"][1]["mean_abs_map"], want.stage_mean_abs[1], rtol=1e-6)
    assert numbers["block_mean_abs"].keys() == {"stages.0.0", "stages.1.0", "stages.1.1"}
    assert (tmp_path / "kernels.png").is_file() and "centre 3x3 share" in out


def test_a_variant_with_random_weights(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(capsys, "erf", "micro", "--kernel-size", 3, "--layer-scale", 1.0, "--stage", 3, "--size", 16,
                       "-n", 1, "--in-chans", 1, "--dtype", "float64", "--no-progress", "-o", tmp_path)  # fmt: skip
    assert code == 0, err
    numbers = json.loads((tmp_path / "erf.json").read_text())
    assert numbers["config"]["kernel_size"] == 3 and numbers["feature_shape"] == [128, 2, 2]
    assert "layer scale 1" in numbers["model"] and numbers["dtype"] == "float64"


@pytest.mark.realdata
def test_fashion_mnist_images(system_files, files, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    code, _, err = run(capsys, *erf_args(files["saved"], tmp_path, "--images", "fashion_mnist", "--seed", 4))
    assert code == 0, err
    numbers = json.loads((tmp_path / "erf.json").read_text())
    assert numbers["images"] == "2 fashion_mnist test images (seed 4)" and numbers["image_size"] == [32, 32]


def test_a_folder_of_images(files, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(40, 50, 3), (30, 30, 3)]):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    code, _, err = run(capsys, *erf_args(files["saved"], tmp_path / "out", "--images", folder))
    assert code == 0, err
    assert json.loads((tmp_path / "out" / "erf.json").read_text())["images"] == f"2 images from {folder}"


def test_a_folder_without_pillow_says_what_to_install(files, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL raises ImportError
    code, _, err = run(capsys, *erf_args(files["saved"], tmp_path / "out", "--images", tmp_path))
    assert code == 2
    assert "needs Pillow: pip install 'c2f_numpy[images]'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["erf", "missing.pth", "--stage", "1", "-o", "{out}"], "no such file: missing.pth"),
        (["erf", "nothere/model.npz", "--stage", "1", "-o", "{out}"], "no such file: nothere/model.npz"),
        (["erf", "{saved}", "--stage", "3", "--size", "32", "-o", "{out}"], "stage must be 1..2"),
        (["erf", "{saved}", "--stage", "2", "--block", "3", "--size", "32", "-o", "{out}"], "stage 2 has blocks 1..2"),
        (
            ["erf", "{saved}", "--stage", "2", "--size", "6", "-o", "{out}"],
            "a 6x6 image does not survive the downsampling to stage 2 (stride 8)",
        ),
        (["erf", "resnet50", "--stage", "1", "-o", "{out}"], "'resnet50' is neither a weights file"),
        (["erf", "{saved}", "--kernel-size", "3", "--stage", "1", "-o", "{out}"], "give a variant name, not a file"),
        (["erf", "n", "--weights", "ema", "--stage", "1", "-o", "{out}"], "--weights ema needs a checkpoint file"),
        (["erf", "{saved}", "--weights", "ema", "--stage", "1", "-o", "{out}"], "needs a training checkpoint"),
        (["erf", "{saved}", "--stage", "1", "--images", "imagenet", "-o", "{out}"], "expected a folder, noise or"),
        (["erf", "{saved}", "--stage", "1", "-n", "0", "-o", "{out}"], "expected a positive integer, got 0"),
        (["erf", "{saved}", "-o", "{out}"], "the following arguments are required: --stage"),
        (["kernels", "{notes}", "-o", "{out}"], "unknown weights file suffix"),
    ],
)
def test_errors_exit_2_with_the_reason(argv, message, files, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "notes.txt").write_text("x")
    fill = {"out": tmp_path / "out", "saved": files["saved"], "notes": tmp_path / "notes.txt"}
    code, _, err = run(capsys, *[a.format(**fill) for a in argv])
    assert code == 2
    assert message in err, err
    assert not (tmp_path / "out" / "erf.json").exists()


def test_weights_that_do_not_fit_name_the_key(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    state = tiny(1).state_dict()
    del state["stages.1.1.mlp.fc2.bias"]
    save_weights(tmp_path / "broken.npz", state)
    code, _, err = run(capsys, "kernels", tmp_path / "broken.npz", "-o", tmp_path / "out")
    assert code == 2 and "stages.1.1.mlp.fc2.bias" in err, err
