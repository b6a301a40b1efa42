"""The c2f-oracle command, through main(argv): run, compare, show; exit statuses 0 / 1 / 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import c2f_numpy as c2f
from c2f_numpy.oracle import load_dump, save_dump
from c2f_numpy.oracle.cli import main

SMALL = ["--variant", "n", "--num-classes", "5", "--size", "32", "48"]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    out = {"npz": d / "ours.npz", "st": d / "ours.safetensors"}
    assert main(["run", *SMALL, "--grad", "-o", str(out["npz"])]) == 0
    assert main(["run", *SMALL, "--grad", "-o", str(out["st"])]) == 0
    return out


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_run_writes_a_dump_with_metadata(dumps: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    tensors, meta = load_dump(dumps["npz"])
    assert list(tensors)[:2] == ["input", "downsample_layers.0.0.out"] and "pred.weight.grad" in tensors
    assert tensors["input"].shape == (1, 3, 32, 48) and tensors["input"].dtype == np.float64
    assert tensors["logits"].shape == (1, 5) and tensors["dlogits"].shape == (1, 5)
    assert meta["variant"] == "conv2former_n" and meta["kernel_size"] == "7" and meta["dtype"] == "float64"
    assert meta["mode"] == "eval" and meta["seed"] == "0" and meta["library"].startswith("c2f_numpy ")
    assert meta["weights"] == "randomize_for_parity(seed=0)"


def test_compare_a_run_with_itself_and_across_formats(
    dumps: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["compare", str(dumps["npz"]), str(dumps["npz"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"A: {dumps['npz']} (") and ", 0 NOT OK (0 shape mismatches)" in out
    assert not any(line.endswith("NOT OK") for line in out.splitlines())
    assert last_line(out).startswith("no divergence: all ") and last_line(out).endswith(" compared tensors OK")
    assert main(["compare", str(dumps["st"]), str(dumps["npz"]), "--all"]) == 0
    out = capsys.readouterr().out
    assert "walk order from A" in out and "input.grad" in out and " OK" in out  # every row printed


def test_compare_names_the_first_divergence_and_exits_1(
    dumps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tensors, _ = load_dump(dumps["npz"])
    tensors["stages.2.3.mlp.fc1.out"] = tensors["stages.2.3.mlp.fc1.out"] * (1 + 1e-7)
    tensors["logits"] = tensors["logits"] + 1e-3
    port = save_dump(tmp_path / "port.npz", tensors)
    capsys.readouterr()
    assert main(["compare", str(dumps["npz"]), str(port)]) == 1
    out = capsys.readouterr().out
    assert last_line(out).startswith("first divergence: stages.2.3.mlp.fc1.out (max abs err ")
    assert "last agreeing tensor before it: stages.2.3.mlp.norm.out" in out
    assert main(["compare", str(dumps["npz"]), str(port), "--rtol", "1e-6", "--atol", "0"]) == 1
    assert last_line(capsys.readouterr().out).startswith("first divergence: logits")
    assert main(["compare", str(dumps["npz"]), str(port), "--rtol", "1"]) == 0


def test_run_with_an_input_file_and_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = c2f.create_model("n", num_classes=4, dtype=np.float32)
    weights = c2f.save_model(model, tmp_path / "w.safetensors")
    x = np.random.default_rng(7).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "d.npz"
    assert main(["run", "--weights", str(weights), "--input", str(tmp_path / "x.npy"), "-o", str(out)]) == 0
    tensors, meta = load_dump(out)
    np.testing.assert_array_equal(tensors["input"], x.astype(np.float64))  # float64 by default
    assert tensors["logits"].shape == (2, 4) and meta["weights"] == str(weights) and "input.grad" not in tensors
    assert "wrote " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", *SMALL], "required: -o/--output"),
        (["run", "--variant", "zz", "-o", "x.npz"], "unknown variant 'zz'"),
        (["compare", "a.npz"], "required: B"),
        (["compare", "a.npz", "b.npz", "--rtol", "-1"], "expected a finite number >= 0"),
        ([], "required: {run,compare,show}"),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_file_errors_exit_2_without_a_traceback(
    dumps: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(dumps["npz"].read_bytes()[:5000])
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([object()], dtype=object), allow_pickle=True)
    wrong = tmp_path / "t.safetensors"
    c2f.save_model(c2f.create_model("t", num_classes=5), wrong)
    cases = [
        (["compare", str(dumps["npz"]), str(truncated)], "truncated.npz: the zip archive is corrupt or truncated"),
        (["compare", str(tmp_path / "absent.npz"), str(dumps["npz"])], "absent.npz: no such file"),
        (["compare", str(dumps["npz"]), str(tmp_path / "x.pth")], "a dump is a .npz or .safetensors file"),
        (["show", str(truncated)], "corrupt or truncated"),
        (["run", "--input", str(pickled), "-o", str(tmp_path / "o.npz")], "not a readable .npy"),
        (["run", "--input", str(tmp_path / "none.npy"), "-o", str(tmp_path / "o.npz")], "no such file"),
        (["run", "--weights", str(wrong), "-o", str(tmp_path / "o.npz")], "shape mismatch"),
        (
            ["run", *SMALL, "--weights", str(wrong), "--randomize-seed", "1", "-o", str(tmp_path / "o.npz")],
            "apply to a built model",
        ),
        (["run", *SMALL, "-o", str(tmp_path / "o.pth")], "a dump or weights file is .npz or .safetensors"),
        (["run", *SMALL, "--save-weights", "w.pth", "-o", str(tmp_path / "o.npz")], "--save-weights w.pth: a dump"),
        (["run", "--size", "16", "16", "-o", str(tmp_path / "o.npz")], "too small"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.startswith(f"c2f-oracle {args[0]}: error: "), (args, err)
        assert "Traceback" not in err
    assert not (tmp_path / "o.npz").exists()


def test_saved_weights_reproduce_the_dump(dumps: dict[str, Path], tmp_path: Path) -> None:
    weights, again = tmp_path / "w.safetensors", tmp_path / "again.npz"
    assert (
        main(["run", *SMALL, "--randomize-seed", "4", "--grad", "--save-weights", str(weights), "-o", str(again)]) == 0
    )
    again2 = tmp_path / "again2.safetensors"
    assert main(["run", *SMALL[2:], "--weights", str(weights), "--grad", "-o", str(again2)]) == 0
    assert main(["compare", str(again), str(again2)]) == 0
    assert main(["compare", str(dumps["npz"]), str(again)]) == 1  # other weights (seed 4 vs 0)


def test_show_lists_metadata_and_tensors(dumps: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["show", str(dumps["st"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("tensors") and any(line.startswith("  variant: conv2former_n") for line in out)
    assert any(line.startswith("input ") and "1x3x32x48" in line for line in out)


def test_python_dash_m_runs_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "c2f_numpy.oracle", "compare", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and "usage: c2f-oracle compare" in done.stdout and "--rtol" in done.stdout
