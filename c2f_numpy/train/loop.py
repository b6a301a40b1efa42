"""The training loop behind ``c2f-train``: seeded, checkpointed, resumable bit for bit.

    from c2f_numpy.train import TrainConfig, Trainer
    summary = Trainer(TrainConfig(dataset="fashion_mnist", model="mini", epochs=10), "runs/fm").fit()

One optimizer step: lr from the cosine schedule of the step count -> forward -> cross-entropy with label
smoothing -> (stop on a non-finite loss) -> backward -> gradient clipping by global norm -> AdamW/SGD ->
EMA update. After every epoch: evaluation on the test split (and of the EMA weights), metrics files,
``checkpoint_last`` (and ``checkpoint_best`` when the test accuracy improved); with ``checkpoint_every`` also
every that many steps inside an epoch.

Why a resumed run is bitwise identical to an uninterrupted one: every random draw is a function of saved
state (the loader's batches of (seed, epoch, position); drop path's generator state is in the checkpoint),
the learning rate is a function of the step, the optimizer moments, EMA and BatchNorm buffers are saved
exactly, and the kernels reduce in a fixed order (same thread count). The partial sums of the epoch's
training loss are saved too, so even the metrics match.
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Augment, BatchLoader, Dataset, load_dataset
from ..io import atomic_write
from ..models import Conv2Former, create_model, model_config, model_stats
from .checkpoint import Checkpoint, TrainCheckpointError, load_checkpoint, save_checkpoint
from .metrics import plot_history, write_history
from .optim import SGD, AdamW, Optimizer
from .parallel import DataParallel, eval_sums, shard_forward_backward
from .schedule import cosine_lr

LAST, BEST = "checkpoint_last.npz", "checkpoint_best.npz"


class TrainingDiverged(RuntimeError):
    """The loss (or a weight) became NaN or infinite; the last good checkpoint was left as it was."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run's result. Saved in every checkpoint; a resume must use the same values."""

    dataset: str = "fashion_mnist"
    model: str = "mini"  # a name from c2f_numpy.models.ALL_VARIANTS ("micro", "mini", "n", ...)
    kernel_size: int | None = None  # None: the variant's
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    optimizer: str = "adamw"  # or "sgd" (Nesterov momentum)
    weight_decay: float = 0.05  # none on 1-d parameters (biases, norm scales, layer scales)
    momentum: float = 0.9  # SGD only
    label_smoothing: float = 0.1
    drop_path: float = 0.0  # the last block's rate; it grows linearly with depth from 0
    layer_scale_init: float = 1e-6
    clip_grad: float = 0.0  # max global gradient norm; 0 = off
    ema_decay: float = 0.0  # 0 = off; else e.g. 0.999 (bias-corrected: see train_step)
    crop_padding: int = 2
    hflip: bool = True
    mixup: float = 0.0
    cutmix: float = 0.0
    train_subset: int = 0  # 0 = the whole split; else that many samples, drawn with the seed
    test_subset: int = 0
    seed: int = 0
    dtype: str = "float32"
    backend: str = "numba"
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch only
    eval_batch_size: int = 128  # per process; at 500, micro's largest tensors were 50 MB (see kernels/allocator.py)
    eval_hflip: bool = False  # also report test-time augmentation: logits of the image and its mirror, averaged
    workers: int = 1  # processes sharing every batch (data parallel, see parallel.py); 1 = one process

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.lr > 0 and self.min_lr >= 0, "lr must be > 0 and min_lr >= 0"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (self.optimizer in ("adamw", "sgd"), f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.drop_path < 1, "drop_path must be in [0, 1)"),
            (self.clip_grad >= 0, "clip_grad must be >= 0"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (self.train_subset >= 0 and self.test_subset >= 0, "subset sizes must be >= 0"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
            (self.dtype in ("float32", "float64"), f"dtype must be 'float32' or 'float64', got {self.dtype!r}"),
            (self.seed >= 0, "seed must be >= 0"),
            (self.workers >= 1, "workers must be >= 1"),
            (self.batch_size >= self.workers, f"batch_size must be >= workers ({self.workers})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown settings {unknown}")
        return cls(**data)


def clip_grad_norm(grads: list[np.ndarray], max_norm: float) -> float:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm`` (``torch.nn.utils.
    clip_grad_norm_``: coefficient max_norm / (norm + 1e-6), capped at 1). Returns the norm before clipping."""
    norm = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= g.dtype.type(coef)
    return norm


def _subset(ds: Dataset, n: int, seed: int) -> Dataset:
    if not n or n >= len(ds):
        return ds
    return ds.subset(np.sort(np.random.default_rng([seed, 7]).permutation(len(ds))[:n]))


# how the summary line names each test accuracy column
_METRIC_NAMES = {"test_acc": "", "test_acc_hflip": " with the mirror", "test_acc_ema": " with the EMA weights",
                 "test_acc_ema_hflip": " with the EMA weights and the mirror"}  # fmt: skip


def _test_accuracies(row: dict[str, Any]) -> dict[str, float]:
    """The test accuracy columns of a metrics row: plain, EMA, with the mirror."""
    return {k: float(v) for k, v in row.items() if k.startswith("test_acc")}


def _metric_name(column: str) -> str:
    return _METRIC_NAMES.get(column, f" ({column})")


def _final_text(final: dict[str, float]) -> str:
    """'93.17%' or '93.17% (93.55% with the mirror)' from the last epoch's test accuracy columns."""
    if "test_acc" not in final:
        return "n/a"
    rest = [f"{v:.2f}%{_metric_name(k)}" for k, v in final.items() if k != "test_acc"]
    return f"{final['test_acc']:.2f}%" + (f" ({', '.join(rest)})" if rest else "")


@dataclass
class Summary:
    """How a run ended (also written as ``summary.json``).

    ``best_acc`` is the highest test accuracy of any evaluation (plain, EMA, with the mirror), ``best_metric`` the
    metrics column it came from (``"test_acc"``, ``"test_acc_ema"``, ``"test_acc_hflip"``, ...); ``final_acc``
    is the last epoch's plain ``test_acc`` and ``final`` every test accuracy column of the last epoch.
    """

    best_acc: float
    best_epoch: int
    final_acc: float
    epochs: int
    steps: int
    wall_seconds: float
    out_dir: str
    best_metric: str = "test_acc"
    final: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Builds the data, model and optimizer of a :class:`TrainConfig` and trains it into ``out_dir``.

    ``resume``: a checkpoint path (or True for ``out_dir/checkpoint_last.npz``) to continue from; its config
    must equal ``config`` (pass ``config=None`` to take the checkpoint's). ``train_set`` / ``test_set``
    replace the named data set (tests use small in-memory sets). ``log`` receives the human-readable lines;
    ``progress`` shows tqdm bars. ``stop_after_steps`` ends the run early after that many steps in total, as
    if killed (for tests and for splitting a run across sessions). With ``config.workers > 1`` the helper
    processes start at the first step or evaluation; ``fit`` stops them when it returns, :meth:`close` otherwise.
    """

    def __init__(
        self,
        config: TrainConfig | None,
        out_dir: str | Path,
        *,
        resume: str | Path | bool | None = None,
        data_dir: str | Path | None = None,
        train_set: Dataset | None = None,
        test_set: Dataset | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        stop_after_steps: int | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.log, self.progress, self.stop_after_steps = log, progress, stop_after_steps
        ckpt = None
        if resume:
            path = self.out_dir / LAST if resume is True else Path(resume)
            ckpt = load_checkpoint(path)
            saved = TrainConfig.from_dict(ckpt.meta["config"])
            if config is not None and config != saved:
                diff = {f.name: (getattr(saved, f.name), getattr(config, f.name)) for f in fields(TrainConfig)
                        if getattr(saved, f.name) != getattr(config, f.name)}  # fmt: skip
                raise TrainCheckpointError(
                    f"{path}: the checkpoint was made with other settings (checkpoint -> now): "
                    + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
                    + "; resume with the checkpoint's settings (pass only --resume and --out)"
                )
            config = saved
        if config is None:
            raise ValueError("Trainer: give a config, or a checkpoint to resume from")
        self.config = cfg = config

        if train_set is None:
            train_set = load_dataset(cfg.dataset, "train", data_dir)
        if test_set is None:
            test_set = load_dataset(cfg.dataset, "test", data_dir)
        self.train_set, self.test_set = (
            _subset(train_set, cfg.train_subset, cfg.seed),
            _subset(test_set, cfg.test_subset, cfg.seed + 1),
        )
        augment = Augment(crop_padding=cfg.crop_padding, hflip=cfg.hflip, mixup_alpha=cfg.mixup,
                          cutmix_alpha=cfg.cutmix)  # fmt: skip
        self.loader = BatchLoader(self.train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
                                  augment=augment)  # fmt: skip
        self.steps_per_epoch = len(self.loader)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = min(self.total_steps, round(cfg.warmup_epochs * self.steps_per_epoch))

        c, h, w = self.train_set.image_shape
        self.model: Conv2Former = create_model(
            cfg.model, in_chans=c, num_classes=self.train_set.num_classes, kernel_size=cfg.kernel_size,
            drop_path_rate=cfg.drop_path, layer_scale_init_value=cfg.layer_scale_init, dtype=np.dtype(cfg.dtype),
            seed=cfg.seed, backend=cfg.backend,
        )  # fmt: skip
        self.model.check_input(np.zeros((1, c, h, w), dtype=cfg.dtype))
        params = list(self.model.named_parameters())
        self.optimizer: Optimizer = (
            AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
            if cfg.optimizer == "adamw"
            else SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        )
        self.ema: dict[str, np.ndarray] | None = self.model.state_dict() if cfg.ema_decay else None
        # Data parallel: the helper processes start with the first step or evaluation (see _parallel); their
        # drop-path generators' states live here (kept current by DataParallel) so checkpoints can save them.
        self.parallel: DataParallel | None = None
        self.worker_rngs: list[dict[str, Any]] = [
            dict(np.random.default_rng([cfg.seed, 1, rank]).bit_generator.state) for rank in range(1, cfg.workers)
        ]

        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best = {"acc": -1.0, "epoch": 0}
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.wall_before = 0.0  # seconds spent in earlier sessions of this run
        if ckpt is not None:
            self._restore(ckpt)

    # ------------------------------------------------------------------------------------------ state
    def _meta(self, wall: float) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "step": self.step,
            "loader": self.loader.state_dict(),
            "drop_path_rng": self.model.drop_path_rng.bit_generator.state,
            "worker_drop_path_rngs": list(self.worker_rngs),
            "partial": dict(self.partial),
            "best": dict(self.best),
            "history": list(self.history),
            "wall_seconds": wall,
        }

    def _save(self, name: str, wall: float) -> None:
        bad = [k for k, p in self.model.named_parameters() if not np.isfinite(p.data).all()]
        if bad:
            raise TrainingDiverged(
                f"non-finite weights after step {self.step} ({bad[0]}{' ...' if len(bad) > 1 else ''}); "
                f"not saved, {self.out_dir / LAST} is the last good checkpoint"
            )
        ckpt = Checkpoint(self.model.state_dict(), self.optimizer.state_dict(), self.ema, self._meta(wall),
                          model_config(self.model))  # fmt: skip
        save_checkpoint(self.out_dir / name, ckpt)

    def _restore(self, ckpt: Checkpoint) -> None:
        meta = ckpt.meta
        try:
            self.model.load_state_dict(ckpt.model, strict=True)
            self.optimizer.load_state_dict(ckpt.optim)
            if self.ema is not None:
                if ckpt.ema is None:
                    raise TrainCheckpointError("checkpoint has no EMA weights but the config enables EMA")
                self.ema = {k: ckpt.ema[k].astype(v.dtype) for k, v in self.ema.items()}
            self.loader.load_state_dict(meta["loader"])
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = meta["drop_path_rng"]
            self.model.set_drop_path_rng(rng)
            if self.config.workers > 1:
                saved_rngs = meta["worker_drop_path_rngs"]
                if len(saved_rngs) != self.config.workers - 1:
                    raise ValueError(f"{len(saved_rngs)} helper generator states for {self.config.workers} workers")
                self.worker_rngs[:] = saved_rngs
            self.step = int(meta["step"])
            self.partial = dict(meta["partial"])
            self.best = dict(meta["best"])
            self.history = list(meta["history"])
            self.wall_before = float(meta["wall_seconds"])
        except (KeyError, ValueError, TypeError) as exc:
            raise TrainCheckpointError(f"checkpoint does not fit this run: {exc}") from exc
        if self.step != self.loader.epoch * self.steps_per_epoch + self.loader.position:
            raise TrainCheckpointError(
                f"checkpoint is inconsistent: step {self.step} but loader at epoch {self.loader.epoch}, "
                f"batch {self.loader.position}"
            )

    # ------------------------------------------------------------------------------------------ compute
    def train_step(self, x: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
        """One optimizer step on a batch; returns (loss, correct predictions)."""
        cfg, model = self.config, self.model
        self.optimizer.lr = cosine_lr(self.step, self.total_steps, cfg.lr, warmup_steps=self.warmup_steps,
                                      min_lr=cfg.min_lr)  # fmt: skip
        if x.dtype != model.dtype:
            x = x.astype(model.dtype)
        if targets.ndim == 2 and targets.dtype != model.dtype:
            targets = targets.astype(model.dtype)
        model.zero_grad()
        if cfg.workers > 1:
            loss, correct = self._parallel().forward_backward(x, targets)
        else:
            loss, correct = shard_forward_backward(model, x, targets, cfg.label_smoothing, 1.0)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {loss} at step {self.step + 1} (epoch {self.loader.epoch + 1}); stopped before the "
                f"update. {self.out_dir / LAST} is the last good checkpoint. Try a lower --lr or --clip-grad 1.0"
            )
        if cfg.clip_grad:
            clip_grad_norm([p.grad for _, p in model.named_parameters() if p.grad is not None], cfg.clip_grad)
        self.optimizer.step()
        if self.ema is not None:
            # Bias-corrected (as Adam's moments): after t steps the EMA is sum_i d^(t-i) (1-d) w_i / (1 - d^t), the
            # weights visited so far, exponentially weighted, with no share for the initial weights. Without it
            # the EMA of a 14-epoch run kept a share of the init's BatchNorm variances (1.0 against ~0.02 learnt)
            # and scored 10% for the first epochs. Written as a per-step decay so the stored EMA is the average.
            t = self.step + 1
            d = 1.0 - (1.0 - cfg.ema_decay) / (1.0 - cfg.ema_decay**t)
            for key, value in model.state_arrays():  # live arrays: state_dict() would copy every weight
                e = self.ema[key]
                if np.issubdtype(e.dtype, np.floating):
                    e *= d
                    e += (1 - d) * value
                else:
                    e[...] = value
        self.step += 1
        return loss, correct

    def _parallel(self) -> DataParallel:
        if self.parallel is None:
            cfg = self.config
            self.parallel = DataParallel(
                self.model, workers=cfg.workers, batch_size=cfg.batch_size, label_smoothing=cfg.label_smoothing,
                num_classes=self.train_set.num_classes, test_set=self.test_set, eval_batch_size=cfg.eval_batch_size,
                eval_hflip=cfg.eval_hflip, rng_states=self.worker_rngs,
                model_kwargs={"drop_path_rate": cfg.drop_path, "layer_scale_init_value": cfg.layer_scale_init,
                              "backend": cfg.backend, "seed": cfg.seed},
            )  # fmt: skip
        return self.parallel

    def close(self) -> None:
        """Stop the data-parallel helper processes, if any (``fit`` does this when it returns)."""
        if self.parallel is not None:
            self.parallel.close()
            self.parallel = None

    def evaluate(self, weights: dict[str, np.ndarray] | None = None, suffix: str = "") -> dict[str, float]:
        """Mean cross-entropy and top-1 accuracy (%) on the test split, in eval mode, as the metrics row's
        ``test_loss{suffix}`` and ``test_acc{suffix}``; with ``eval_hflip`` also ``test_loss{suffix}_hflip`` and
        ``test_acc{suffix}_hflip`` of the logits averaged over each image and its left-right mirror (one more
        forward pass). ``weights`` (e.g. the EMA, suffix "_ema") are swapped in for the evaluation and the
        model's own restored after."""
        cfg, model, ds = self.config, self.model, self.test_set
        saved = model.state_dict() if weights is not None else None
        if weights is not None:
            model.load_state_dict(weights)
        try:
            if cfg.workers > 1:
                sums = self._parallel().evaluate()
            else:
                sums = eval_sums(model, ds.images, ds.labels, ds.mean, ds.std, cfg.eval_batch_size, cfg.eval_hflip)
        finally:
            if saved is not None:
                model.load_state_dict(saved)
        row = {}
        for key, v in sums.items():  # "loss", "acc", "loss_hflip", "acc_hflip"
            kind, _, view = key.partition("_")
            row[f"test_{kind}{suffix}{'_' if view else ''}{view}"] = (100.0 * v if kind == "acc" else v) / len(ds)
        return row

    # ------------------------------------------------------------------------------------------ the run
    def fit(self) -> Summary:
        """Train to the configured number of epochs (or ``stop_after_steps``) and return the summary."""
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> Summary:
        tqdm = importlib.import_module("tqdm").tqdm  # through importlib: tqdm ships no type information

        cfg = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()

        def wall() -> float:
            return self.wall_before + time.perf_counter() - start

        if self.step == 0:
            stats = model_stats(self.model, self.train_set.image_shape[1:])
            self.log(
                f"c2f-train: {cfg.model} (k={self.model.kernel_size}, {stats['params'] / 1e6:.2f}M params, "
                f"{stats['macs'] / 1e6:.1f}M MACs/image) on {cfg.dataset}: {len(self.train_set)} train / "
                f"{len(self.test_set)} test images, {cfg.epochs} epochs x {self.steps_per_epoch} steps of "
                f"{cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g}, backend {cfg.backend}, {cfg.dtype}"
            )
        else:
            self.log(f"c2f-train: resuming at step {self.step} (epoch {self.loader.epoch + 1}) from {self.out_dir}")
        while self.step < self.total_steps:
            epoch = self.loader.epoch
            bar = tqdm(total=self.steps_per_epoch, initial=self.loader.position, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="step", disable=not self.progress, dynamic_ncols=True, leave=True)  # fmt: skip
            t_epoch = time.perf_counter() - self.partial["seconds"]
            try:
                for x, targets in self.loader:
                    loss, correct = self.train_step(x, targets)
                    p = self.partial
                    p["loss_sum"] += loss * len(x)
                    p["correct"] += correct
                    p["seen"] += len(x)
                    p["seconds"] = time.perf_counter() - t_epoch
                    bar.update(1)
                    seen = p["seen"]
                    shown = {"loss": f"{p['loss_sum'] / seen:.4f}", "acc": f"{100 * p['correct'] / seen:.2f}%",
                             "img/s": f"{seen / p['seconds']:.0f}"}  # fmt: skip
                    bar.set_postfix(shown, refresh=False)
                    if (
                        self.loader.position < self.steps_per_epoch
                        and cfg.checkpoint_every
                        and (self.step % cfg.checkpoint_every == 0)
                    ):
                        self._save(LAST, wall())
                    if self.stop_after_steps is not None and self.step >= self.stop_after_steps:
                        if self.loader.position >= self.steps_per_epoch:
                            self._end_epoch(epoch, wall)  # saves, with the epoch's evaluation
                        else:
                            self._save(LAST, wall())
                        bar.close()
                        self.log(f"c2f-train: stopped after step {self.step} as asked; resume with --resume")
                        return self._summary(wall())
            finally:
                bar.close()
            self._end_epoch(epoch, wall)
        summary = self._summary(wall())
        self.log(
            f"c2f-train: done. best test accuracy {summary.best_acc:.2f}%{_metric_name(summary.best_metric)} "
            f"(epoch {summary.best_epoch}), final {_final_text(summary.final)}, wall time "
            f"{summary.wall_seconds / 60:.1f} min; files in {self.out_dir}"
        )
        text = json.dumps(asdict(summary), indent=2) + "\n"
        atomic_write(self.out_dir / "summary.json", lambda fh: fh.write(text.encode()))
        return summary

    def _end_epoch(self, epoch: int, wall: Callable[[], float]) -> None:
        p = self.partial
        t0 = time.perf_counter()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.step,
            "lr": self.optimizer.lr,
            "train_loss": p["loss_sum"] / p["seen"],
            "train_acc": 100.0 * p["correct"] / p["seen"],
        } | self.evaluate()
        if self.ema is not None:
            row |= self.evaluate(self.ema, "_ema")
        test_loss, test_acc = row["test_loss"], row["test_acc"]
        acc = max(_test_accuracies(row).values())
        row |= {
            "train_seconds": p["seconds"],
            "eval_seconds": time.perf_counter() - t0,
            "img_per_s": p["seen"] / p["seconds"] if p["seconds"] else 0.0,
            "wall_seconds": wall(),
        }
        self.history.append(row)
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        improved = acc > self.best["acc"]
        if improved:
            self.best = {"acc": acc, "epoch": epoch + 1}
        extra = f", EMA {row['test_acc_ema']:.2f}%" if self.ema is not None else ""
        if self.config.eval_hflip:
            extra += f", with mirror {row['test_acc_hflip']:.2f}%"
            extra += f" (EMA {row['test_acc_ema_hflip']:.2f}%)" if self.ema is not None else ""
        self.log(
            f"epoch {epoch + 1}/{self.config.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}% | "
            f"test loss {test_loss:.4f} acc {test_acc:.2f}%{extra} | {row['img_per_s']:.0f} img/s, "
            f"wall {row['wall_seconds'] / 60:.1f} min"
        )
        self._save(LAST, row["wall_seconds"])
        if improved:
            self._save(BEST, row["wall_seconds"])
        write_history(self.out_dir, self.history)
        plot_history(self.out_dir / "curves.png", self.history, f"{self.config.model} on {self.config.dataset}")

    def _summary(self, wall: float) -> Summary:
        final = self.history[-1] if self.history else {}
        best_epoch = int(self.best["epoch"])
        best_row = self.history[best_epoch - 1] if 0 < best_epoch <= len(self.history) else {}
        accs = [k for k, v in _test_accuracies(best_row).items() if v == self.best["acc"]]
        return Summary(
            best_acc=float(self.best["acc"]), best_epoch=best_epoch,
            final_acc=float(final.get("test_acc", float("nan"))),
            epochs=len(self.history), steps=self.step, wall_seconds=wall, out_dir=str(self.out_dir),
            best_metric=accs[0] if accs else "test_acc",
            final=_test_accuracies(final),
        )  # fmt: skip
