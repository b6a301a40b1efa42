"""``c2f-train``: train a Conv2Former on CPU.

    c2f-train --dataset fashion_mnist --model mini --epochs 10 --out runs/fm
    c2f-train --out runs/fm --resume                 # continue a killed run, bit for bit

Writes into ``--out``: ``checkpoint_last.npz`` / ``checkpoint_best.npz`` (atomic; model, optimizer, EMA,
loader and RNG state), ``metrics.jsonl`` / ``metrics.csv``, ``curves.png`` and ``summary.json``.
Exit status: 0 done, 2 bad arguments or files, 3 the loss diverged (NaN/inf), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from ..data import DATASETS, DataError
from ..io import CheckpointError
from ..kernels.allocator import retain_freed_memory
from ..models import ALL_VARIANTS
from .loop import LAST, TrainConfig, Trainer, TrainingDiverged

_MODELS = sorted(k.removeprefix("conv2former_") for k in ALL_VARIANTS)
_HELP = {
    "dataset": f"one of {', '.join(DATASETS)}",
    "model": f"one of {', '.join(_MODELS)} (micro/mini are the small-image configurations)",
    "kernel_size": "depthwise kernel of the blocks (default: the variant's)",
    "epochs": "number of epochs",
    "batch_size": "training batch size",
    "lr": "peak learning rate (after warmup)",
    "min_lr": "learning rate at the end of the cosine",
    "warmup_epochs": "linear warmup length in epochs (fractions allowed)",
    "optimizer": "adamw or sgd (Nesterov)",
    "weight_decay": "decoupled (AdamW) or L2 (SGD) decay; never on biases, norm scales, layer scales",
    "momentum": "SGD momentum",
    "label_smoothing": "label smoothing of the training loss",
    "drop_path": "stochastic depth rate of the last block (linear from 0 over the blocks)",
    "layer_scale_init": "initial layer scale (official 1e-6)",
    "clip_grad": "clip the global gradient norm to this value (0 = off)",
    "ema_decay": "keep a bias-corrected EMA of the weights with this decay (0 = off), evaluated too",
    "crop_padding": "random crop after zero padding by this many pixels (0 = off)",
    "hflip": "random horizontal flips",
    "mixup": "mixup alpha (0 = off)",
    "cutmix": "cutmix alpha (0 = off)",
    "train_subset": "train on this many samples (0 = all), a seeded random subset",
    "test_subset": "evaluate on this many samples (0 = all)",
    "seed": "seed of the initialisation, shuffling, augmentation and drop path",
    "dtype": "float32 or float64",
    "backend": "numba (fast kernels) or numpy (the teaching copy; slow)",
    "checkpoint_every": "also checkpoint every N steps inside an epoch (0 = at epoch ends only)",
    "eval_batch_size": "batch size of the evaluation (in each worker process)",
    "eval_hflip": "also report the test accuracy of each image's and its mirror's logits averaged (one more pass)",
    "workers": "processes sharing every batch (data parallel; each runs C2F_NUM_THREADS/workers threads). "
    "micro on 2 cores: 1.5x faster with 2 than with 1; BatchNorm then normalises each process's slice",
}


def build_parser() -> argparse.ArgumentParser:
    """The parser. Settings default to ``SUPPRESS`` so a resume can tell which ones were given."""
    p = argparse.ArgumentParser(
        prog="c2f-train",
        description="Train a Conv2Former on CPU (c2f_numpy). Defaults: " + ", ".join(
            f"{f.name.replace('_', '-')}={f.default}" for f in fields(TrainConfig)
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/c2f"), help="output directory")
    p.add_argument("--data-dir", type=Path, default=None, help="where the data files are (or are downloaded to)")
    p.add_argument(
        "--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
        help=f"continue from CHECKPOINT (default: OUT/{LAST}) with its settings",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.add_argument("--stop-after-steps", type=int, default=None, help="stop (with a checkpoint) after N steps")
    recipe = p.add_argument_group("recipe (saved in the checkpoint)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "hflip":
            recipe.add_argument("--no-hflip", dest="hflip", action="store_false", default=argparse.SUPPRESS,
                                help="no random horizontal flips")  # fmt: skip
            continue
        if f.type in (bool, "bool"):
            recipe.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=_HELP[f.name])
            continue
        kind = {"kernel_size": int}.get(f.name, type(f.default))
        choices = {"dataset": None, "model": _MODELS, "optimizer": ["adamw", "sgd"], "dtype": ["float32", "float64"],
                   "backend": ["numba", "numpy"]}.get(f.name)  # fmt: skip
        recipe.add_argument(flag, type=kind, choices=choices, default=argparse.SUPPRESS, help=_HELP[f.name])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()  # every step allocates the same tensors: keep the freed ones for the next (see there)
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    try:
        if args.resume:
            config = None
            resume_path = args.out / LAST if args.resume is True else Path(args.resume)
            if given:
                from .checkpoint import load_checkpoint

                saved = TrainConfig.from_dict(load_checkpoint(resume_path).meta["config"])
                config = TrainConfig.from_dict({**saved.__dict__, **given})
            trainer = Trainer(config, args.out, resume=resume_path, data_dir=args.data_dir,
                              progress=not args.no_progress, stop_after_steps=args.stop_after_steps)  # fmt: skip
        else:
            if (args.out / LAST).exists():
                print(f"c2f-train: {args.out / LAST} exists: pass --resume to continue that run, or choose another "
                      "--out", file=sys.stderr)  # fmt: skip
                return 2
            trainer = Trainer(TrainConfig(**given), args.out, data_dir=args.data_dir, progress=not args.no_progress,
                              stop_after_steps=args.stop_after_steps)  # fmt: skip
        trainer.fit()
    except TrainingDiverged as exc:
        print(f"c2f-train: training diverged: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\nc2f-train: interrupted; continue with: c2f-train --out {args.out} --resume", file=sys.stderr)
        return 130
    except (ValueError, CheckpointError, DataError, FileNotFoundError) as exc:
        print(f"c2f-train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
