"""A first look at c2f_numpy: one Conv2Former block's two branches, forward, backward and a gradient check.

    python -m c2f_numpy.demo [--kernel 11] [--size 14] [--channels 16] [--seed 0]

Builds the ConvMod ("attention") and MLP branches of a block with random O(1) weights, runs a forward and a
hand-written backward in float64, then checks every gradient against central finite differences. Exit status
is 0 only if every check passes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

import numpy as np

from . import ops
from .gradcheck import directional_check


def random_branch_params(
    rng: np.random.Generator, c: int, kernel: int, mlp_ratio: int = 4
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random ConvMod and MLP parameters (official sub-keys), O(1) scale so that every path matters."""
    hid = c * mlp_ratio

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]) if len(shape) > 1 else 1.0)

    attn = {
        "norm.weight": 1 + 0.1 * rng.standard_normal(c), "norm.bias": 0.1 * rng.standard_normal(c),
        "att.0.weight": normal(c, c, 1, 1), "att.0.bias": 0.1 * rng.standard_normal(c),
        "att.2.weight": normal(c, 1, kernel, kernel), "att.2.bias": 0.1 * rng.standard_normal(c),
        "v.weight": normal(c, c, 1, 1), "v.bias": 0.1 * rng.standard_normal(c),
        "proj.weight": normal(c, c, 1, 1), "proj.bias": 0.1 * rng.standard_normal(c),
    }  # fmt: skip
    mlp = {
        "norm.weight": 1 + 0.1 * rng.standard_normal(c), "norm.bias": 0.1 * rng.standard_normal(c),
        "fc1.weight": normal(hid, c, 1, 1), "fc1.bias": 0.1 * rng.standard_normal(hid),
        "pos.weight": normal(hid, 1, 3, 3), "pos.bias": 0.1 * rng.standard_normal(hid),
        "fc2.weight": normal(c, hid, 1, 1), "fc2.bias": 0.1 * rng.standard_normal(c),
    }  # fmt: skip
    return attn, mlp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m c2f_numpy.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", type=int, default=11, help="depthwise kernel size of ConvMod (odd)")
    parser.add_argument("--size", type=int, default=14, help="feature map height and width")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    c, k = args.channels, args.kernel
    x = rng.standard_normal((args.batch, c, args.size, args.size))
    attn, mlp = random_branch_params(rng, c, k)
    gamma1, gamma2 = np.ones(c), np.ones(c)  # O(1) layer scales (the official init 1e-6 hides both branches)

    def block(inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, tuple]:
        """x + g1 * attn(x), then h + g2 * mlp(h): a Conv2Former block without drop path."""
        a, ca = ops.convmod_forward(inputs["x"], {k_: inputs["attn." + k_] for k_ in ops.CONVMOD_KEYS})
        s1, cs1 = ops.layer_scale_forward(a, inputs["layer_scale_1"])
        h = inputs["x"] + s1
        m, cm = ops.mlp_forward(h, {k_: inputs["mlp." + k_] for k_ in ops.MLP_KEYS})
        s2, cs2 = ops.layer_scale_forward(m, inputs["layer_scale_2"])
        return h + s2, (ca, cs1, cm, cs2)

    inputs = {"x": x, "layer_scale_1": gamma1, "layer_scale_2": gamma2}
    inputs |= {"attn." + k_: v for k_, v in attn.items()} | {"mlp." + k_: v for k_, v in mlp.items()}
    print(f"Conv2Former block: batch {args.batch}, {c} channels, {args.size}x{args.size}, kernel {k}x{k}, float64")

    t0 = time.perf_counter()
    out, (ca, cs1, cm, cs2) = block(inputs)
    t1 = time.perf_counter()
    r = rng.standard_normal(out.shape)  # upstream gradient of L = sum(out * r)
    dm, g2 = ops.layer_scale_backward(r, cs2)
    dh_mlp, gm = ops.mlp_backward(dm, cm)
    dh = r + dh_mlp
    da, g1 = ops.layer_scale_backward(dh, cs1)
    dx_attn, ga = ops.convmod_backward(da, ca)
    grads = {"x": dh + dx_attn, "layer_scale_1": g1, "layer_scale_2": g2}
    grads |= {"attn." + k_: v for k_, v in ga.items()} | {"mlp." + k_: v for k_, v in gm.items()}
    t2 = time.perf_counter()
    print(f"forward {1e3 * (t1 - t0):.1f} ms, backward {1e3 * (t2 - t1):.1f} ms; output {out.shape}, "
          f"|out - x| / |x| = {np.linalg.norm(out - x) / np.linalg.norm(x):.3f}")  # fmt: skip
    print("gradient check (central differences along a random direction):")
    results = directional_check(lambda a: float(np.sum(block(a)[0] * r)), inputs, grads, rng)
    for res in results:
        print("  " + str(res))
    bad = sum(not res.ok for res in results)
    print(f"{len(results) - bad}/{len(results)} gradients OK" + ("" if not bad else f", {bad} NOT OK"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
