"""``c2f-train``: train a Conv2Former on CPU.

    c2f-train --out runs/fm                          # the defaults: recipe fashion_mnist_30min
    c2f-train --recipe fashion_mnist_60min --out runs/fm60
    c2f-train --epochs 1 --out runs/quick            # a recipe's setting overridden by a flag
    c2f-train --out runs/fm --resume                 # continue a killed run, bit for bit

Writes into ``--out``: ``checkpoint_last.npz`` / ``checkpoint_best.npz`` (atomic; model, optimizer, EMA,
loader and RNG state; "best" on the validation split), ``metrics.jsonl`` / ``metrics.csv`` (per epoch),
``steps.csv`` (per step), ``curves.png`` and ``summary.json``.
Exit status: 0 done, 2 bad arguments or files, 3 the loss diverged (NaN/inf), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..backend import ALIASES, BACKENDS
from ..data import DATASETS, DataError
from ..io import CheckpointError
from ..kernels.allocator import retain_freed_memory
from ..models import ALL_VARIANTS
from .loop import LAST, TrainConfig, Trainer, TrainingDiverged
from .recipes import RECIPES, recipe_settings

_MODELS = sorted(k.removeprefix("conv2former_") for k in ALL_VARIANTS)
_HELP = {
    "dataset": f"one of {', '.join(DATASETS)}",
    "model": f"one of {', '.join(_MODELS)} (micro/mini are the small-image configurations)",
    "kernel_size": "depthwise kernel of the blocks (default: the variant's)",
    "epochs": "number of epochs",
    "batch_size": "training batch size",
    "lr": "peak learning rate (after warmup)",
    "min_lr": "learning rate at the end of the cosine",
    "warmup_epochs": "linear warmup length in epochs (fractions allowed), at most --warmup-fraction of the run",
    "warmup_fraction": "cap of the warmup, a fraction of the run's steps (so a 1-epoch run warms up, then decays)",
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
    "random_erasing": "probability of Random Erasing per image: one box of 2-40%% of the image filled with noise "
    "(0 = off)",
    "mixup": "mixup alpha (0 = off)",
    "cutmix": "cutmix alpha (0 = off)",
    "train_subset": "train on this many samples (0 = all), a seeded random subset",
    "test_subset": "evaluate on this many samples (0 = all)",
    "val_split": "hold out this many training images (seeded) for validation: the best epoch and checkpoint_best "
    "are chosen on them, never on the test split (0 = no validation, no best)",
    "seed": "seed of the initialisation, shuffling, augmentation and drop path",
    "dtype": "float32 or float64",
    "backend": "fast (Numba kernels; alias numba) or teaching (the NumPy copy, slow; alias numpy)",
    "checkpoint_every": "also checkpoint every N steps inside an epoch (0 = at epoch ends only)",
    "eval_batch_size": "batch size of the evaluation (in each worker process)",
    "eval_hflip": "also report the accuracy of each image's and its mirror's logits averaged (one more pass)",
    "workers": "processes sharing every batch (data parallel; each runs C2F_NUM_THREADS/workers threads). "
    "micro on 2 cores: 1.5x faster with 2 than with 1; BatchNorm then normalises each process's slice",
}


# Debian packages that install a data set where c2f_numpy.data looks for it (without internet)
_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}


def _missing_data_hint(args: argparse.Namespace) -> str:
    dataset = getattr(args, "dataset", None) or ("fashion_mnist" if not args.resume else None)
    package = _PACKAGES.get(dataset or "")
    apt = f"install Debian's package (apt-get install -y {package}), or " if package else ""
    return f"\nc2f-train: without internet: {apt}put the files in a directory and pass --data-dir DIR"


def build_parser() -> argparse.ArgumentParser:
    """The parser. Settings default to ``SUPPRESS`` so a resume can tell which ones were given."""
    p = argparse.ArgumentParser(
        prog="c2f-train",
        description="Train a Conv2Former on CPU (c2f_numpy). Defaults (recipe fashion_mnist_30min): " + ", ".join(
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
    p.add_argument(
        "--plot-every",
        type=int,
        default=0,
        metavar="N",
        help="also redraw curves.png and steps.csv every N steps, for a live view (0 = at epoch ends)",
    )
    p.add_argument("--recipe", choices=list(RECIPES), default=None,
                   # argparse %-formats help strings; the recipes' notes hold percentages
                   help="start from this recipe's settings (flags given override them); "
                   + "; ".join(r.describe() for r in RECIPES.values()).replace("%", "%%"))  # fmt: skip
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
                   "backend": [*BACKENDS, *ALIASES]}.get(f.name)  # fmt: skip
        recipe.add_argument(flag, type=kind, choices=choices, default=argparse.SUPPRESS, help=_HELP[f.name])
    return p


def new_config(recipe: str | None, given: dict[str, Any]) -> tuple[TrainConfig, str]:
    """The config of a new run: recipe ``recipe`` (None: the defaults, which are fashion_mnist_30min) with the
    settings ``given`` on the command line overriding it; and the line saying so, printed at the start."""
    name = recipe or "fashion_mnist_30min"
    flags = ", ".join(f"{k}={v}" for k, v in given.items()) + " from flags" if given else "no flags"
    line = f"c2f-train: recipe {name}{'' if recipe else ' (the defaults)'}: {RECIPES[name].about}; {flags}"
    return TrainConfig(**(recipe_settings(name) | given)), line


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    retain_freed_memory()  # every step allocates the same tensors: keep the freed ones for the next (see there)
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    try:
        if args.resume and args.recipe:
            raise ValueError("--recipe starts a run; a resumed run keeps the settings in its checkpoint")
        if args.plot_every < 0:
            raise ValueError(f"--plot-every must be >= 0, got {args.plot_every}")
        if args.resume:
            config = None
            resume_path = args.out / LAST if args.resume is True else Path(args.resume)
            if given:
                from .checkpoint import load_checkpoint

                saved = TrainConfig.from_dict(load_checkpoint(resume_path).meta["config"])
                config = TrainConfig.from_dict({**saved.__dict__, **given})
            trainer = Trainer(config, args.out, resume=resume_path, data_dir=args.data_dir,
                              progress=not args.no_progress, stop_after_steps=args.stop_after_steps,
                              plot_every=args.plot_every)  # fmt: skip
        else:
            if (args.out / LAST).exists():
                print(f"c2f-train: {args.out / LAST} exists: pass --resume to continue that run, or choose another "
                      "--out", file=sys.stderr)  # fmt: skip
                return 2
            config, line = new_config(args.recipe, given)
            print(line, flush=True)
            trainer = Trainer(config, args.out, data_dir=args.data_dir,
                              progress=not args.no_progress, stop_after_steps=args.stop_after_steps,
                              plot_every=args.plot_every)  # fmt: skip
        trainer.fit()
    except TrainingDiverged as exc:
        print(f"c2f-train: training diverged: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\nc2f-train: interrupted; continue with: c2f-train --out {args.out} --resume", file=sys.stderr)
        return 130
    except DataError as exc:
        print(f"c2f-train: error: {exc}{_missing_data_hint(args)}", file=sys.stderr)
        return 2
    except (ValueError, CheckpointError, FileNotFoundError) as exc:
        print(f"c2f-train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
