"""``c2f-oracle``: write a layer-by-layer dump of c2f_numpy, compare two dumps, show one.

    c2f-oracle run -o ours.npz [--variant n] [--weights W.pth] [--size 224 224] [--grad]
    c2f-oracle compare ours.npz theirs.safetensors [--rtol R] [--atol A] [--all] [--strict]
    c2f-oracle show ours.npz

Exit status: 0 success (compare: every compared tensor OK), 1 divergence (compare), 2 usage or file errors.
The workflow for checking a port: docs/porting.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import ALIASES, TEACHING
from ..io import CheckpointError, load_npy
from ..models import VARIANTS, create_model, save_model
from ..nn import StateDictError
from ..testing import randomize_for_parity
from .compare import DEFAULT_MAX_ROWS, CompareError, compare_loaded
from .dump import ORDER_SOURCE_KEY, DumpFileError, dump, dump_metadata, load_dump, save_dump

PROG = "c2f-oracle"
SHORT_VARIANTS = [name.removeprefix("conv2former_") for name in VARIANTS]


def _shorten(text: str, max_lines: int = 12, max_chars: int = 400) -> str:
    """The first lines of a long message (a strict load lists every key), each cut to ``max_chars``."""
    lines = [line if len(line) <= max_chars else line[:max_chars] + " ..." for line in text.splitlines()]
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... ({len(lines) - max_lines} more lines)"]
    return "\n".join(lines)


class UsageError(Exception):
    """A command-line problem found after parsing (exit status 2)."""


def _variant(text: str) -> str:
    key = text if text in VARIANTS else f"conv2former_{text}"
    if key not in VARIANTS:
        raise argparse.ArgumentTypeError(f"unknown variant {text!r}; choose one of {', '.join(SHORT_VARIANTS)}")
    return key


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Numerical oracle for Conv2Former ports: layer-by-layer dumps of c2f_numpy and a comparison "
        "that names the first diverging tensor. Workflow: docs/porting.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,compare,show}")

    run = sub.add_parser(
        "run",
        help="dump every intermediate tensor of a c2f_numpy forward (and backward) pass",
        description="Build a Conv2Former variant (or load weights), run it on a seeded or given input and write "
        "every intermediate tensor (input, <module>.out, logits; with --grad also dlogits, input.grad and "
        "every <parameter>.grad) to a .npz or .safetensors dump.",
    )
    run.add_argument(
        "--variant", type=_variant, default="conv2former_n", help=f"{', '.join(SHORT_VARIANTS)} (default n)"
    )
    run.add_argument(
        "--kernel-size", type=_positive, help="depthwise kernel size (default: the variant's or the weights')"
    )
    run.add_argument("--num-classes", type=_positive, help="classes (default: 1000, or the weights')")
    run.add_argument(
        "--weights", type=Path, metavar="PATH", help="weights to load: .pth/.pt (official), .npz, .safetensors"
    )
    init = run.add_mutually_exclusive_group()
    init.add_argument(
        "--randomize-seed", type=int, metavar="N",
        help="without --weights: give every parameter and BatchNorm statistic an O(1) value drawn from seed N "
        "(default 0). The official init sets every layer scale to 1e-6, which makes each block the identity to "
        "six digits, so a dump would not see a wrong block at all",
    )  # fmt: skip
    init.add_argument(
        "--official-init", action="store_true",
        help="without --weights: keep the official initialisation (layer scales 1e-6; see --randomize-seed)",
    )  # fmt: skip
    run.add_argument(
        "--dtype", choices=["float64", "float32"], default="float64", help="default float64 (the reference)"
    )
    run.add_argument(
        "--input", type=Path, metavar="X.npy", help="input images (N, C, H, W) from a .npy file (no pickles)"
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the input images and of --grad's dlogits (default 0)")
    run.add_argument("--batch", type=_positive, help="seeded input: batch size (default 1)")
    run.add_argument(
        "--size", type=_positive, nargs=2, metavar=("H", "W"), help="seeded input: image size (default 224 224)"
    )
    run.add_argument(
        "--grad", action="store_true", help="also run a backward from seeded dlogits and dump the gradients"
    )
    run.add_argument(
        "--backend", default=TEACHING,
        help="which copy of the ops computes, for models that have several: teaching (default: the NumPy ops, "
        "checked against finite differences and PyTorch) or fast (the Numba kernels); numpy and numba are aliases",
    )  # fmt: skip
    run.add_argument("--train", action="store_true", help="train mode (batch-statistic BatchNorm); default eval")
    run.add_argument(
        "--save-weights", type=Path, metavar="W",
        help="also write the weights the dump was made with (.npz or .safetensors, before the pass), to load the "
        "same weights into a port (e.g. the randomized ones)",
    )  # fmt: skip
    run.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="the dump: .npz or .safetensors")

    cmp = sub.add_parser(
        "compare",
        help="compare dump B (a port) with dump A (the reference) and name the first divergence",
        description="Compare two .npz/.safetensors files of named arrays tensor by tensor, forward tensors in A's "
        "order, then gradients in backward order. Per tensor: OK iff max|a-b| <= atol + rtol * max|a|. Prints the "
        "NOT OK rows (--all: every row), the names on one side only, and on the last line the first diverging "
        "tensor. Exit status 0 if every compared tensor is OK, 1 on a divergence, 2 on usage or file errors.",
    )
    cmp.add_argument("a", type=Path, metavar="A", help="the reference dump (c2f_numpy, float64)")
    cmp.add_argument("b", type=Path, metavar="B", help="the dump under test (a port)")
    cmp.add_argument("--rtol", type=_tolerance, help="bound on max|a-b|/max|a| for every tensor (default by dtype: "
                     "1e-10 float64, 1e-4 float32, the less precise of A and B)")  # fmt: skip
    cmp.add_argument("--atol", type=_tolerance, help="absolute slack added to the bound (default 0)")
    cmp.add_argument("--all", action="store_true", help="print every row and every unmatched name")
    cmp.add_argument("--strict", action="store_true", help="names present in only one file also fail")
    cmp.add_argument("--max-rows", type=_positive, default=DEFAULT_MAX_ROWS, help="NOT OK rows printed without --all")

    show = sub.add_parser("show", help="list a dump's metadata and tensors (name, shape, dtype, max|x|)")
    show.add_argument("path", type=Path, metavar="DUMP")
    return parser


# ------------------------------------------------------------------------------------------------------------
# run


def _load_input(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.suffix.lower() != ".npy":
        raise UsageError(f"--input {path}: expected a .npy file (np.save of one (N, C, H, W) array)")
    try:
        x = load_npy(path)
    except FileNotFoundError:
        raise UsageError(f"--input {path}: no such file") from None
    except (ValueError, OSError) as exc:
        raise UsageError(f"--input {path}: not a readable .npy array of numbers ({exc})") from None
    if not isinstance(x, np.ndarray):
        raise UsageError(f"--input {path}: expected one array, got {type(x).__name__}")
    if x.ndim != 4 or x.dtype.kind not in "iuf":
        raise UsageError(f"--input {path}: expected a real (N, C, H, W) array, got {x.dtype} {x.shape}")
    return np.ascontiguousarray(x, dtype=dtype)


def _run(args: argparse.Namespace) -> int:
    if args.weights is not None and (args.randomize_seed is not None or args.official_init):
        raise UsageError("--randomize-seed / --official-init apply to a built model; --weights loads its own")
    if args.input is not None and (args.batch is not None or args.size is not None):
        raise UsageError("--input gives the images; --batch and --size are for a seeded input")
    for option, path in (("-o", args.output), ("--save-weights", args.save_weights)):
        if path is not None and path.suffix.lower() not in (".npz", ".safetensors"):
            raise UsageError(f"{option} {path}: a dump or weights file is .npz or .safetensors")
    start = time.perf_counter()
    dtype = np.dtype(args.dtype)
    kw: dict[str, Any] = {"dtype": dtype}
    if args.kernel_size is not None:
        kw["kernel_size"] = args.kernel_size
    if args.num_classes is not None:
        kw["num_classes"] = args.num_classes
    extra: dict[str, str] = {}
    if args.weights is not None:
        try:
            model = create_model(args.variant, checkpoint=args.weights, **kw)
        except StateDictError as exc:
            raise UsageError(
                f"--weights {args.weights} do not fit {args.variant} (pass the --variant they were trained as):\n"
                + _shorten(str(exc))
            ) from None
        extra["weights"] = str(args.weights)
    else:
        model = create_model(args.variant, **kw)
        if args.official_init:
            extra["weights"] = "official init (seed 0)"
        else:
            seed = 0 if args.randomize_seed is None else args.randomize_seed
            randomize_for_parity(model, seed)
            extra["weights"] = f"randomize_for_parity(seed={seed})"
    set_backend = getattr(model, "set_backend", None)
    if set_backend is not None:
        set_backend(args.backend)  # ValueError naming the backends for an unknown one
    elif ALIASES.get(args.backend, args.backend) != TEACHING:
        raise UsageError(f"--backend {args.backend}: this model has only the teaching copy of the ops")
    model.train(args.train)
    if args.input is not None:
        x = _load_input(args.input, dtype)
        extra["input"] = str(args.input)
    else:
        batch = args.batch or 1
        h, w = args.size or (224, 224)
        x = np.random.default_rng(args.seed).standard_normal((batch, model.in_chans, h, w)).astype(dtype)
        extra["input"] = f"default_rng({args.seed}).standard_normal(({batch}, {model.in_chans}, {h}, {w}))"
    dlogits = None
    if args.grad:
        dlogits = np.random.default_rng([args.seed, 1]).standard_normal((x.shape[0], model.num_classes)).astype(dtype)
        extra["dlogits"] = f"default_rng([{args.seed}, 1]).standard_normal(({x.shape[0]}, {model.num_classes}))"
    model.check_input(x)  # a clear error before anything is written
    if args.save_weights is not None:
        save_model(model, args.save_weights)  # the weights of the pass (a train-mode pass updates BatchNorm)
    tensors = dump(model, x, dlogits)
    meta = dump_metadata(model, variant=args.variant, seed=args.seed, **extra)
    save_dump(args.output, tensors, meta)
    mode = "train" if args.train else "eval"
    print(
        f"wrote {args.output}: {len(tensors)} tensors ({args.variant}, kernel {model.kernel_size}, {dtype.name}, "
        f"{mode}, input {'x'.join(map(str, x.shape))}{', with gradients' if args.grad else ''}) "
        f"in {time.perf_counter() - start:.1f} s" + (f"; weights in {args.save_weights}" if args.save_weights else "")
    )
    return 0


# ------------------------------------------------------------------------------------------------------------
# compare, show


def _describe(meta: dict[str, str]) -> str:
    keys = ("library", "variant", "kernel_size", "dtype", "mode", "weights")
    parts = [f"{k} {meta[k]}" if k == "kernel_size" else meta[k] for k in keys if k in meta]
    return ", ".join(parts) if parts else "no c2f_numpy metadata"


def _compare(args: argparse.Namespace) -> int:
    ta, meta_a = load_dump(args.a)
    tb, meta_b = load_dump(args.b)
    report = compare_loaded(
        ta, tb, args.rtol, args.atol, strict=args.strict,
        sources=(meta_a[ORDER_SOURCE_KEY], meta_b[ORDER_SOURCE_KEY]), labels=(str(args.a), str(args.b)),
    )  # fmt: skip
    print(f"A: {args.a} ({len(ta)} tensors; {_describe(meta_a)})")
    print(f"B: {args.b} ({len(tb)} tensors; {_describe(meta_b)})")
    print("\n".join(report.lines(all_rows=args.all, max_rows=args.max_rows)))
    return 0 if report.ok else 1


def _show(args: argparse.Namespace) -> int:
    tensors, meta = load_dump(args.path)
    print(f"{args.path}: {len(tensors)} tensors")
    for k, v in meta.items():
        print(f"  {k}: {v}")
    width = max(len(n) for n in tensors)
    for name, arr in tensors.items():
        finite = arr[np.isfinite(arr)] if arr.dtype.kind in "fc" else arr
        peak = f"{float(np.abs(finite).max()):.3e}" if finite.size else "-"
        shape = "x".join(map(str, arr.shape)) or "()"
        print(f"{name:<{width}}  {shape:<16}  {arr.dtype.name:<8}  max|x| {peak}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``c2f-oracle`` and ``python -m c2f_numpy.oracle``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage message (or --help)
        return exc.code if isinstance(exc.code, int) else 2
    command = {"run": _run, "compare": _compare, "show": _show}[args.command]
    try:
        return command(args)
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as other command-line tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (UsageError, DumpFileError, CompareError, CheckpointError, FileNotFoundError) as exc:
        message = str(exc)
    except KeyError as exc:  # StateDictError: weights that do not fit the model
        message = _shorten(str(exc.args[0]) if exc.args else repr(exc))
    except (ValueError, OSError) as exc:
        message = f"{type(exc).__name__}: {exc}"
    print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
