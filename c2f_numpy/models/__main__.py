"""Print every variant's size: ``python -m c2f_numpy.models [--image-size 224] [--num-classes 1000]``.

Parameters and multiply-accumulates (convolutions and linear layers) per image, next to the counts taken on
the official code at 224x224 with 1000 classes.
"""

from __future__ import annotations

import argparse

from . import VARIANTS, create_model, model_stats

# Counted on the official code (github.com/HVision-NKU/Conv2Former) at 224x224, 1000 classes.
OFFICIAL = {
    "conv2former_n": (14.99, 2.33),
    "conv2former_t": (26.70, 4.36),
    "conv2former_s": (50.03, 8.71),
    "conv2former_b": (90.03, 15.89),
    "conv2former_b_22k": (88.78, 15.56),
    "conv2former_l": (198.89, 36.04),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m c2f_numpy.models", description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args(argv)
    print(f"| variant | kernel | params | MACs at {args.image_size} | official params / MACs (224, 1000 classes) |")
    print("|---|---|---|---|---|")
    for name, variant in VARIANTS.items():
        stats = model_stats(create_model(name, num_classes=args.num_classes), args.image_size)
        p, m = OFFICIAL[name]
        print(f"| {name} | {variant.kernel_size} | {stats['params'] / 1e6:.2f}M | {stats['macs'] / 1e9:.2f}G "
              f"| {p:.2f}M / {m:.2f}G |")  # fmt: skip


if __name__ == "__main__":
    main()
