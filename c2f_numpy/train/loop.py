"""The training loop behind ``c2f-train``: seeded, checkpointed, resumable bit for bit.

    from c2f_numpy.train import TrainConfig, Trainer
    summary = Trainer(TrainConfig(epochs=1), "runs/quick").fit()  # the defaults: recipe fashion_mnist_30min

One optimizer step: lr from the cosine schedule of the step count -> forward -> cross-entropy with label
smoothing -> (stop on a non-finite loss) -> backward -> gradient clipping by global norm -> AdamW/SGD ->
EMA update; the step's lr, loss and accuracy go to the per-step log (``steps.csv``). After every epoch:
evaluation on the validation split (held out of the training split, see splits.py) and on the test split (and
of the EMA weights), metrics files and curves, ``checkpoint_last`` (and ``checkpoint_best`` when the
validation accuracy improved: the test split is never selected on); with ``checkpoint_every`` also every that
many steps inside an epoch.

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

from ..backend import FAST, resolve
from ..data import Augment, BatchLoader, Dataset, load_dataset
from ..io import atomic_write
from ..models import Conv2Former, create_model, model_config, model_stats
from .checkpoint import Checkpoint, TrainCheckpointError, load_checkpoint, save_checkpoint
from .metrics import plot_history, write_history, write_steps
from .optim import SGD, AdamW, Optimizer
from .parallel import DataParallel
from .schedule import cosine_lr, warmup_steps
from .splits import run_splits
from .step import eval_sums, shard_forward_backward

LAST, BEST = "checkpoint_last.npz", "checkpoint_best.npz"


class TrainingDiverged(RuntimeError):
    """The loss (or a weight) became NaN or infinite; the last good checkpoint was left as it was."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run's result. Saved in every checkpoint; a resume must use the same values.

    The defaults are the recipe ``fashion_mnist_30min`` (train/recipes.py; a test keeps the two equal)."""

    dataset: str = "fashion_mnist"
    model: str = "micro"  # a name from c2f_numpy.models.ALL_VARIANTS ("micro", "mini", "n", ...)
    kernel_size: int | None = None  # None: the variant's
    epochs: int = 11
    batch_size: int = 128
    lr: float = 3e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 0.5  # capped at warmup_fraction of the run (schedule.warmup_steps)
    warmup_fraction: float = 0.05
    optimizer: str = "adamw"  # or "sgd" (Nesterov momentum)
    weight_decay: float = 0.05  # none on 1-d parameters (biases, norm scales, layer scales)
    momentum: float = 0.9  # SGD only
    label_smoothing: float = 0.1
    drop_path: float = 0.0  # the last block's rate; it grows linearly with depth from 0
    layer_scale_init: float = 1e-2  # the recipe's; the official 1e-6 is ImageNet's, for 300-epoch runs
    clip_grad: float = 0.0  # max global gradient norm; 0 = off
    ema_decay: float = 0.0  # 0 = off; else e.g. 0.999 (bias-corrected: see train_step)
    crop_padding: int = 0  # 2 and 1 ended lower in 14 epochs (docs/training.md)
    hflip: bool = True
    random_erasing: float = 0.0  # probability per image (Zhong et al. 2020); 0 = off
    mixup: float = 0.0
    cutmix: float = 0.0
    train_subset: int = 0  # 0 = the whole split; else that many samples, drawn with the seed
    test_subset: int = 0
    val_split: int = 5000  # images held out of the training split for validation (selection); 0 = none
    seed: int = 0
    dtype: str = "float32"
    backend: str = FAST  # or "teaching" (aliases "numba", "numpy": c2f_numpy.backend)
    checkpoint_every: int = 0  # steps; 0 = at the end of every epoch only
    eval_batch_size: int = 128  # per process; at 500, micro's largest tensors were 50 MB (see kernels/allocator.py)
    eval_hflip: bool = False  # also report test-time augmentation: logits of the image and its mirror, averaged
    workers: int = 2  # processes sharing every batch (data parallel, see parallel.py); 1 = one process

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.lr > 0 and self.min_lr >= 0, "lr must be > 0 and min_lr >= 0"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (0 <= self.warmup_fraction <= 1, "warmup_fraction must be in [0, 1]"),
            (self.optimizer in ("adamw", "sgd"), f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.drop_path < 1, "drop_path must be in [0, 1)"),
            (self.clip_grad >= 0, "clip_grad must be >= 0"),
            (0 <= self.ema_decay < 1, "ema_decay must be in [0, 1)"),
            (0 <= self.random_erasing <= 1, f"random_erasing must be in [0, 1], got {self.random_erasing}"),
            (self.train_subset >= 0 and self.test_subset >= 0, "subset sizes must be >= 0"),
            (self.val_split >= 0, "val_split must be >= 0"),
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
        """The config saved in a checkpoint; settings added since it was made take the values its run used."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown settings {unknown}")
        return cls(**(_ADDED_SINCE | data))


# Settings added after checkpoints were written, with the value that reproduces those runs: no validation split,
# warmup_epochs uncapped, no random erasing.
_ADDED_SINCE: dict[str, Any] = {"val_split": 0, "warmup_fraction": 1.0, "random_erasing": 0.0}


def clip_grad_norm(grads: list[np.ndarray], max_norm: float) -> float:
    """Scale ``grads`` in place so their global L2 norm is at most ``max_norm`` (``torch.nn.utils.
    clip_grad_norm_``: coefficient max_norm / (norm + 1e-6), capped at 1). Returns the norm before clipping."""
    norm = math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads))
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= g.dtype.type(coef)
    return norm


# how the summary line names each evaluation (the column's suffix after "test_acc" / "val_acc")
_EVALUATIONS = {
    "": "plain",
    "_hflip": "with the mirror",
    "_ema": "EMA weights",
    "_ema_hflip": "EMA weights with the mirror",
}


def _accuracies(row: dict[str, Any], split: str) -> dict[str, float]:
    """The accuracy columns of a metrics row for ``split`` ("test" or "val"): plain, EMA, with the mirror."""
    return {k: float(v) for k, v in row.items() if k.startswith(f"{split}_acc")}


def evaluation_name(column: str) -> str:
    """ "plain", "EMA weights", "with the mirror", ... for a column such as ``test_acc_ema``."""
    suffix = column.split("_acc", 1)[1] if "_acc" in column else column
    return _EVALUATIONS.get(suffix, suffix)


def _others_text(accs: dict[str, float], main: str) -> str:
    rest = [f"{evaluation_name(k)} {v:.2f}%" for k, v in accs.items() if k != main]
    return f" ({', '.join(rest)})" if rest else ""


@dataclass
class Summary:
    """How a run ended (also written as ``summary.json``).

    The headline is ``final_acc``: the last epoch's test accuracy, plain evaluation (``final`` holds every test
    column of that epoch: EMA, with the mirror). ``best_*`` exist only with a validation split: the epoch and
    evaluation (``best_metric``, e.g. ``"val_acc_ema"``) with the highest validation accuracy, where
    ``checkpoint_best`` was saved, and ``best_test`` the test accuracies of that epoch (reported, not selected
    on). ``splits``: the number of images of each split; ``headline``: the summary line's first sentence.
    """

    final_acc: float
    epochs: int
    steps: int
    wall_seconds: float
    out_dir: str
    final: dict[str, float] = field(default_factory=dict)
    final_val: dict[str, float] = field(default_factory=dict)
    best_val_acc: float | None = None
    best_epoch: int | None = None
    best_metric: str | None = None
    best_test: dict[str, float] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    headline: str = ""


class Trainer:
    """Builds the data, model and optimizer of a :class:`TrainConfig` and trains it into ``out_dir``.

    ``resume``: a checkpoint path (or True for ``out_dir/checkpoint_last.npz``) to continue from; its config
    must equal ``config`` (pass ``config=None`` to take the checkpoint's). ``train_set`` / ``test_set``
    replace the named data set (tests use small in-memory sets). ``log`` receives the human-readable lines;
    ``progress`` shows tqdm bars; ``plot_every`` > 0 also redraws ``curves.png`` (and ``steps.csv``) every
    that many steps, for a live view. ``stop_after_steps`` ends the run early after that many steps in total, as
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
        plot_every: int = 0,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.log, self.progress, self.stop_after_steps = log, progress, stop_after_steps
        if plot_every < 0:
            raise ValueError(f"Trainer: plot_every must be >= 0, got {plot_every}")
        self.plot_every = plot_every
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
        self.train_set, self.val_set, self.test_set = run_splits(
            train_set, test_set, val_split=cfg.val_split, train_subset=cfg.train_subset, test_subset=cfg.test_subset,
            seed=cfg.seed,
        )  # fmt: skip
        augment = Augment(crop_padding=cfg.crop_padding, hflip=cfg.hflip, erase_prob=cfg.random_erasing,
                          mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix)  # fmt: skip
        self.loader = BatchLoader(self.train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
                                  augment=augment)  # fmt: skip
        self.steps_per_epoch = len(self.loader)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = warmup_steps(self.steps_per_epoch, self.total_steps, cfg.warmup_epochs,
                                         cfg.warmup_fraction)  # fmt: skip

        c, h, w = self.train_set.image_shape
        self.model: Conv2Former = create_model(
            cfg.model, in_chans=c, num_classes=self.train_set.num_classes, kernel_size=cfg.kernel_size,
            drop_path_rate=cfg.drop_path, layer_scale_init_value=cfg.layer_scale_init, dtype=np.dtype(cfg.dtype),
            seed=cfg.seed, backend=cfg.backend,
        )  # fmt: skip
        self.model.check_input(np.zeros((1, c, h, w), dtype=cfg.dtype))
        params = list(self.model.named_parameters())
        self.optimizer: Optimizer = (
            AdamW(
                params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=resolve(cfg.backend) == FAST
            )  # teaching: no Numba
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
        self.best: dict[str, Any] = {"acc": -1.0, "epoch": 0, "metric": None}  # on the validation split only
        # one entry per optimizer step since step_log["first"]: its lr, loss and batch accuracy (%)
        self.step_log: dict[str, Any] = {"first": 0, "lr": [], "loss": [], "acc": []}
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
            "step_log": {k: list(v) if isinstance(v, list) else v for k, v in self.step_log.items()},
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
            self.best = {"metric": None} | dict(meta["best"])
            self.history = list(meta["history"])
            saved_log = meta.get("step_log") or {"first": self.step, "lr": [], "loss": [], "acc": []}
            self.step_log = {k: list(v) if isinstance(v, list) else int(v) for k, v in saved_log.items()}
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
                num_classes=self.train_set.num_classes, test_set=self.test_set, val_set=self.val_set,
                eval_batch_size=cfg.eval_batch_size,
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
        """Mean cross-entropy and top-1 accuracy (%) on the validation split (when there is one) and the test
        split, in eval mode, as the metrics row's ``val_loss{suffix}``, ``val_acc{suffix}``, ``test_loss{suffix}``
        and ``test_acc{suffix}``; with ``eval_hflip`` also ``..._hflip`` columns of the logits averaged over each
        image and its left-right mirror (one more forward pass). ``weights`` (e.g. the EMA, suffix "_ema") are
        swapped in for the evaluation and the model's own restored after."""
        cfg, model = self.config, self.model
        saved = model.state_dict() if weights is not None else None
        if weights is not None:
            model.load_state_dict(weights)
        row = {}
        try:
            for split, ds in (("val", self.val_set), ("test", self.test_set)):
                if ds is None:
                    continue
                if cfg.workers > 1:
                    sums = self._parallel().evaluate(split)
                else:
                    sums = eval_sums(model, ds.images, ds.labels, ds.mean, ds.std, cfg.eval_batch_size,
                                     cfg.eval_hflip)  # fmt: skip
                for key, v in sums.items():  # "loss", "acc", "loss_hflip", "acc_hflip"
                    kind, _, view = key.partition("_")
                    row[f"{split}_{kind}{suffix}{'_' if view else ''}{view}"] = (
                        100.0 * v if kind == "acc" else v
                    ) / len(ds)
        finally:
            if saved is not None:
                model.load_state_dict(saved)
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
                f"{stats['macs'] / 1e6:.1f}M MACs/image) on {cfg.dataset}: {self._splits_text()}; {cfg.epochs} "
                f"epochs x {self.steps_per_epoch} steps of {cfg.batch_size}, {cfg.optimizer} lr {cfg.lr:g} "
                f"({self.warmup_steps} warmup steps, cosine to {cfg.min_lr:g}), {cfg.workers} worker"
                f"{'s' if cfg.workers > 1 else ''}, backend {cfg.backend}, {cfg.dtype}"
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
                    log = self.step_log
                    log["lr"].append(self.optimizer.lr)
                    log["loss"].append(loss)
                    log["acc"].append(100.0 * correct / len(x))
                    bar.update(1)
                    seen = p["seen"]
                    shown = {"loss": f"{p['loss_sum'] / seen:.4f}", "acc": f"{100 * p['correct'] / seen:.2f}%",
                             "img/s": f"{seen / p['seconds']:.0f}"}  # fmt: skip
                    bar.set_postfix(shown, refresh=False)
                    inside = self.loader.position < self.steps_per_epoch
                    if inside and cfg.checkpoint_every and (self.step % cfg.checkpoint_every == 0):
                        self._save(LAST, wall())
                    if inside and self.plot_every and self.step % self.plot_every == 0:
                        self._write_files()
                    if self.stop_after_steps is not None and self.step >= self.stop_after_steps:
                        if not inside:
                            self._end_epoch(epoch, wall)  # saves, with the epoch's evaluation
                        else:
                            self._save(LAST, wall())
                            self._write_files()
                        bar.close()
                        self.log(f"c2f-train: stopped after step {self.step} as asked; resume with --resume")
                        return self._summary(wall())
            finally:
                bar.close()
            self._end_epoch(epoch, wall)
        summary = self._summary(wall())
        self.log(f"c2f-train: done. {summary.headline}")
        text = json.dumps(asdict(summary), indent=2) + "\n"
        atomic_write(self.out_dir / "summary.json", lambda fh: fh.write(text.encode()))
        return summary

    def _splits_text(self) -> str:
        cfg, val = self.config, self.val_set
        held = f"{len(val)} validation (held out of the training split, seed {cfg.seed})" if val else "no validation"
        return f"{len(self.train_set)} train / {held} / {len(self.test_set)} test images"

    def _write_files(self) -> None:
        """metrics.jsonl / .csv, steps.csv and curves.png from the history and the per-step log."""
        write_history(self.out_dir, self.history)
        write_steps(self.out_dir / "steps.csv", self.step_log, self.steps_per_epoch)
        plot_history(self.out_dir / "curves.png", self.history, f"{self.config.model} on {self.config.dataset}",
                     step_log=self.step_log, steps_per_epoch=self.steps_per_epoch)  # fmt: skip

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
        row |= {
            "train_seconds": p["seconds"],
            "eval_seconds": time.perf_counter() - t0,
            "img_per_s": p["seen"] / p["seconds"] if p["seconds"] else 0.0,
            "wall_seconds": wall(),
        }
        self.history.append(row)
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        # Selection on the validation split only; the first evaluation listed wins a tie (plain before EMA).
        val = _accuracies(row, "val")
        improved = False
        if val:
            metric = max(val, key=lambda k: val[k])
            improved = val[metric] > self.best["acc"]
            if improved:
                self.best = {"acc": val[metric], "epoch": epoch + 1, "metric": metric}
        test = _accuracies(row, "test")
        shown = f"val acc {row['val_acc']:.2f}%{_others_text(val, 'val_acc')} | " if val else ""
        self.log(
            f"epoch {epoch + 1}/{self.config.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.2f}% | "
            f"{shown}test loss {row['test_loss']:.4f} acc {row['test_acc']:.2f}%{_others_text(test, 'test_acc')} | "
            f"{row['img_per_s']:.0f} img/s, wall {row['wall_seconds'] / 60:.1f} min"
        )
        self._save(LAST, row["wall_seconds"])
        if improved:
            self._save(BEST, row["wall_seconds"])
        self._write_files()

    def _summary(self, wall: float) -> Summary:
        final = self.history[-1] if self.history else {}
        best_epoch = int(self.best["epoch"])
        best_row = self.history[best_epoch - 1] if 0 < best_epoch <= len(self.history) else {}
        metric = self.best.get("metric")
        splits = {"train": len(self.train_set), "val": len(self.val_set) if self.val_set else 0,
                  "test": len(self.test_set)}  # fmt: skip
        summary = Summary(
            final_acc=float(final.get("test_acc", float("nan"))), epochs=len(self.history), steps=self.step,
            wall_seconds=wall, out_dir=str(self.out_dir), final=_accuracies(final, "test"),
            final_val=_accuracies(final, "val"), splits=splits,
        )  # fmt: skip
        if best_row and metric:
            summary.best_val_acc, summary.best_epoch, summary.best_metric = float(self.best["acc"]), best_epoch, metric
            summary.best_test = _accuracies(best_row, "test")
        summary.headline = self._headline(summary)
        return summary

    def _headline(self, s: Summary) -> str:
        """The run's result in words: which split, which evaluation, which epoch."""
        if not s.final:
            return f"no epoch finished; files in {self.out_dir}"
        text = (
            f"test accuracy {s.final_acc:.2f}% (final epoch {s.epochs}, plain evaluation, {s.splits['test']} test "
            f"images{'; ' + _others_text(s.final, 'test_acc')[2:-1] if len(s.final) > 1 else ''})"
        )
        if s.best_metric is not None and s.best_val_acc is not None:
            text += (
                f"; best validation accuracy {s.best_val_acc:.2f}% ({evaluation_name(s.best_metric)}, epoch "
                f"{s.best_epoch}, {s.splits['val']} held-out training images; {BEST}), test there "
                f"{s.best_test.get(s.best_metric.replace('val_', 'test_', 1), float('nan')):.2f}%"
            )
        else:
            text += f"; no validation split (--val-split 0), so no best epoch and no {BEST}"
        return text + f"; wall time {s.wall_seconds / 60:.1f} min; files in {self.out_dir}"
