"""Train the Conv2Former replica in PyTorch (CPU) with c2f-train's recipe: the torch side of a time-to-accuracy race.

    python benchmarks/train_torch.py --target-acc 93.5 --out runs/torch_fm.jsonl   # recipe fashion_mnist_30min
    python benchmarks/train_torch.py --recipe fashion_mnist_60min --out runs/torch_fm60.jsonl
    python benchmarks/train_torch.py --epochs 1 --limit-train-batches 5      # smoke test

Run it from the repository root (or anywhere: it puts the root on sys.path). It mirrors the recipe of
``c2f-train`` (c2f_numpy.train.loop.Trainer; the recipe flags have the same names and defaults, ``--recipe NAME``
starts from the same named recipes, flags given override them) so that the two runs differ only in the library
that computes:

* data: c2f_numpy.data itself - ``load_dataset``, ``BatchLoader(train, batch_size, shuffle=True, seed=seed,
  drop_last=True, augment=Augment(crop_padding, hflip, mixup_alpha, cutmix_alpha))`` read batch by batch with
  ``loader.batch(epoch, i)``, so both trainers see bit-identical images and targets; the test set unaugmented;
  ``--val-split`` holds out the same seeded validation images of the training split
  (c2f_numpy.train.splits), ``--train-subset`` / ``--test-subset`` draw the same seeded subsets as c2f-train.
* model: the PyTorch replica of the official code (c2f_numpy/torch_reference.py) with the dims, depths, kernel size,
  stem stride, head width and MLP ratio of ``c2f_numpy.models.ALL_VARIANTS["conv2former_<model>"]``, float32,
  initialised by the replica's ``official_init`` (trunc-normal std 0.02, zero biases, as c2f_numpy's init),
  layer scales ``--layer-scale-init``, drop path ``--drop-path`` (linear over the blocks).
* optimizer: ``torch.optim.AdamW`` (betas 0.9/0.999, eps 1e-8) or ``SGD`` (``--momentum`` 0.9, Nesterov); weight
  decay on parameters with ndim > 1 only (not on biases, norm scales, layer scales).
* lr: ``c2f_numpy.train.schedule.cosine_lr`` per optimizer step (linear warmup of ``warmup_steps``, the shorter
  of ``--warmup-epochs`` and ``--warmup-fraction`` of the run, then a cosine to ``--min-lr``).
* loss: cross-entropy with label smoothing; with mixup/cutmix the soft-target form
  ``-sum((t (1 - ls) + ls / K) * log_softmax(logits))``; optional clipping of the global gradient norm.
* evaluation after every epoch on the validation split and the whole test set (eval mode): loss without
  smoothing, top-1 accuracy; with ``--eval-hflip`` also of the logits averaged over each image and its mirror
  (``test_acc_hflip``, ``val_acc_hflip``). As in c2f-train the best epoch is chosen on the validation split
  only; the headline is the last epoch's plain test accuracy.

Deliberately not mirrored: ``--workers`` (torch runs one process on ``--threads`` threads), no EMA of the weights
(``--ema-decay``), no checkpoints, resume, metrics files or curves (c2f-train's wall time includes writing those;
this one does not), no float64 or backends. Drop-path masks come from torch's RNG (the trainers draw different
masks from the same distribution), and the per-block drop-path rates from the official float32
``torch.linspace`` (c2f_numpy: float64; they differ in the last float32 bit).

Output: ``--out`` (JSON lines, each flushed and fsynced): one line per epoch with the keys of c2f-train's
metrics.jsonl - ``epoch`` (1-based), ``step``, ``lr`` (of the epoch's last step), ``train_loss`` (mean over the
epoch's samples, with smoothing), ``train_acc`` (%, against the labels, or the soft targets' argmax with
mixup/cutmix), ``val_loss``, ``val_acc`` (with a validation split), ``test_loss``, ``test_acc`` (%),
``train_seconds``, ``eval_seconds``, ``img_per_s`` (training), ``wall_seconds`` (since the start of training,
evaluation included) - plus ``epoch_seconds`` (train + eval) and ``step_seconds_median``; then a summary
line with ``final_acc`` (the last epoch's plain test accuracy: the headline), ``best_val_acc``, ``best_epoch``
and ``best_metric`` (on the validation split; null without one), ``best_test`` (the test accuracies at that
epoch), ``steps``, ``wall`` (seconds), ``time_to_target`` (wall seconds when the plain ``test_acc`` first
reached ``--target-acc``, else null) and the configuration.

Memory: like c2f-train, the run starts with ``c2f_numpy.kernels.allocator.retain_freed_memory`` (glibc keeps
freed blocks of any size in the heap). torch's CPU tensors are glibc allocations as well, so both trainers reuse
their freed activations instead of page-faulting fresh ones in, which costs a lot on this virtual machine.

Memory format: channels-last (weights and activations) is the default, measured faster than NCHW on this 2-core
machine (mini, k=7, 1x28x28, batch 128, AdamW, median step of 21: 2 threads 0.53 s vs 0.68 s; 1 thread 0.80 s
vs 1.09 s); ``--no-channels-last`` switches it off.

OpenMP waiting: torch runs with its own OpenMP defaults, which are its fastest on a quiet machine (micro, k=7,
batch 128, 2 threads, 150 steps: 470 img/s by default, 454 with ``OMP_WAIT_POLICY=ACTIVE``, 361-398 with
``PASSIVE``). On a *shared* machine, threads spin-waiting for a core another process holds made a 2-thread step
take 9.3 s (1 thread: 0.7 s; with ``OMP_WAIT_POLICY=PASSIVE`` 0.9 s): set ``OMP_WAIT_POLICY=PASSIVE`` there.
c2f_numpy's import sets PASSIVE (for its own OpenMP pool) only as a default and after torch has loaded here, so
torch's runtime never sees it unless the environment set it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import IO, Any

# torch before c2f_numpy: torch's OpenMP runtime reads OMP_WAIT_POLICY when it loads, before c2f_numpy sets its
# PASSIVE default (see the docstring).
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from c2f_numpy.data import DATASETS, Augment, BatchLoader, Dataset, load_dataset  # noqa: E402
from c2f_numpy.kernels.allocator import retain_freed_memory  # noqa: E402
from c2f_numpy.models import ALL_VARIANTS  # noqa: E402
from c2f_numpy.torch_reference import Conv2Former, count_params, official_init  # noqa: E402
from c2f_numpy.train.loop import TrainConfig  # noqa: E402
from c2f_numpy.train.recipes import RECIPES, recipe_settings  # noqa: E402
from c2f_numpy.train.schedule import cosine_lr, warmup_steps  # noqa: E402
from c2f_numpy.train.splits import run_splits  # noqa: E402

MODELS = sorted(name.removeprefix("conv2former_") for name in ALL_VARIANTS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = TrainConfig()  # c2f-train's defaults: the recipe fashion_mnist_30min
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipe", choices=list(RECIPES), default=None,
                   help="start from this c2f-train recipe (flags given override it)")  # fmt: skip
    p.add_argument("--dataset", default=d.dataset, choices=DATASETS)
    p.add_argument("--data-dir", default=None, help="default: $C2F_DATA_DIR or ~/.cache/c2f_numpy (and system dirs)")
    p.add_argument("--model", default=d.model, choices=MODELS)
    p.add_argument("--kernel-size", type=int, default=None, help="depthwise kernel (default: the variant's)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--eval-hflip", action="store_true",
                   help="also report test_acc_hflip: logits of each image and its mirror averaged")  # fmt: skip
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--warmup-fraction", type=float, default=d.warmup_fraction, help="cap of the warmup, of the run")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--opt", "--optimizer", dest="opt", default=d.optimizer, choices=("adamw", "sgd"))
    p.add_argument("--momentum", type=float, default=d.momentum, help="SGD only (Nesterov)")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--drop-path", type=float, default=d.drop_path)
    p.add_argument("--layer-scale-init", type=float, default=d.layer_scale_init)
    p.add_argument("--clip-grad", type=float, default=d.clip_grad, help="max global gradient norm (0 = off)")
    p.add_argument("--crop-padding", type=int, default=d.crop_padding)
    p.add_argument("--no-hflip", action="store_true", default=not d.hflip)
    p.add_argument("--random-erasing", type=float, default=d.random_erasing, help="probability per image (0 = off)")
    p.add_argument("--mixup", type=float, default=d.mixup, help="mixup alpha (0 = off)")
    p.add_argument("--cutmix", type=float, default=d.cutmix, help="cutmix alpha (0 = off)")
    p.add_argument("--train-subset", type=int, default=0, help="train on this many samples (0 = all), seeded")
    p.add_argument("--test-subset", type=int, default=0, help="evaluate on this many samples (0 = all), seeded")
    p.add_argument("--val-split", type=int, default=d.val_split,
                   help="hold out this many training images for validation, as c2f-train (0 = none)")  # fmt: skip
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target-acc", type=float, default=None, help="report the wall time when test acc (%%) reaches it")
    p.add_argument("--limit-train-batches", type=int, default=None, help="train on the first N batches per epoch")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.channels_last activations and weights (default: on, it is faster)")  # fmt: skip
    p.add_argument("--out", default=None, help="JSON-lines log (.jsonl)")
    recipe = p.parse_known_args(argv)[0].recipe
    if recipe is not None:  # the recipe's values become the defaults, so flags given still win
        p.set_defaults(**recipe_defaults(recipe_settings(recipe)))
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.eval_batch_size < 1 or args.threads < 1:
        p.error("--epochs, --batch-size, --eval-batch-size and --threads must be >= 1")
    if args.limit_train_batches is not None and args.limit_train_batches < 1:
        p.error("--limit-train-batches must be >= 1")
    return args


def recipe_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    """A c2f-train recipe's settings as this script's argument names (``workers`` has no counterpart here)."""
    renamed = {"optimizer": "opt"}
    out = {renamed.get(k, k): v for k, v in settings.items() if k not in ("hflip", "workers")}
    if "hflip" in settings:
        out["no_hflip"] = not settings["hflip"]
    return out


def build_model(args: argparse.Namespace, train: Dataset) -> Conv2Former:
    """The replica with the c2f_numpy variant's architecture, float32, official init from ``args.seed``."""
    v = ALL_VARIANTS[f"conv2former_{args.model}"]
    model = Conv2Former(
        v.kernel_size if args.kernel_size is None else args.kernel_size,
        v.dims,
        v.depths,
        in_chans=train.image_shape[0],
        num_classes=train.num_classes,
        mlp_ratio=v.mlp_ratio,
        drop_path_rate=args.drop_path,
        stem_stride=v.stem_stride,
        head_dim=v.head_dim,
        layer_scale_init_value=args.layer_scale_init,
    )
    official_init(model, args.seed)
    return model


def build_optimizer(args: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    """Weight decay on matrices and conv kernels (ndim > 1), none on biases, norm scales and layer scales."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": args.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if args.opt == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum, nesterov=True)


def loss_fn(logits: Tensor, targets: Tensor, smoothing: float) -> Tensor:
    """Label-smoothed cross-entropy for int labels (N,) or soft targets (N, K), mean over the batch."""
    if targets.ndim == 1:
        return F.cross_entropy(logits, targets, label_smoothing=smoothing)
    t = targets * (1.0 - smoothing) + smoothing / logits.shape[1]
    return -(t * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def to_tensor(x: np.ndarray, channels_last: bool) -> Tensor:
    t = torch.from_numpy(x)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: BatchLoader, channels_last: bool, hflip: bool = False, split: str = "test"
) -> dict[str, float]:
    """Mean cross-entropy without smoothing and top-1 accuracy in % over the whole ``split`` set, eval mode:
    ``{split}_loss``, ``{split}_acc``, and with ``hflip`` ``{split}_loss_hflip``, ``{split}_acc_hflip`` of the
    logits averaged over each image and its left-right mirror (as c2f-train's ``--eval-hflip``)."""
    model.eval()
    views = ("", "_hflip") if hflip else ("",)
    sums = {f"{split}_{kind}{view}": 0.0 for view in views for kind in ("loss", "acc")}
    n = 0
    for i in range(len(loader)):
        x, y = loader.batch(0, i)
        yt = torch.from_numpy(y)
        logits = model(to_tensor(x, channels_last))
        outputs = {"": logits}
        if hflip:
            outputs["_hflip"] = (logits + model(to_tensor(np.ascontiguousarray(x[..., ::-1]), channels_last))) * 0.5
        for suffix, out in outputs.items():
            sums[f"{split}_loss{suffix}"] += F.cross_entropy(out, yt, reduction="sum").item()
            sums[f"{split}_acc{suffix}"] += int((out.argmax(1) == yt).sum())
        n += len(y)
    return {k: (100.0 * v if "acc" in k else v) / n for k, v in sums.items()}


def write_record(file: IO[str] | None, record: dict[str, Any]) -> None:
    """Print ``record`` as JSON and append it to ``file``, flushed and fsynced (a killed run keeps its epochs)."""
    line = json.dumps(record)
    print(line, flush=True)
    if file is not None:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())


def train_epoch(
    args: argparse.Namespace,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: BatchLoader,
    epoch: int,
    schedule: tuple[int, int, int],
) -> dict[str, Any]:
    """One epoch of ``schedule = (steps_per_epoch, total_steps, warmup_steps)`` optimizer steps; its statistics."""
    steps_per_epoch, total_steps, warmup_steps = schedule
    model.train()
    loss_sum, correct, seen, lr, step_times = 0.0, 0, 0, args.lr, []  # loss_sum: over samples
    t_epoch = time.perf_counter()
    bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", mininterval=1.0, leave=False)
    for i in bar:
        t_step = time.perf_counter()
        x, y = loader.batch(epoch, i)  # exactly the batch c2f-train gets at this step
        lr = cosine_lr(epoch * steps_per_epoch + i, total_steps, args.lr, warmup_steps=warmup_steps, min_lr=args.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        targets = torch.from_numpy(y)
        logits = model(to_tensor(x, args.channels_last))
        loss = loss_fn(logits, targets, args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip_grad > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        optimizer.step()
        step_times.append(time.perf_counter() - t_step)

        loss_sum += loss.item() * len(y)
        seen += len(y)
        labels = targets if targets.ndim == 1 else targets.argmax(1)  # the dominant label of a mixed sample
        correct += int((logits.detach().argmax(1) == labels).sum())
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100.0 * correct / seen:.2f}%",
                        img_s=f"{seen / (time.perf_counter() - t_epoch):.0f}", refresh=False)  # fmt: skip
    bar.close()
    seconds = time.perf_counter() - t_epoch
    return {
        "step": (epoch + 1) * steps_per_epoch,
        "lr": lr,
        "train_loss": loss_sum / seen,
        "train_acc": 100.0 * correct / seen,
        "train_seconds": seconds,
        "img_per_s": seen / seconds,
        "step_seconds_median": statistics.median(step_times),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    retain_freed_memory()  # as c2f-train: torch's CPU tensors come from glibc's malloc too (see the docstring)

    train, val, test = run_splits(
        load_dataset(args.dataset, "train", args.data_dir), load_dataset(args.dataset, "test", args.data_dir),
        val_split=args.val_split, train_subset=args.train_subset, test_subset=args.test_subset, seed=args.seed,
    )  # fmt: skip
    augment = Augment(
        crop_padding=args.crop_padding,
        hflip=not args.no_hflip,
        erase_prob=args.random_erasing,
        mixup_alpha=args.mixup,
        cutmix_alpha=args.cutmix,
    )
    train_loader = BatchLoader(train, args.batch_size, shuffle=True, seed=args.seed, drop_last=True, augment=augment)
    test_loader = BatchLoader(test, args.eval_batch_size, shuffle=False)
    val_loader = BatchLoader(val, args.eval_batch_size, shuffle=False) if val is not None else None
    steps_per_epoch = len(train_loader)
    if args.limit_train_batches is not None:
        steps_per_epoch = min(steps_per_epoch, args.limit_train_batches)
    total_steps = args.epochs * steps_per_epoch
    schedule = (steps_per_epoch, total_steps,
                warmup_steps(steps_per_epoch, total_steps, args.warmup_epochs, args.warmup_fraction))  # fmt: skip

    torch.manual_seed(args.seed)
    model = build_model(args, train)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing in the stubs
    optimizer = build_optimizer(args, model)
    config = vars(args) | {"params": count_params(model), "steps_per_epoch": steps_per_epoch}
    config["torch"] = torch.__version__
    print(f"{args.model}: {config['params'] / 1e6:.3f}M params, {steps_per_epoch} steps/epoch, "
          f"{len(train)} train / {len(val) if val else 0} validation / {len(test)} test images, "
          f"{args.threads} threads, {schedule[2]} warmup steps", flush=True)  # fmt: skip

    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    best: dict[str, Any] = {"best_val_acc": None, "best_epoch": None, "best_metric": None, "best_test": {}}
    time_to_target = None
    with open(args.out, "w", encoding="utf-8") if args.out else contextlib.nullcontext() as out:
        start = time.perf_counter()
        for epoch in range(args.epochs):
            record = {"epoch": epoch + 1} | train_epoch(args, model, optimizer, train_loader, epoch, schedule)
            t_eval = time.perf_counter()
            if val_loader is not None:
                record |= evaluate(model, val_loader, args.channels_last, args.eval_hflip, "val")
            record |= evaluate(model, test_loader, args.channels_last, args.eval_hflip)
            record["eval_seconds"] = time.perf_counter() - t_eval
            record["epoch_seconds"] = record["train_seconds"] + record["eval_seconds"]
            record["wall_seconds"] = wall = time.perf_counter() - start
            val_accs = {k: v for k, v in record.items() if k.startswith("val_acc")}
            if val_accs:  # selection on the validation split only, as c2f-train; plain first on a tie
                metric = max(val_accs, key=lambda k: val_accs[k])
                if best["best_val_acc"] is None or val_accs[metric] > best["best_val_acc"]:
                    test_accs = {k: v for k, v in record.items() if k.startswith("test_acc")}
                    best = {"best_val_acc": val_accs[metric], "best_epoch": epoch + 1, "best_metric": metric,
                            "best_test": test_accs}  # fmt: skip
            if time_to_target is None and args.target_acc is not None and record["test_acc"] >= args.target_acc:
                time_to_target = wall
            write_record(out, record)
        summary = {
            "summary": True,
            "final_acc": record["test_acc"],
            **best,
            "steps": total_steps,
            "wall": time.perf_counter() - start,
            "target_acc": args.target_acc,
            "time_to_target": time_to_target,
            "config": config,
        }
        write_record(out, summary)
    return summary


if __name__ == "__main__":
    main()
