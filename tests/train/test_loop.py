"""The training loop: bitwise resume (in process and after a SIGKILL), the NaN stop, checkpoint errors, EMA,
gradient clipping and the schedule against torch, the validation split and selection on it, the warmup of short
runs, recipes, the curves, the optimizer's backend, the CLI and its files."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TypedDict

import numpy as np
import pytest

import c2f_numpy.train.loop as loop_module
from c2f_numpy.data import DataNotFoundError, Dataset, normalize, write_idx
from c2f_numpy.models import load_model, save_model
from c2f_numpy.ops import cross_entropy_forward
from c2f_numpy.testing import tolerance
from c2f_numpy.train import (
    BEST,
    LAST,
    RECIPES,
    AdamW,
    TrainCheckpointError,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    clip_grad_norm,
    cosine_lr,
    hold_out,
    load_checkpoint,
    recipe_settings,
    run_splits,
    warmup_steps,
)
from c2f_numpy.train.cli import build_parser, new_config
from c2f_numpy.train.cli import main as cli_main
from c2f_numpy.train.metrics import draw_history, smooth

ROOT = Path(__file__).resolve().parents[2]
# Seconds and rates differ between runs; every other metric must match bit for bit.
TIMING_KEYS = {"train_seconds", "eval_seconds", "img_per_s", "wall_seconds"}


def make_split(n: int, seed: int, size: int = 16, classes: int = 4, noise: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class (mod 4) is a bright quadrant plus noise: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, noise, (n, 1, size, size)).astype(np.uint8)
    h = size // 2
    for i, c in enumerate(labels):
        r, q = divmod(int(c) % 4, 2)
        images[i, 0, r * h : (r + 1) * h, q * h : (q + 1) * h] += 150
    return images, labels.astype(np.int64)


def make_dataset(split: str, n: int, seed: int) -> Dataset:
    images, labels = make_split(n, seed)
    return Dataset("toy", split, images, labels, ["a", "b", "c", "d"], (0.3,), (0.3,))


# 56 toy training images: 8 held out for validation, 48 to train on, 6 steps of 8 per epoch
BASE = TrainConfig(
    dataset="toy", model="micro", kernel_size=3, epochs=2, batch_size=8, lr=3e-3, warmup_epochs=0.5,
    warmup_fraction=0.25, layer_scale_init=0.1, drop_path=0.2, ema_decay=0.9, clip_grad=1.0, crop_padding=1,
    eval_batch_size=16, val_split=8, workers=1,
)  # fmt: skip


class ToyData(TypedDict):
    train_set: Dataset
    test_set: Dataset


def toy_data() -> ToyData:
    return {"train_set": make_dataset("train", 56, 0), "test_set": make_dataset("test", 20, 1)}


def run(out: Path, config: TrainConfig | None = BASE, **kw: object) -> Trainer:
    trainer = Trainer(config, out, **toy_data(), progress=False, log=lambda _: None, **kw)  # type: ignore[arg-type]
    trainer.fit()
    return trainer


def assert_same_run(a: Path, b: Path) -> None:
    """Two finished runs: identical weights, optimizer state, EMA, RNG and (timing aside) metrics."""
    ca, cb = load_checkpoint(a / LAST), load_checkpoint(b / LAST)
    for section in ("model", "optim", "ema"):
        da, db = getattr(ca, section) or {}, getattr(cb, section) or {}
        assert da.keys() == db.keys()
        for key in da:
            assert da[key].dtype == db[key].dtype and np.array_equal(da[key], db[key]), f"{section}.{key} differs"
    strip = [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in ca.meta["history"]]
    assert strip == [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in cb.meta["history"]]
    for key in ("step", "loader", "drop_path_rng", "best", "step_log"):
        assert ca.meta[key] == cb.meta[key], key


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    run(out)
    return out


@pytest.mark.parametrize("stop", [1, 5, 6, 9])  # 6 steps per epoch: inside epoch 1, its last step, epoch 2
def test_resume_is_bitwise_identical(tmp_path: Path, reference_run: Path, stop: int) -> None:
    run(tmp_path, replace(BASE, checkpoint_every=2), stop_after_steps=stop)
    assert load_checkpoint(tmp_path / LAST).meta["step"] == stop
    run(tmp_path, None, resume=True)
    ref = load_checkpoint(reference_run / LAST)
    got = load_checkpoint(tmp_path / LAST)
    assert got.meta["step"] == ref.meta["step"] == 12
    for key in ref.model:
        assert np.array_equal(ref.model[key], got.model[key]), key
    # checkpoint_every is part of the config, so compare the rest through a run made with the same config
    assert [r["test_acc"] for r in got.meta["history"]] == [r["test_acc"] for r in ref.meta["history"]]


def test_run_learns_and_writes_its_files(reference_run: Path) -> None:
    rows = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["train_loss"] < 0.9 * rows[0]["train_loss"]
    # chance is 25%; 12 steps with drop path and crops reach 35-60% depending on the images, and are too few for
    # BN's running statistics (so no claim on the evaluations)
    assert rows[-1]["train_acc"] > 25.0
    assert all(0.0 <= r["test_acc"] <= 100.0 and 0.0 <= r["val_acc"] <= 100.0 for r in rows)
    assert {"test_acc_ema", "val_acc_ema", "val_loss"} <= rows[0].keys()
    csv_lines = (reference_run / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[:3] == ["epoch", "step", "lr"] and len(csv_lines) == 3
    steps = (reference_run / "steps.csv").read_text().splitlines()
    assert steps[0] == "step,epoch,lr,loss,acc" and len(steps) == 1 + 12
    assert [line.split(",")[0] for line in steps[1:]] == [str(i) for i in range(1, 13)]
    assert float(steps[6].split(",")[1]) == 1.0  # step 6 ends epoch 1
    assert (reference_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((reference_run / "summary.json").read_text())
    # the headline: the last epoch's plain test accuracy; best: on the validation split only
    assert summary["final_acc"] == rows[-1]["test_acc"]
    assert summary["final"] == {"test_acc": rows[-1]["test_acc"], "test_acc_ema": rows[-1]["test_acc_ema"]}
    assert summary["best_val_acc"] == max(max(r["val_acc"], r["val_acc_ema"]) for r in rows)
    best_row = rows[summary["best_epoch"] - 1]
    assert summary["best_metric"].startswith("val_acc") and best_row[summary["best_metric"]] == summary["best_val_acc"]
    assert summary["best_test"] == {"test_acc": best_row["test_acc"], "test_acc_ema": best_row["test_acc_ema"]}
    assert summary["splits"] == {"train": 48, "val": 8, "test": 20}
    assert "test accuracy" in summary["headline"] and "plain evaluation" in summary["headline"]
    assert load_checkpoint(reference_run / BEST).meta["step"] == 6 * summary["best_epoch"]


def test_mirror_evaluation_averages_the_logits_of_both_images(tmp_path: Path) -> None:
    trainer = run(tmp_path, replace(BASE, epochs=1, eval_hflip=True))
    row = trainer.history[-1]
    # the toy classes are quadrants, so a mirror image is another class: the averaged logits score differently
    model, ds = trainer.model, trainer.test_set
    model.eval()
    x = normalize(ds.images, ds.mean, ds.std)
    plain, mirrored = model(x), model(np.ascontiguousarray(x[..., ::-1]))
    model.train()
    assert math.isclose(row["test_acc"], 100.0 * np.mean(plain.argmax(axis=1) == ds.labels))
    assert math.isclose(row["test_acc_hflip"], 100.0 * np.mean(((plain + mirrored) / 2).argmax(axis=1) == ds.labels))
    for key, logits in (("test_loss", plain), ("test_loss_hflip", (plain + mirrored) / 2)):
        want = float(cross_entropy_forward(logits, ds.labels)[0])
        assert math.isclose(row[key], want, rel_tol=tolerance(np.float32)), key  # float32, two batches vs one
    assert abs(row["test_loss_hflip"] - row["test_loss"]) > 1e-3  # else this could not tell the two apart
    assert {"test_acc_ema", "test_acc_ema_hflip", "test_loss_ema_hflip"} <= row.keys()
    assert {"val_acc_hflip", "val_acc_ema_hflip"} <= row.keys()
    best = max(v for k, v in row.items() if k.startswith("val_acc"))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_val_acc"] == best and row[summary["best_metric"]] == best
    assert set(summary["final"]) == {"test_acc", "test_acc_hflip", "test_acc_ema", "test_acc_ema_hflip"}
    assert "test_acc_hflip" in (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert build_parser().parse_args(["--eval-hflip"]).eval_hflip is True  # a flag, not --eval-hflip VALUE
    assert not hasattr(build_parser().parse_args([]), "eval_hflip")


def test_checkpoint_loads_as_model(reference_run: Path, tmp_path: Path) -> None:
    ckpt = load_checkpoint(reference_run / LAST)
    plain, ema = load_model(reference_run / LAST), load_model(reference_run / LAST, weights="ema")
    for key, value in ckpt.model.items():
        assert np.array_equal(plain.state_dict()[key], value)
    for key, value in ckpt.ema.items():  # type: ignore[union-attr]
        assert np.array_equal(ema.state_dict()[key], value)
    assert plain.stem_stride == 2 and plain.kernel_size == 3
    with pytest.raises(ValueError, match="needs a training checkpoint"):
        load_model(save_model(plain, tmp_path / "m.npz"), weights="ema")


def test_ema_and_lr_follow_their_formulas(tmp_path: Path) -> None:
    cfg = replace(BASE, epochs=1, drop_path=0.0, clip_grad=0.0)
    t = Trainer(cfg, tmp_path, **toy_data(), progress=False, log=lambda _: None)
    assert t.warmup_steps == 2  # min(0.5 epoch = 3 steps, 25% of 6 steps = 1.5 -> 2)
    lrs = []
    for x, y in t.loader:
        t.train_step(x, y)
        lrs.append(t.optimizer.lr)
        if t.step == 1:
            w1 = t.model.state_dict()
        if t.step == 2:
            break
    w2 = t.model.state_dict()
    for key in w2:  # bias-corrected: the initial weights have no share
        if np.issubdtype(w2[key].dtype, np.floating):
            want = (0.9 * 0.1 * w1[key] + 0.1 * w2[key]) / (1 - 0.9**2)
            np.testing.assert_allclose(t.ema[key], want, rtol=1e-6, atol=1e-7)  # type: ignore[index]
    assert lrs == [cosine_lr(s, 6, 3e-3, warmup_steps=2, min_lr=1e-5) for s in range(2)]


def test_schedule_matches_torch() -> None:
    import torch  # the test extra pins it; CI has it

    total, warm, base, floor = 50, 7, 0.1, 1e-3
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warm, total_iters=warm - 1),
         torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm, eta_min=floor)],
        milestones=[warm],
    )  # fmt: skip
    for step in range(total):
        assert math.isclose(cosine_lr(step, total, base, warmup_steps=warm, min_lr=floor), opt.param_groups[0]["lr"],
                            rel_tol=1e-9, abs_tol=1e-12), step  # fmt: skip
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match="warmup_steps"):
        cosine_lr(0, 5, 0.1, warmup_steps=6)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(max_norm: float) -> None:
    import torch  # the test extra pins it; CI has it

    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s) for s in [(3, 4), (5,), (2, 2, 2)]]
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for t, g in zip(tensors, grads, strict=True):
        t.grad = torch.tensor(g)
    want = float(torch.nn.utils.clip_grad_norm_(tensors, max_norm))
    got = clip_grad_norm(grads, max_norm)
    assert math.isclose(got, want, rel_tol=1e-12)
    for t, g in zip(tensors, grads, strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = replace(BASE, optimizer="sgd", lr=1e4, clip_grad=0.0, ema_decay=0.0, checkpoint_every=1, warmup_epochs=0)
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf).*last good checkpoint"):
        run(tmp_path, cfg)
    good = load_checkpoint(tmp_path / LAST)
    assert all(np.isfinite(v).all() for v in good.model.values())
    assert 1 <= good.meta["step"] < 12


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    t = Trainer(replace(BASE, checkpoint_every=1), tmp_path, progress=False, log=lambda _: None, stop_after_steps=2,
                **toy_data())  # fmt: skip
    t.fit()
    before = (tmp_path / LAST).read_bytes()
    t = Trainer(None, tmp_path, resume=True, **toy_data(), progress=False, log=lambda _: None)
    step = t.optimizer.step

    def poisoned_step() -> None:
        step()
        t.model.pred.weight.data[0, 0] = np.inf  # a finite loss, then a broken update

    t.optimizer.step = poisoned_step  # type: ignore[method-assign]
    with pytest.raises(TrainingDiverged, match=r"non-finite weights .*pred\.weight"):
        t.fit()
    assert (tmp_path / LAST).read_bytes() == before


def test_bad_checkpoints_are_clear_errors(tmp_path: Path, reference_run: Path) -> None:
    data = (reference_run / LAST).read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainCheckpointError, match=r"cut\.npz: not a readable checkpoint"):
        run(tmp_path / "a", None, resume=tmp_path / "cut.npz")
    model = load_model(reference_run / LAST)
    save_model(model, tmp_path / "weights.npz")
    with pytest.raises(TrainCheckpointError, match="a weights file, not a training checkpoint"):
        run(tmp_path / "b", None, resume=tmp_path / "weights.npz")
    with pytest.raises(TrainCheckpointError, match=r"other settings .*lr: 0\.003 -> 0\.1"):
        run(tmp_path / "c", replace(BASE, lr=0.1), resume=reference_run / LAST)
    with pytest.raises(FileNotFoundError):
        run(tmp_path / "d", None, resume=tmp_path / "missing.npz")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="TrainConfig: optimizer must be"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match=r"unknown settings \['lr_max'\]"):
        TrainConfig.from_dict({"lr_max": 1.0})


# ---------------------------------------------------------------------------------------------- newcomer defaults
def numbered(n: int) -> Dataset:
    """n images whose first pixel is their index (mod 256) and whose label is their index // 256: each
    image is known by (label, pixel)."""
    images = np.zeros((n, 1, 4, 4), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) % 256
    return Dataset("toy", "train", images, (np.arange(n) // 256).astype(np.int64), ["a", "b", "c", "d"], (0.3,), (0.3,))


def test_validation_split_is_held_out_of_the_training_split_seeded() -> None:
    full = numbered(1000)
    ident = lambda ds: {(int(y), int(x)) for y, x in zip(ds.labels, ds.images[:, 0, 0, 0], strict=True)}  # noqa: E731
    train, val, test = run_splits(full, numbered(300), val_split=100, train_subset=0, test_subset=0, seed=3)
    assert val is not None and val.split == "val" and (len(train), len(val), len(test)) == (900, 100, 300)
    assert not ident(train) & ident(val) and ident(train) | ident(val) == ident(full)  # disjoint, all of them
    again = hold_out(full, 100, 3)[1]
    assert again is not None and ident(again) == ident(val)  # seeded
    other = hold_out(full, 100, 4)[1]
    assert other is not None and ident(other) != ident(val)
    small, val2, _ = run_splits(full, numbered(300), val_split=100, train_subset=50, test_subset=0, seed=3)
    assert val2 is not None and ident(val2) == ident(val) and ident(small) <= ident(train)  # subset after hold-out
    assert hold_out(full, 0, 3) == (full, None)
    with pytest.raises(ValueError, match="val_split 1000 leaves no training images"):
        hold_out(full, 1000, 3)


def test_best_is_chosen_on_validation_never_on_test(tmp_path: Path) -> None:
    t = Trainer(replace(BASE, ema_decay=0.0, epochs=3), tmp_path, **toy_data(), progress=False, log=lambda _: None)
    scripted = iter([{"val_acc": 50.0, "test_acc": 99.0}, {"val_acc": 70.0, "test_acc": 10.0},
                     {"val_acc": 60.0, "test_acc": 20.0}])  # fmt: skip
    t.evaluate = lambda weights=None, suffix="": {"val_loss": 1.0, "test_loss": 1.0} | next(scripted)  # type: ignore[method-assign]
    summary = t.fit()
    assert (summary.best_epoch, summary.best_val_acc, summary.best_metric) == (2, 70.0, "val_acc")
    assert summary.best_test == {"test_acc": 10.0}  # reported, although epoch 1 had the best test accuracy
    assert summary.final_acc == 20.0  # the headline: the last epoch
    assert load_checkpoint(tmp_path / BEST).meta["step"] == 12
    # without a validation split there is no best at all
    t = run(tmp_path / "noval", replace(BASE, epochs=1, val_split=0))
    assert t.val_set is None and not (tmp_path / "noval" / BEST).exists()
    summary_json = json.loads((tmp_path / "noval" / "summary.json").read_text())
    assert summary_json["best_epoch"] is None and "no validation split" in summary_json["headline"]
    assert "val_acc" not in t.history[0]


def test_warmup_is_a_capped_fraction_of_short_runs() -> None:
    # the README's one-epoch run: 55,000 / 128 = 429 steps; 5% warmup, then the cosine decays to the floor
    assert warmup_steps(429, 429, 0.5, 0.05) == 21
    assert warmup_steps(429, 11 * 429, 0.5, 0.05) == 214  # the 11-epoch recipe keeps its half epoch
    assert warmup_steps(10, 10, 0.5, 0.0) == 0 and warmup_steps(10, 20, 3.0, 1.0) == 20
    lrs = [cosine_lr(s, 429, 3e-3, warmup_steps=21, min_lr=1e-5) for s in range(429)]
    peak = int(np.argmax(lrs))
    assert peak == 20 and lrs[peak] == 3e-3 and lrs[-1] < 3e-3 / 100  # warmed up, then annealed
    assert all(a < b for a, b in itertools.pairwise(lrs[:21]))
    with pytest.raises(ValueError, match="warmup_fraction"):
        warmup_steps(10, 10, 0.5, 1.5)


def test_defaults_are_the_30_minute_recipe_and_flags_override_recipes() -> None:
    assert TrainConfig() == TrainConfig(**recipe_settings("fashion_mnist_30min"))
    assert set(RECIPES) == {"fashion_mnist_30min", "fashion_mnist_60min"}
    config, line = new_config("fashion_mnist_60min", {"epochs": 1, "lr": 1e-3})
    assert (config.epochs, config.lr, config.crop_padding) == (1, 1e-3, 1)  # flags over the recipe over defaults
    assert "recipe fashion_mnist_60min:" in line and "epochs=1, lr=0.001 from flags" in line
    config, line = new_config(None, {})
    assert config == TrainConfig() and "(the defaults)" in line and "no flags" in line
    args = build_parser().parse_args(["--recipe", "fashion_mnist_60min", "--epochs", "2"])
    assert args.recipe == "fashion_mnist_60min" and args.epochs == 2 and not hasattr(args, "lr")
    with pytest.raises(ValueError, match="unknown recipe 'x'"):
        recipe_settings("x")
    # a checkpoint written before val_split and warmup_fraction existed resumes as it was made
    old = {k: v for k, v in asdict(TrainConfig()).items() if k not in ("val_split", "warmup_fraction")}
    assert (TrainConfig.from_dict(old).val_split, TrainConfig.from_dict(old).warmup_fraction) == (0, 1.0)


def test_torch_trainer_takes_the_same_recipes_and_splits() -> None:
    spec = importlib.util.spec_from_file_location("train_torch", ROOT / "benchmarks" / "train_torch.py")
    assert spec is not None and spec.loader is not None
    train_torch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_torch)
    d, args = TrainConfig(), train_torch.parse_args([])
    same = ("dataset", "model", "epochs", "batch_size", "lr", "min_lr", "warmup_epochs", "warmup_fraction",
            "weight_decay", "label_smoothing", "layer_scale_init", "crop_padding", "val_split", "seed")  # fmt: skip
    assert {k: getattr(args, k) for k in same} == {k: getattr(d, k) for k in same}
    assert args.no_hflip is (not d.hflip) and args.opt == d.optimizer
    args = train_torch.parse_args(["--recipe", "fashion_mnist_60min", "--lr", "1e-3"])
    recipe = (args.model, args.epochs, args.crop_padding, args.random_erasing, args.lr)
    assert recipe == ("mini", 26, 1, 0.5, 1e-3)  # the recipe, then the flag given


def test_curves_of_a_one_epoch_run_are_per_step(tmp_path: Path) -> None:
    trainer = run(tmp_path, replace(BASE, epochs=1), plot_every=2)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = draw_history(trainer.history, step_log=trainer.step_log, steps_per_epoch=trainer.steps_per_epoch)
    ax_loss, ax_acc, ax_lr = fig.axes
    lengths = lambda ax: sorted(len(line.get_xdata()) for line in ax.get_lines())  # noqa: E731
    # train raw and smoothed per step (6), then validation and test per epoch (1 point each)
    assert lengths(ax_loss) == [1, 1, 6, 6] and lengths(ax_acc) == [1, 1, 1, 1, 6, 6]  # + EMA val/test
    assert lengths(ax_lr) == [6]
    np.testing.assert_allclose(ax_lr.get_lines()[0].get_ydata(), trainer.step_log["lr"])
    np.testing.assert_allclose(smooth([1.0, 1.0, 4.0], 2), [1.0, 1.0, 2.375 / 0.875])  # bias-corrected: no pull to 0


@pytest.mark.parametrize("backend", ["fast", "teaching", "numba", "numpy"])
def test_optimizer_follows_the_backend(tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import c2f_numpy.kernels.optim as fused_kernels

    t = Trainer(replace(BASE, backend=backend), tmp_path, **toy_data(), progress=False, log=lambda _: None)
    fast = backend in ("fast", "numba")
    assert isinstance(t.optimizer, AdamW) and t.optimizer.fused is fast
    calls = []
    monkeypatch.setattr(fused_kernels, "adamw_update", lambda *a: calls.append(a))
    x, y = t.loader.batch(0, 0)
    t.train_step(x, y)
    assert bool(calls) is fast  # the teaching backend never runs the Numba AdamW


# ---------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files in the exact Fashion-MNIST layout (IDX, gzip, the official counts) with the toy images; the runs
    below train on small subsets of them."""
    root = tmp_path_factory.mktemp("fashion")
    for split, n, seed in (("train", 60000, 0), ("t10k", 10000, 1)):
        images, labels = make_split(n, seed, size=28, classes=10, noise=4)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images[:, 0])
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return root


CLI_ARGS = [
    "--dataset", "fashion_mnist", "--model", "micro", "--kernel-size", "3", "--epochs", "3", "--batch-size", "8",
    "--train-subset", "64", "--test-subset", "24", "--val-split", "16", "--layer-scale-init", "0.1",
    "--drop-path", "0.1", "--ema-decay", "0.9", "--checkpoint-every", "1", "--workers", "1", "--no-progress",
]  # fmt: skip


def cli(*args: str) -> subprocess.Popen[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "c2f_numpy.train", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_cli_survives_sigkill_bitwise(tmp_path: Path, fashion_dir: Path) -> None:
    data = fashion_dir
    ref = cli(*CLI_ARGS, "--data-dir", str(data), "--out", str(tmp_path / "ref"))
    out, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err
    assert "c2f-train: recipe fashion_mnist_30min (the defaults)" in out and "epochs=3" in out
    assert "done. test accuracy" in out and "best validation accuracy" in out

    victim = cli(*CLI_ARGS, "--data-dir", str(data), "--out", str(tmp_path / "run"))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # kill it once a few steps are checkpointed, mid-epoch
        if (tmp_path / "run" / LAST).exists() and load_checkpoint(tmp_path / "run" / LAST).meta["step"] >= 3:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    killed_at = load_checkpoint(tmp_path / "run" / LAST).meta["step"]
    assert 3 <= killed_at < 24

    again = cli("--out", str(tmp_path / "run"), "--data-dir", str(data), "--resume", "--no-progress")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert f"resuming at step {killed_at}" in out
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def test_cli_errors(
    tmp_path: Path, fashion_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = fashion_dir
    common = ["--data-dir", str(data), "--out", str(tmp_path / "o")]
    assert cli_main([*CLI_ARGS, *common, "--epochs", "1", "--stop-after-steps", "1"]) == 0
    assert cli_main([*CLI_ARGS, *common]) == 2
    assert "exists: pass --resume" in capsys.readouterr().err
    assert cli_main([*common, "--resume", "--lr", "0.5"]) == 2
    assert "lr: 0.003 -> 0.5" in capsys.readouterr().err
    assert cli_main(["--out", str(tmp_path / "x"), "--resume"]) == 2
    assert "No such weights file" in capsys.readouterr().err
    assert cli_main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y")]) == 2
    assert "does not exist" in capsys.readouterr().err

    assert cli_main([*common, "--resume", "--recipe", "fashion_mnist_60min"]) == 2
    assert "--recipe starts a run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["--model", "gigantic"])
    assert cli_main([*CLI_ARGS, "--data-dir", str(data), "--out", str(tmp_path / "z"), "--optimizer", "sgd",
                     "--lr", "1e5", "--epochs", "1"]) == 3  # fmt: skip
    assert "training diverged: loss is" in capsys.readouterr().err

    def offline(name: str, split: str, data_dir: object = None) -> Dataset:  # no files, no network
        raise DataNotFoundError(f"{name} {split}: files not found and the download failed")

    monkeypatch.setattr(loop_module, "load_dataset", offline)
    assert cli_main(["--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "the download failed" in err and "apt-get install -y dataset-fashion-mnist" in err and "--data-dir" in err
