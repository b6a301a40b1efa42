"""``c2f-inspect``: effective receptive fields and learned kernels of any Conv2Former, without torch.

    c2f-inspect erf SOURCE --stage S [--block B] [--size N] [--images DIR|fashion_mnist|cifar10|noise] [-n COUNT] -o OUT
    c2f-inspect kernels SOURCE -o OUT

SOURCE: an official ``.pth`` (plain or EMA: ``--weights``), a c2f_numpy ``.npz`` / ``.safetensors``, a
``c2f-train`` checkpoint, or a variant name (``n``, ``t``, ``micro``, ...) with random weights
(``--kernel-size``, ``--layer-scale``, ``--seed``). Writes into OUT: ``erf.png``, ``erf.json``, ``erf.txt``
and the map ``erf.npy`` (or ``kernels.png``, ``kernels.json``, ``kernels.txt``). Exit status: 0 success,
2 usage, file or input errors (with the reason on stderr). The definitions: docs/analysis.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DataError
from ..io import CheckpointError, atomic_write
from ..models import model_config
from ..nn import StateDictError
from ..oracle.cli import _positive  # the one positive-int argument type of the command-line tools
from ..version import __version__
from .erf import LOG_PEAK, SHARES, ERFError, effective_receptive_field, erf_figure, erf_summary, ratio_table
from .kernels import kernel_figure, kernel_table, learned_kernels
from .sources import SourceError, load_images, load_source

PROG = "c2f-inspect"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("source", help="a .pth / .npz / .safetensors file, a c2f-train checkpoint, or a variant name")
        q.add_argument("-o", "--out", required=True, type=Path, help="output directory (created)")
        q.add_argument("--weights", choices=("auto", "plain", "ema"), default="auto",
                       help="which weights of a training checkpoint (default auto: plain if present)")  # fmt: skip
        q.add_argument("--kernel-size", type=_positive, help="random weights only: the depthwise kernel size")
        q.add_argument("--layer-scale", type=float, help="random weights only: the layer scales' initial value")
        q.add_argument("--in-chans", type=_positive, help="random weights only: input channels (default 3)")
        q.add_argument("--seed", type=int, default=0, help="random weights and image draws (default 0)")

    e = sub.add_parser("erf", help="the effective receptive field of a stage's (or block's) centre unit")
    common(e)
    e.add_argument("--stage", type=int, required=True, help="1-based stage whose output is measured")
    e.add_argument("--block", type=int, help="1-based block within the stage (default: the stage's output)")
    e.add_argument("--size", type=_positive, help="image side (default: the data set's, 224 for noise and folders)")
    e.add_argument("--images", default="noise", help="noise (default), a data set name (fashion_mnist, cifar10, ...) "
                   "or a folder of images (needs Pillow: the images extra)")  # fmt: skip
    e.add_argument("-n", "--num-images", type=_positive, default=8, help="images to average over (default 8)")
    e.add_argument("--batch-size", type=_positive, default=4, help="images per forward/backward (default 4)")
    e.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    e.add_argument("--no-progress", action="store_true", help="no progress bar")

    k = sub.add_parser("kernels", help="the learned depthwise kernels: mean |w| per stage and a few channels")
    common(k)
    k.add_argument("--channels", type=_positive, default=4, help="channels of each stage's last block to show")
    return p


def _write(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    atomic_write(path, lambda fh: fh.write(data))


def _run_erf(args: argparse.Namespace) -> str:
    model, described = load_source(args.source, weights=args.weights, kernel_size=args.kernel_size,
                                   layer_scale=args.layer_scale, in_chans=args.in_chans,
                                   seed=args.seed, dtype=np.dtype(args.dtype))  # fmt: skip
    images, hw, images_text = load_images(args.images, args.num_images, args.size, model.in_chans, seed=args.seed)
    t0 = time.perf_counter()
    result = effective_receptive_field(model, images, stage=args.stage, block=args.block, size=hw,
                                       batch_size=args.batch_size, seed=args.seed,
                                       progress=not args.no_progress)  # fmt: skip
    seconds = time.perf_counter() - t0
    where = f"stage {args.stage}" + (f" block {args.block}" if args.block else "")
    c, h, w = result.feature_shape
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    numbers = {
        "source": args.source, "model": described, "config": model_config(model), "stage": args.stage,
        "block": args.block, "image_size": list(hw), "images": images_text, "num_images": result.num_images,
        "dtype": result.dtype, "seed": args.seed, "feature_shape": [c, h, w], "centre_unit": list(result.centre),
        "seconds": round(seconds, 3), "c2f_numpy": __version__,
        "command": args.command_line,
    } | erf_summary(result.map)  # fmt: skip
    _write(out / "erf.json", json.dumps(numbers, indent=2) + "\n")
    np.save(out / "erf.npy", result.map)  # plain .npy, no pickle
    title = f"{model_config(model)['kernel_size']}x{model_config(model)['kernel_size']} kernels, {where}"
    table = (
        f"ERF of {described}\nat the centre unit {result.centre} of the {c}x{h}x{w} output of {where}, "
        f"{images_text} at {hw[0]}x{hw[1]}, {result.dtype}, {seconds:.1f} s\n"
        f"area ratio t of the smallest centred square holding each share (log score: peak scaled to {LOG_PEAK:g})\n"
        + ratio_table([(title, result.map)], SHARES, width=len(title))
    )
    _write(out / "erf.txt", table + "\n")
    fig = erf_figure(result.map, f"{described}\n{where}, {images_text}, {hw[0]}x{hw[1]}")
    fig.savefig(out / "erf.png", dpi=110)
    return table + f"\nwrote {out / 'erf.png'}, erf.json, erf.txt, erf.npy"


def _run_kernels(args: argparse.Namespace) -> str:
    model, described = load_source(args.source, weights=args.weights, kernel_size=args.kernel_size,
                                   layer_scale=args.layer_scale, in_chans=args.in_chans,
                                   seed=args.seed)  # fmt: skip
    kernels = learned_kernels(model)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"source": args.source, "model": described, "c2f_numpy": __version__}
    _write(out / "kernels.json", json.dumps(summary | kernels.summary(), indent=2) + "\n")
    table = f"depthwise kernels of {described}\n" + kernel_table(kernels)
    _write(out / "kernels.txt", table + "\n")
    kernel_figure(kernels, args.channels, described).savefig(out / "kernels.png", dpi=110)
    return table + f"\nwrote {out / 'kernels.png'}, kernels.json, kernels.txt"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 success, 2 errors)."""
    parser = _parser()
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        args.command_line = shlex.join([PROG, *argv])
    except SystemExit as exc:  # argparse has printed the usage message (or --help)
        return int(exc.code or 0)
    try:
        print(_run_erf(args) if args.command == "erf" else _run_kernels(args))
        return 0
    except FileNotFoundError as exc:
        message = f"no such file: {exc.filename}" if exc.filename else str(exc)
    except StateDictError as exc:  # weights that do not fit the architecture
        message = str(exc)
    except (ERFError, SourceError, CheckpointError, DataError, ValueError, OSError) as exc:
        message = str(exc)
    print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
