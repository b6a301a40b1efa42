"""Median training step and inference time of one c2f_numpy model, for A/B comparisons of two checkouts.

    python benchmarks/steptime.py                       # this checkout, micro, batch 128, 1x28x28
    python benchmarks/steptime.py --tree ../other --retain-freed-memory --model mini

Run the variants alternately, more than once, with nothing else running: this machine's speed drifts by 10-20%
between runs minutes apart. The thread count is C2F_NUM_THREADS (default: all cores).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1], help="checkout to time")
    ap.add_argument("--model", default="micro")
    ap.add_argument("--kernel-size", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--chans", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--retain-freed-memory", action="store_true", help="as c2f-train does (kernels/allocator.py)")
    args = ap.parse_args()
    tree = args.tree.resolve()
    sys.path[:0] = [str(tree), str(tree / "benchmarks")]
    import c2f_numpy  # before NumPy: it configures the threads

    if not Path(c2f_numpy.__file__).resolve().is_relative_to(tree):
        raise SystemExit(f"steptime: imported c2f_numpy from {c2f_numpy.__file__}, not from {tree}")
    if args.retain_freed_memory:
        from c2f_numpy.kernels.allocator import retain_freed_memory

        if not retain_freed_memory():
            raise SystemExit("steptime: retain_freed_memory is not available here (needs glibc)")
    import numpy as np
    from bench import our_model

    step, infer = our_model(args.kernel_size, args.batch, args.size, args.model, args.chans)
    for _ in range(5):
        step()
    times, f0 = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / args.steps
    infer()
    inf, f0 = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(max(5, args.steps // 2)):
        t = time.perf_counter()
        infer()
        inf.append(time.perf_counter() - t)
    inf_faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / len(inf)
    print(f"{tree}: {args.model} k={args.kernel_size} batch {args.batch} {args.chans}x{args.size}x{args.size}"
          f"{' retain' if args.retain_freed_memory else ''}: step {np.median(times) * 1e3:.1f} ms, inference "
          f"{np.median(inf) * 1e3:.1f} ms, page faults per step {faults:.0f}, "
          f"per inference {inf_faults:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
