"""Data-parallel training on one machine: every batch split between processes, the gradients summed.

On the small maps of the small-image models most ops are too small, or serial, to keep two cores busy inside one
process: a ``micro`` training step (batch 128, 1x28x28) took 399-443 ms on two threads, while two one-thread
processes side by side each did a batch of 64 in 284-306 ms (``benchmarks/steptime.py``, 2026-12-01). So with
``TrainConfig.workers = W`` the trainer (rank 0) and W - 1 helper processes (``python -m
c2f_numpy.train.worker``) each take a contiguous slice of every batch:

    rank r, slice of n_r images:  loss_r = mean cross-entropy of the slice,  g_r = d(n_r / B * loss_r) / dw
    batch:                        loss = sum_r n_r / B * loss_r,             g = g_0 + g_1 + ... (rank order)

so g is the gradient of the batch's mean loss. The trainer alone then clips, steps the optimizer and updates
the EMA; before each step it copies its weights (and BatchNorm buffers) into the helpers. Evaluation is split
the same way, by ranges of the test set (or of the validation set). Each process runs ``C2F_NUM_THREADS // W``
threads (at least one).

What differs from one process: BatchNorm normalises each slice with the slice's own statistics, as
``torch.nn.parallel.DistributedDataParallel`` without ``SyncBatchNorm`` does, and its running averages come from
rank 0's slice (DDP also keeps rank 0's buffers); drop path draws each slice's masks from that rank's generator
(all saved in the checkpoint). A run is deterministic for a given W and thread count and resumes bit for bit;
runs with different W agree only statistically.

Transport: one file in ``/dev/shm`` (a temporary file elsewhere), mapped by every process, holds the weights,
the batch, the helpers' gradients and the test (and validation) set; it is unlinked as soon as all helpers have
mapped it, so nothing is left behind even if the trainer is killed. Commands and replies are JSON lines on the helpers'
stdin / stdout (no pickle); a helper exits when its stdin closes, so helpers never outlive the trainer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..data import Dataset
from ..models import Conv2Former, model_config
from .step import eval_sums, live_state, shard_forward_backward

_ALIGN = 64  # bytes: every region starts on a cache line


def split_bounds(n: int, parts: int) -> list[int]:
    """Boundaries of ``parts`` contiguous slices of ``range(n)``, sizes differing by at most one, larger first."""
    q, r = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + q + (i < r))
    return bounds


@dataclass(frozen=True)
class Region:
    """One array in the shared file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _layout(specs: Sequence[tuple[str, Any, tuple[int, ...]]]) -> tuple[list[Region], int]:
    regions, offset = [], 0
    for name, dtype, shape in specs:
        region = Region(name, np.dtype(dtype).str, tuple(int(s) for s in shape), offset)
        regions.append(region)
        offset += -(-max(region.nbytes, 1) // _ALIGN) * _ALIGN
    return regions, offset


def _views(buf: np.ndarray, regions: Sequence[Region]) -> dict[str, np.ndarray]:
    """Plain ndarray views (not np.memmap) of the regions, usable by every op and kernel as they are."""
    return {r.name: np.asarray(buf[r.offset : r.offset + r.nbytes]).view(r.dtype).reshape(r.shape) for r in regions}


def _split_flat(flat: np.ndarray, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Views of ``flat`` shaped like ``arrays``, one after the other."""
    out, at = [], 0
    for a in arrays:
        out.append(flat[at : at + a.size].reshape(a.shape))
        at += a.size
    return out


def threads_per_process(workers: int) -> int:
    total = int(os.environ.get("C2F_NUM_THREADS") or os.cpu_count() or 1)
    return max(1, total // workers)


class WorkerError(RuntimeError):
    """A helper process failed or disappeared."""


# ---------------------------------------------------------------------------------------------- rank 0
class DataParallel:
    """Rank 0's side: starts the W - 1 helpers and runs the split steps and evaluations.

    ``rng_states``: the helpers' drop-path generator states (rank 1 first), a list this object keeps current in
    place after every step, so the trainer can save it. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        model: Conv2Former,
        *,
        workers: int,
        batch_size: int,
        label_smoothing: float,
        num_classes: int,
        test_set: Dataset,
        eval_batch_size: int,
        eval_hflip: bool,
        rng_states: list[dict[str, Any]],
        model_kwargs: dict[str, Any],
        val_set: Dataset | None = None,
    ) -> None:
        if workers < 2:
            raise ValueError(f"DataParallel: needs workers >= 2, got {workers}")
        if batch_size < workers:
            raise ValueError(f"DataParallel: batch_size {batch_size} is smaller than workers {workers}")
        if len(rng_states) != workers - 1:
            raise ValueError(f"DataParallel: need {workers - 1} helper generator states, got {len(rng_states)}")
        self.model, self.workers, self.batch_size = model, workers, batch_size
        self.label_smoothing, self.rng_states = label_smoothing, rng_states
        self.eval_batch_size, self.eval_hflip = eval_batch_size, eval_hflip
        self.eval_sets = {"test": test_set} | ({"val": val_set} if val_set is not None else {})
        self.bounds = split_bounds(batch_size, workers)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._restore_threads: list[Any] = []

        self.state = live_state(model)
        self.params = [p for _, p in model.named_parameters()]
        dtype = model.dtype
        n_state = sum(a.size for _, a in self.state)
        n_params = sum(p.data.size for p in self.params)
        specs: list[tuple[str, Any, tuple[int, ...]]] = [
            ("state", dtype, (n_state,)),
            ("x", dtype, (batch_size, *test_set.image_shape)),
            ("labels", np.int64, (batch_size,)),
            ("soft", dtype, (batch_size, num_classes)),
            *((f"grad{r}", dtype, (n_params,)) for r in range(1, workers)),
            *((f"{split}_{kind}", a.dtype, a.shape) for split, ds in self.eval_sets.items()
              for kind, a in (("images", ds.images), ("labels", ds.labels))),
        ]  # fmt: skip
        regions, nbytes = _layout(specs)
        shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="c2f-train-", suffix=".bin", dir=shm_dir)
        self._path: str | None = path
        try:
            os.ftruncate(fd, nbytes)
            os.close(fd)
            self._buf = np.memmap(path, dtype=np.uint8, mode="r+", shape=(nbytes,))
            self.views = _views(self._buf, regions)
            for split, ds in self.eval_sets.items():
                self.views[f"{split}_images"][...] = ds.images
                self.views[f"{split}_labels"][...] = ds.labels
            self.state_views = _split_flat(self.views["state"], [a for _, a in self.state])
            self.grad_views = [_split_flat(self.views[f"grad{r}"], [p.data for p in self.params])
                               for r in range(1, workers)]  # fmt: skip

            threads = threads_per_process(workers)
            env = dict(os.environ)
            for var in ("C2F_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                        "MKL_NUM_THREADS"):  # fmt: skip
                env[var] = str(threads)
            # The helpers must import this very c2f_numpy (a source checkout need not be installed).
            package_root = str(Path(__file__).resolve().parents[2])
            env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
            init = {
                "path": path, "nbytes": nbytes, "regions": [asdict(r) for r in regions],
                "model": model_config(model), "model_kwargs": model_kwargs,
                "state_keys": [[k, list(a.shape)] for k, a in self.state],
                "label_smoothing": label_smoothing, "mean": list(test_set.mean), "std": list(test_set.std),
                "eval_batch_size": eval_batch_size, "eval_hflip": eval_hflip,
            }  # fmt: skip
            for rank in range(1, workers):
                proc = subprocess.Popen([sys.executable, "-m", "c2f_numpy.train.worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env)  # fmt: skip
                self.procs.append(proc)
                self._send(rank, init | {"rank": rank, "rng": rng_states[rank - 1]})
            for rank in range(1, workers):
                self._receive(rank)  # "ready": it has mapped the file
        except BaseException:
            self.close()
            raise
        finally:
            with contextlib.suppress(OSError):  # where an open file cannot be unlinked, close() tries again
                Path(path).unlink(missing_ok=True)
        self._limit_own_threads(threads)

    def _limit_own_threads(self, threads: int) -> None:
        import numba
        from threadpoolctl import threadpool_limits

        before = numba.get_num_threads()
        numba.set_num_threads(min(threads, before))
        limiter = threadpool_limits(limits=threads)
        self._restore_threads = [lambda: numba.set_num_threads(before), limiter.restore_original_limits]

    # -------------------------------------------------------------------------------------------- messages
    def _send(self, rank: int, message: dict[str, Any]) -> None:
        stdin = self.procs[rank - 1].stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(message).encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(self._died(rank)) from exc

    def _receive(self, rank: int) -> dict[str, Any]:
        stdout = self.procs[rank - 1].stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise WorkerError(self._died(rank))
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"training helper process {rank} failed:\n{reply['error']}")
        return reply

    def _died(self, rank: int) -> str:
        proc = self.procs[rank - 1]
        code = proc.poll()
        return f"training helper process {rank} (pid {proc.pid}) exited" + (
            f" with status {code}" if code is not None else ""
        )

    def _publish_state(self) -> None:
        for (_, a), v in zip(self.state, self.state_views, strict=True):
            v[...] = a

    # -------------------------------------------------------------------------------------------- work
    def forward_backward(self, x: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        """The batch's forward and backward, split: leaves the batch gradient in the model's parameters
        (which must have been zeroed) and returns (mean loss, correct predictions)."""
        b, bounds = self.batch_size, self.bounds
        if len(x) != b or len(targets) != b:
            raise ValueError(f"DataParallel: batches must have {b} images, got {len(x)} and {len(targets)} targets")
        self._publish_state()
        self.views["x"][...] = x
        soft = targets.ndim == 2
        self.views["soft" if soft else "labels"][...] = targets
        for rank in range(1, self.workers):
            lo, hi = bounds[rank], bounds[rank + 1]
            self._send(rank, {"cmd": "step", "lo": lo, "hi": hi, "soft": soft, "share": (hi - lo) / b})
        n0 = bounds[1]
        loss0, correct = shard_forward_backward(self.model, x[:n0], targets[:n0], self.label_smoothing, n0 / b)
        total = loss0 * n0
        for rank in range(1, self.workers):
            reply = self._receive(rank)
            self.rng_states[rank - 1] = reply["rng"]
            total += reply["loss"] * (bounds[rank + 1] - bounds[rank])
            correct += int(reply["correct"])
        loss = total / b
        if np.isfinite(loss):
            for p, *slices in zip(self.params, *self.grad_views, strict=True):
                if p.grad is None:
                    p.grad = np.zeros_like(p.data)
                for g in slices:
                    p.grad += g
        return loss, correct

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """:func:`eval_sums` of the whole test (or "val") set with the model's current weights, split by ranges."""
        if split not in self.eval_sets:
            raise ValueError(f"DataParallel.evaluate: no {split!r} set; have {sorted(self.eval_sets)}")
        ds = self.eval_sets[split]
        bounds = split_bounds(len(ds), self.workers)
        self._publish_state()
        for rank in range(1, self.workers):
            self._send(rank, {"cmd": "eval", "split": split, "lo": bounds[rank], "hi": bounds[rank + 1]})
        sums = eval_sums(self.model, ds.images[: bounds[1]], ds.labels[: bounds[1]], ds.mean, ds.std,
                         self.eval_batch_size, self.eval_hflip)  # fmt: skip
        for rank in range(1, self.workers):
            for k, v in self._receive(rank).items():
                sums[k] += v
        return sums

    def close(self) -> None:
        """Stop the helpers (closing their stdin) and give this process its threads back."""
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                with contextlib.suppress(OSError):  # a helper that died already
                    proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs = []
        if self._path is not None:
            with contextlib.suppress(OSError):
                Path(self._path).unlink(missing_ok=True)
            self._path = None
        for restore in self._restore_threads:
            restore()
        self._restore_threads = []

    def __enter__(self) -> DataParallel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- helpers
def _helper(stdin: IO[bytes], stdout: IO[bytes]) -> int:
    def reply(message: dict[str, Any]) -> None:
        stdout.write(json.dumps(message).encode() + b"\n")
        stdout.flush()

    line = stdin.readline()
    if not line:
        return 0
    init = json.loads(line)
    try:
        buf = np.memmap(init["path"], dtype=np.uint8, mode="r+", shape=(init["nbytes"],))
        views = _views(buf, [Region(**(r | {"shape": tuple(r["shape"])})) for r in init["regions"]])
        model = Conv2Former(**init["model"], **init["model_kwargs"])
        rng = np.random.Generator(np.random.PCG64())
        rng.bit_generator.state = init["rng"]
        model.set_drop_path_rng(rng)
        state = live_state(model)
        mine = [[k, list(a.shape)] for k, a in state]
        if mine != init["state_keys"]:
            raise WorkerError(f"helper built another model: {mine} != {init['state_keys']}")
        state_views = _split_flat(views["state"], [a for _, a in state])
        params = [p for _, p in model.named_parameters()]
        grad_views = _split_flat(views[f"grad{init['rank']}"], [p.data for p in params])
    except Exception:
        reply({"error": traceback.format_exc()})
        return 1
    reply({"ready": True})
    for line in stdin:
        message = json.loads(line)
        try:
            for (_, a), v in zip(state, state_views, strict=True):
                a[...] = v
            if message["cmd"] == "step":
                lo, hi = message["lo"], message["hi"]
                targets = views["soft" if message["soft"] else "labels"][lo:hi]
                model.zero_grad()
                loss, correct = shard_forward_backward(model, views["x"][lo:hi], targets, init["label_smoothing"],
                                                       message["share"])  # fmt: skip
                for p, g in zip(params, grad_views, strict=True):
                    if p.grad is None:
                        g[...] = 0
                    else:
                        g[...] = p.grad
                reply({"loss": loss, "correct": correct, "rng": model.drop_path_rng.bit_generator.state})
            elif message["cmd"] == "eval":
                lo, hi, split = message["lo"], message["hi"], message["split"]
                reply(eval_sums(model, views[f"{split}_images"][lo:hi], views[f"{split}_labels"][lo:hi],
                                init["mean"], init["std"], init["eval_batch_size"], init["eval_hflip"]))  # fmt: skip
            else:
                raise WorkerError(f"unknown command {message['cmd']!r}")
        except Exception:
            reply({"error": traceback.format_exc()})
    return 0


def helper_main() -> int:
    """A helper process (``python -m c2f_numpy.train.worker``); started by :class:`DataParallel`, not by hand."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it then closes our stdin
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    from ..kernels.allocator import retain_freed_memory

    retain_freed_memory()  # as c2f-train: every step allocates the same tensors
    try:
        return _helper(stdin, stdout)
    except BrokenPipeError:  # the trainer is gone
        return 0
