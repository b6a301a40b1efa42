"""Data-parallel training (train/parallel.py): the split step's gradients against the slices computed in one
process, the split evaluation against one process, bitwise resume with helpers, and a dead helper."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numba
import numpy as np
import pytest

from c2f_numpy.data import Dataset
from c2f_numpy.models import Conv2Former, create_model
from c2f_numpy.testing import tolerance
from c2f_numpy.train import LAST, TrainConfig, load_checkpoint
from c2f_numpy.train.parallel import DataParallel, WorkerError, split_bounds, threads_per_process
from c2f_numpy.train.step import eval_sums, shard_forward_backward

from .test_loop import BASE, assert_same_run, make_dataset, run

PAR = replace(BASE, workers=2)


def make_parallel(
    model: Conv2Former,
    workers: int,
    batch: int,
    rngs: list,
    test_set: Dataset,
    hflip: bool = True,
    val_set: Dataset | None = None,
) -> DataParallel:
    return DataParallel(
        model, workers=workers, batch_size=batch, label_smoothing=0.1, num_classes=4, test_set=test_set,
        val_set=val_set, eval_batch_size=8, eval_hflip=hflip, rng_states=rngs,
        model_kwargs={"drop_path_rate": 0.3, "layer_scale_init_value": 1.0, "backend": "numba", "seed": 0},
    )  # fmt: skip


def toy_model(dtype: type) -> Conv2Former:
    # O(1) layer scales and a drop path rate high enough that the helpers' masks matter
    return create_model("micro", in_chans=1, num_classes=4, kernel_size=3, drop_path_rate=0.3,
                        layer_scale_init_value=1.0, dtype=dtype, seed=0)  # fmt: skip


def test_split_bounds() -> None:
    assert split_bounds(10, 3) == [0, 4, 7, 10]
    assert split_bounds(128, 2) == [0, 64, 128]
    assert split_bounds(2, 2) == [0, 1, 2]


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("soft", [False, True])
def test_split_step_sums_the_slices_gradients(workers: int, soft: bool) -> None:
    dtype = np.float64
    test_set = make_dataset("test", 20, 1)
    images, labels = make_dataset("train", 10, 0).images, make_dataset("train", 10, 0).labels
    x = ((images / 255.0 - 0.3) / 0.3).astype(dtype)
    targets = np.eye(4, dtype=dtype)[labels] * 0.7 + 0.075 if soft else labels
    rngs = [np.random.default_rng([5, r]).bit_generator.state for r in range(1, workers)]

    # the reference: every slice in this process, each with its rank's drop-path generator, grads accumulated
    ref = toy_model(dtype)
    ref.zero_grad()
    bounds = split_bounds(len(x), workers)
    want_loss, want_correct = 0.0, 0
    for rank in range(workers):
        if rank:
            gen = np.random.Generator(np.random.PCG64())
            gen.bit_generator.state = rngs[rank - 1]
            ref.set_drop_path_rng(gen)
        lo, hi = bounds[rank], bounds[rank + 1]
        loss, correct = shard_forward_backward(ref, x[lo:hi], targets[lo:hi], 0.1, (hi - lo) / len(x))
        want_loss += loss * (hi - lo) / len(x)
        want_correct += correct
    want = ref.grads()

    model = toy_model(dtype)
    helper_rngs = list(rngs)
    with make_parallel(model, workers, len(x), helper_rngs, test_set) as dp:
        model.zero_grad()
        loss, correct = dp.forward_backward(x, targets)
    got = model.grads()
    tol = tolerance(dtype)
    assert loss == pytest.approx(want_loss, rel=tol) and correct == want_correct
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=tol, atol=tol, err_msg=key)
    # the helpers drew masks (drop path), and reported where their generators stand now
    assert helper_rngs != rngs
    # ... and the slices really differ from one whole-batch pass (BatchNorm statistics, masks): not a no-op
    whole = toy_model(dtype)
    whole.zero_grad()
    shard_forward_backward(whole, x, targets, 0.1, 1.0)
    assert not np.allclose(whole.grads()["downsample_layers.0.0.weight"], want["downsample_layers.0.0.weight"])


def test_split_evaluation_matches_one_process() -> None:
    dtype = np.float64
    test_set = make_dataset("test", 21, 1)
    model = toy_model(dtype)
    model.eval()  # BatchNorm's running statistics, made O(1) so the check is not of an identity
    for name, buf in model.named_buffers():
        if name.endswith("running_var"):
            buf[...] = np.linspace(0.5, 2.0, buf.size)
        elif name.endswith("running_mean"):
            buf[...] = np.linspace(-0.3, 0.3, buf.size)
    model.train()
    val_set = make_dataset("val", 13, 2)
    want = eval_sums(model, test_set.images, test_set.labels, test_set.mean, test_set.std, 8, True)
    want_val = eval_sums(model, val_set.images, val_set.labels, val_set.mean, val_set.std, 8, True)
    rngs = [np.random.default_rng(1).bit_generator.state]
    with make_parallel(model, 2, 4, rngs, test_set, val_set=val_set) as dp:
        got, got_val = dp.evaluate(), dp.evaluate("val")
        with pytest.raises(ValueError, match="no 'train' set"):
            dp.evaluate("train")
    assert got.keys() == want.keys() == {"loss", "acc", "loss_hflip", "acc_hflip"}
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=tolerance(dtype)), key
        assert got_val[key] == pytest.approx(want_val[key], rel=tolerance(dtype)), key
    assert got_val["loss"] != pytest.approx(got["loss"])  # two sets, not the same one twice
    assert model.training  # evaluation leaves the model in training mode


def test_helpers_leave_no_file_and_stop_with_the_trainer() -> None:
    shm = Path("/dev/shm")
    model = toy_model(np.float32)
    rngs = [np.random.default_rng(r).bit_generator.state for r in (1, 2)]
    threads = numba.get_num_threads()
    dp = make_parallel(model, 3, 4, rngs, make_dataset("test", 4, 1))
    try:
        assert numba.get_num_threads() == min(threads, threads_per_process(3))  # rank 0 takes its share only
        if shm.is_dir():  # this trainer's file (other tests may run beside this one, under xdist)
            assert dp._path is not None and Path(dp._path).parent == shm
            assert not Path(dp._path).exists()  # unlinked once the helpers mapped it
        procs = list(dp.procs)
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
    finally:
        dp.close()
    assert all(p.returncode == 0 for p in procs)
    assert numba.get_num_threads() == threads


def test_a_dead_helper_is_a_clear_error() -> None:
    model = toy_model(np.float32)
    test_set = make_dataset("test", 4, 1)
    x = np.zeros((4, 1, 16, 16), np.float32)
    with make_parallel(model, 2, 4, [np.random.default_rng(1).bit_generator.state], test_set) as dp:
        dp.procs[0].kill()
        dp.procs[0].wait()
        with pytest.raises(WorkerError, match=r"helper process 1 \(pid \d+\) exited"):
            model.zero_grad()
            dp.forward_backward(x, np.zeros(4, np.int64))


def test_wrong_batch_is_a_clear_error() -> None:
    model = toy_model(np.float32)
    rngs = [np.random.default_rng(1).bit_generator.state]
    with make_parallel(model, 2, 4, rngs, make_dataset("test", 4, 1)) as dp, pytest.raises(ValueError, match="got 3"):
        dp.forward_backward(np.zeros((3, 1, 16, 16), np.float32), np.zeros(3, np.int64))


@pytest.fixture(scope="module")
def parallel_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parallel_uninterrupted")
    run(out, PAR)
    return out


@pytest.mark.parametrize("stop", [3, 6, 8])
def test_resume_with_helpers_is_bitwise_identical(tmp_path: Path, parallel_run: Path, stop: int) -> None:
    run(tmp_path, PAR, stop_after_steps=stop)
    meta = load_checkpoint(tmp_path / LAST).meta
    assert meta["step"] == stop and len(meta["worker_drop_path_rngs"]) == 1
    run(tmp_path, None, resume=True)
    assert_same_run(parallel_run, tmp_path)
    ref = load_checkpoint(parallel_run / LAST).meta
    assert ref["worker_drop_path_rngs"] == load_checkpoint(tmp_path / LAST).meta["worker_drop_path_rngs"]


def test_parallel_run_learns_like_one_process(parallel_run: Path, tmp_path: Path) -> None:
    rows = load_checkpoint(parallel_run / LAST).meta["history"]
    assert rows[-1]["train_loss"] < 0.9 * rows[0]["train_loss"] and rows[-1]["train_acc"] > 25.0  # as test_loop's
    # with the same seed the two runs start alike and then drift apart (BatchNorm sees half batches)
    single = load_checkpoint(run(tmp_path, BASE).out_dir / LAST).meta["history"]
    assert rows[0]["train_loss"] == pytest.approx(single[0]["train_loss"], rel=0.2)
    assert rows[0]["train_loss"] != single[0]["train_loss"]


def test_workers_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        TrainConfig(workers=0)
    with pytest.raises(ValueError, match=r"batch_size must be >= workers \(4\)"):
        TrainConfig(batch_size=2, workers=4)
    monkeypatch.setenv("C2F_NUM_THREADS", "8")
    assert [threads_per_process(w) for w in (1, 2, 3, 16)] == [8, 4, 2, 1]
