"""c2f_numpy (Numba kernels) against PyTorch CPU, interleaved in one process: medians and ratios.

    python benchmarks/bench.py              # everything (about 15 minutes on 2 cores)
    python benchmarks/bench.py --quick      # the headline rows only
    python benchmarks/bench.py --scenarios  # N and micro: c2f_numpy first, torch first, beside a busy process
    python benchmarks/bench.py --profile    # where our steps go: by stage and by function

It compares against the PyTorch replica of the official model, c2f_numpy/torch_reference.py. For stable timings it
re-executes itself with the allocator settings of docs/performance.md. Both libraries get the same thread
count (--threads, default: all cores). Rows: depthwise convolution forward and backward on the shapes
Conv2Former-N runs; the N training step (forward + backward + AdamW) and inference; peak memory of a training
step, each library in its own process; Numba start-up (cold compile, warm cache); float32 GEMM's rate and each
model row's GEMM floor (its GEMM FLOPs at that rate); where our steps' time goes (N, micro, mini, 224 inference).
The scenarios re-run the N and micro rows in fresh processes as users have them: c2f_numpy imported before
torch, torch imported first, and beside one other CPU-bound process (a 2-thread NumPy GEMM loop); each
library's slowdown is against its own time in the first. Every result records lscpu's model and flags.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ALLOCATOR = {
    "MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "4294967296",
    "THP_MEM_ALLOC_ENABLE": "1",
}  # fmt: skip


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def interleaved(ours: Callable[[], object], theirs: Callable[[], object], repeats: int) -> tuple[float, float]:
    """A B A B ...: both see the same machine state; returns the two medians."""
    ours(), theirs()  # warm-up (JIT, allocator)
    a, b = [], []
    for _ in range(repeats):
        a.append(median_time(ours, 1))
        b.append(median_time(theirs, 1))
    return sorted(a)[len(a) // 2], sorted(b)[len(b) // 2]


def time_depthwise(n: int, c: int, hw: int, k: int, repeats: int) -> dict:
    """Forward and backward of one depthwise convolution, ours (NHWC) and torch's (NCHW), interleaved."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from c2f_numpy.kernels import nhwc

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, hw, hw, c)).astype(np.float32)
    w = (rng.standard_normal((c, 1, k, k)) * 0.1).astype(np.float32)
    b = np.zeros(c, np.float32)
    out, cache = nhwc.conv2d_forward(x, w, b, padding=k // 2, groups=c)
    d = rng.standard_normal(out.shape).astype(np.float32)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    wt, bt = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    dt = torch.tensor(d.transpose(0, 3, 1, 2).copy())
    y = F.conv2d(xt, wt, bt, padding=k // 2, groups=c)

    def t_fwd() -> object:
        with torch.no_grad():
            return F.conv2d(xt, wt, bt, padding=k // 2, groups=c)

    fo, ft = interleaved(lambda: nhwc.conv2d_forward(x, w, b, padding=k // 2, groups=c), t_fwd, repeats)
    bo, bt_ = interleaved(
        lambda: nhwc.conv2d_backward(d, cache),
        lambda: torch.autograd.grad(y, (xt, wt, bt), dt, retain_graph=True),
        repeats,
    )
    gflop = 2 * n * c * hw * hw * k * k / 1e9  # nominal: every tap, as libraries count it
    return {"ours_fwd_ms": fo * 1e3, "torch_fwd_ms": ft * 1e3, "ours_bwd_ms": bo * 1e3, "torch_bwd_ms": bt_ * 1e3,
            "ours_fwd_gflops": gflop / fo, "torch_fwd_gflops": gflop / ft,
            "ours_bwd_gflops": 2 * gflop / bo, "torch_bwd_gflops": 2 * gflop / bt_}  # fmt: skip


def depthwise_rows(quick: bool, repeats: int) -> list[dict]:
    rows = []
    settings = [("32x32 b64", 64, [(64, 8), (128, 4), (256, 2), (512, 1)]),
                ("224x224 b8", 8, [(64, 56), (128, 28), (256, 14), (512, 7)])]  # fmt: skip
    for label, n, stages in settings:
        for stage, (c, hw) in enumerate(stages, start=1):
            if quick and stage > 2:
                continue
            for k in (11, 21) if quick else (3, 7, 11, 21):
                r = {"shape": f"{label} stage {stage} (C={c}, {hw}x{hw})", "k": k} | time_depthwise(
                    n, c, hw, k, repeats
                )
                rows.append(r)
                fwd = f"fwd {r['ours_fwd_ms']:.2f} vs {r['torch_fwd_ms']:.2f} ms"
                bwd = f"bwd {r['ours_bwd_ms']:.2f} vs {r['torch_bwd_ms']:.2f} ms"
                rates = (f"{r['ours_fwd_gflops']:.0f} vs {r['torch_fwd_gflops']:.0f} / "
                         f"{r['ours_bwd_gflops']:.0f} vs {r['torch_bwd_gflops']:.0f} GFLOP/s")  # fmt: skip
                print(f"  depthwise {r['shape']} k={k}: {fwd}, {bwd} ({rates})", flush=True)
    return rows


def _data(batch: int, size: int, chans: int = 3) -> tuple:
    import numpy as np

    x = np.random.default_rng(0).standard_normal((batch, chans, size, size)).astype(np.float32)
    return x, np.arange(batch) % 10


def our_model(
    k: int, batch: int, size: int, name: str = "n", chans: int = 3
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(training step: forward, cross-entropy, backward, AdamW; inference) of c2f_numpy's Conv2Former ``name``."""
    import c2f_numpy as c2f
    from c2f_numpy.train import AdamW

    model = c2f.create_model(name, num_classes=10, kernel_size=k, in_chans=chans, layer_scale_init_value=1e-2)
    opt = AdamW(model.named_parameters(), lr=1e-3, weight_decay=0.05)
    x, labels = _data(batch, size, chans)

    def step() -> None:
        model.train()
        _, cache = c2f.ops.cross_entropy_forward(model(x), labels)
        opt.zero_grad()
        model.backward(c2f.ops.cross_entropy_backward(1.0, cache))
        opt.step()

    def infer() -> None:
        model.eval()
        model(x)

    return step, infer


def torch_model(
    k: int, batch: int, size: int, name: str = "n", chans: int = 3, channels_last: bool = False
) -> tuple[Callable[[], None], Callable[[], None]]:
    """The same for the PyTorch replica of the official model (c2f_numpy/torch_reference.py)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from c2f_numpy.torch_reference import build_torch_conv2former

    model = build_torch_conv2former(name, kernel_size=k, num_classes=10,
                                    in_chans=chans, layer_scale_init_value=1e-2, dtype=torch.float32)  # fmt: skip
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}])
    x, labels = (torch.tensor(a) for a in _data(batch, size, chans))
    if channels_last:  # torch's faster format for the small-image models (benchmarks/train_torch.py measured it)
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    return step, infer


SMALL_CONFIGS = [("micro", 7, 128, 28, 1), ("mini", 7, 128, 28, 1)]  # Fashion-MNIST shapes, the c2f-train recipes


def model_rows(
    quick: bool, repeats: int, small_only: bool = False, configs: list[tuple[str, int, int, int, int]] | None = None
) -> list[dict]:
    if configs is None:
        sizes = [(11, 64, 32), (21, 64, 32)] if quick else [(7, 64, 32), (11, 64, 32), (21, 64, 32), (11, 8, 224)]
        configs = ([] if small_only else [("n", k, b, s, 3) for k, b, s in sizes]) + SMALL_CONFIGS
    rows = []
    for name, k, batch, size, chans in configs:
        ours = our_model(k, batch, size, name, chans)
        (our_step, our_infer), (torch_step, torch_infer) = ours, torch_model(k, batch, size, name, chans, name != "n")
        so, st = interleaved(our_step, torch_step, repeats)
        io, it = interleaved(our_infer, torch_infer, repeats)
        label = f"{'N' if name == 'n' else name} k={k} {chans}x{size}x{size} batch {batch}"
        rows.append({"config": label, "shape": [name, k, batch, size, chans], "train_ours_ips": batch / so,
                     "train_torch_ips": batch / st, "train_ratio": st / so, "infer_ours_ips": batch / io,
                     "infer_torch_ips": batch / it, "infer_ratio": it / io})  # fmt: skip
        r = rows[-1]
        print(f"  {r['config']}: train {r['train_ours_ips']:.1f} vs {r['train_torch_ips']:.1f} img/s "
              f"({r['train_ratio']:.2f}x), inference {r['infer_ours_ips']:.1f} vs {r['infer_torch_ips']:.1f} img/s "
              f"({r['infer_ratio']:.2f}x)", flush=True)  # fmt: skip
    return rows


def gemm_macs(name: str, k: int, size: int, chans: int) -> tuple[int, int]:
    """(GEMM MACs, all MACs) of one image's forward: the dense and 1x1 convolutions and the head, against
    everything ``model_stats`` counts (the depthwise convolutions too)."""
    import c2f_numpy as c2f
    from c2f_numpy.nn.layers import Conv2d

    model = c2f.create_model(name, num_classes=10, kernel_size=k, in_chans=chans)
    total = c2f.model_stats(model, size)["macs"]
    counted = Conv2d.count_macs

    def dense_only(self: Conv2d, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
        out, macs = counted(self, shape)
        return out, 0 if self.groups > 1 else macs

    try:  # the same walk with the depthwise (grouped) convolutions counted as 0
        Conv2d.count_macs = dense_only  # type: ignore[method-assign]
        dense = c2f.model_stats(model, size)["macs"]
    finally:
        Conv2d.count_macs = counted  # type: ignore[method-assign]
    return dense, total


def sgemm_rate(repeats: int) -> dict:
    """GFLOP/s of a large float32 GEMM (2048^3) on the pool: through c2f_numpy's matmul and through torch.mm."""
    import numpy as np
    import torch

    from c2f_numpy.kernels.gemm import matmul

    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    ta = torch.from_numpy(a)
    ours, theirs = interleaved(lambda: matmul(a, a), lambda: torch.mm(ta, ta), repeats)
    flop = 2 * 2048**3 / 1e9
    out = {"ours_gflops": flop / ours, "torch_gflops": flop / theirs}
    print(f"  sgemm 2048^3: {out['ours_gflops']:.0f} GFLOP/s (c2f_numpy matmul), {out['torch_gflops']:.0f} (torch.mm)",
          flush=True)  # fmt: skip
    return out


def gemm_floor(rows: list[dict], rate_gflops: float) -> list[dict]:
    """Each model row's distance from its GEMM floor: the step's GEMM FLOPs (forward, input gradient, weight
    gradient: 3 GEMMs of 2 MACs-worth of FLOPs each; inference 1) at ``rate_gflops``, against the measured time."""
    out = []
    for r in rows:
        name, k, _batch, size, chans = r["shape"]
        dense, total = gemm_macs(name, k, size, chans)
        train_floor_ips = rate_gflops * 1e9 / (6 * dense)
        infer_floor_ips = rate_gflops * 1e9 / (2 * dense)
        out.append({"config": r["config"], "gemm_macs": dense, "all_macs": total,
                    "train_floor_ips": train_floor_ips, "train_times_floor": train_floor_ips / r["train_ours_ips"],
                    "infer_floor_ips": infer_floor_ips,
                    "infer_times_floor": infer_floor_ips / r["infer_ours_ips"]})  # fmt: skip
        f = out[-1]
        print(f"  {f['config']}: {dense / 1e6:.1f}M GEMM MACs/image of {total / 1e6:.1f}M; at {rate_gflops:.0f} "
              f"GFLOP/s the floor is {train_floor_ips:.0f} img/s training ({f['train_times_floor']:.1f}x faster than "
              f"ours), {infer_floor_ips:.0f} img/s inference ({f['infer_times_floor']:.1f}x)", flush=True)  # fmt: skip
    return out


def _peak_rss_mb() -> float:
    """VmHWM: this address space's peak RSS (ru_maxrss would include the parent's peak: it survives exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(kind: str, k: int, batch: int, size: int) -> None:
    """Run in a fresh process: a few training steps of one library, then print its peak RSS."""
    step, _ = (our_model if kind == "ours" else torch_model)(k, batch, size)
    built = _peak_rss_mb()  # libraries and model loaded
    for _ in range(3):
        step()
    peak = _peak_rss_mb()
    print(json.dumps({"maxrss_mb": peak, "step_mb": peak - built}))


def peak_memory(k: int = 11, batch: int = 64, size: int = 32) -> dict:
    out = {}
    for kind in ("ours", "torch"):
        res = subprocess.run([sys.executable, __file__, "--child", kind, str(k), str(batch), str(size)],
                             capture_output=True, text=True, check=True, env=os.environ)  # fmt: skip
        out[kind] = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"  peak RSS, training step N k={k} {size}x{size} batch {batch} (own process each): ours "
          f"{out['ours']['maxrss_mb']:.0f} MB ({out['ours']['step_mb']:.0f} MB above the loaded model), torch "
          f"{out['torch']['maxrss_mb']:.0f} MB ({out['torch']['step_mb']:.0f} MB above)", flush=True)  # fmt: skip
    return out


def jit_startup() -> dict:
    code = ("import time, numpy as np; t=time.perf_counter(); import c2f_numpy as c2f; "
            "m=c2f.conv2former_n(num_classes=10); x=np.zeros((2,3,32,32),np.float32); y=m(x); m.backward(y); "
            "t1=time.perf_counter(); y=m(x); m.backward(y); t2=time.perf_counter(); "
            "print((t1-t)-(t2-t1))")  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                     check=True).stdout.strip()) for _ in range(2)]  # fmt: skip
    print(
        f"  Numba start-up: cold compile {runs[0]:.1f} s, warm cache {runs[1]:.2f} s "
        "(first forward+backward minus a steady one, import included)",
        flush=True,
    )
    return {"cold_s": runs[0], "warm_s": runs[1]}


def _stage_times(model: Any, x: Any, labels: Any, train: bool, repeats: int) -> dict[str, float]:
    """Median wall time (ms) of each top-level piece of a step: the stem, each later stage with its downsampling
    layer, the head with the pooling and the classifier; forward, and backward when ``train``. The pieces run
    as ``Conv2Former.forward`` / ``backward`` run them."""
    import numpy as np

    import c2f_numpy as c2f

    m: c2f.Conv2Former = model
    m.train(train)
    names = ["stem + stage 1"] + [f"stage {i + 1}" for i in range(1, len(m.stages))]  # with its downsampling
    layers = list(zip(names, m.downsample_layers, m.stages, strict=True))
    times: dict[str, list[float]] = {}

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = fn()
        times.setdefault(key, []).append((time.perf_counter() - t) * 1e3)
        return out

    def head_forward(h: np.ndarray) -> tuple[np.ndarray, Any]:
        pooled, pool_cache = m.F.global_avg_pool_forward(m.head(h))
        return m.pred(pooled), pool_cache

    for _ in range(repeats):
        h = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if m.layout == "NHWC" else x
        for name, down, stage in layers:
            h = timed(f"{name} forward", lambda: stage(down(h)))  # noqa: B023 (called at once)
        logits, pool_cache = timed("head forward", lambda: head_forward(h))  # noqa: B023
        if not train:
            continue
        _, ce_cache = c2f.ops.cross_entropy_forward(logits, labels)
        d = c2f.ops.cross_entropy_backward(1.0, ce_cache)
        d = timed("head backward", lambda: m.head.backward(
            m.F.global_avg_pool_backward(m.pred.backward(d), pool_cache)))  # noqa: B023  # fmt: skip
        for name, down, stage in reversed(layers):
            d = timed(f"{name} backward", lambda: down.backward(stage.backward(d)))  # noqa: B023
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


PROFILES = [
    ("n", 11, 64, 32, 3, True),
    ("micro", 7, 128, 28, 1, True),
    ("mini", 7, 128, 28, 1, True),
    ("n", 11, 8, 224, 3, False),
]  # (model, k, batch, size, channels, training step or inference)


def profile(name: str, k: int, batch: int, size: int, chans: int, train: bool, repeats: int = 5) -> dict:
    """Where one of our steps goes: cProfile self time per function, and wall time per stage (_stage_times)."""
    import c2f_numpy as c2f
    from c2f_numpy.train import AdamW

    model = c2f.create_model(name, num_classes=10, kernel_size=k, in_chans=chans, layer_scale_init_value=1e-2)
    opt = AdamW(model.named_parameters(), lr=1e-3, weight_decay=0.05)
    x, labels = _data(batch, size, chans)
    step, infer = our_model(k, batch, size, name, chans)
    run = step if train else infer
    run(), run()  # compile / load the kernels, warm the allocator
    median = median_time(run, repeats)
    stages = _stage_times(model, x, labels, train, repeats)
    if train:
        stages["AdamW"] = median_time(opt.step, repeats) * 1e3
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        run()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    by_fn = sorted(((f"{Path(fn).parent.name}/{Path(fn).name}:{fname}", v[2] / 3 * 1e3)
                    for (fn, _, fname), v in stats.items()), key=lambda r: -r[1])[:14]  # fmt: skip
    kind = "training step" if train else "inference"
    label = f"{'N' if name == 'n' else name} k={k} {chans}x{size}x{size} batch {batch} {kind}"
    print(f"  {label}: median {median * 1e3:.0f} ms; by stage (ms): "
          + ", ".join(f"{key} {ms:.1f}" for key, ms in stages.items()), flush=True)  # fmt: skip
    print(f"    by function (self time per step under cProfile, total {total / 3 * 1e3:.0f} ms):")
    for fname, ms in by_fn:
        print(f"      {ms:7.1f} ms  {fname}")
    return {"config": label, "median_ms": median * 1e3, "stages_ms": stages, "functions_ms": by_fn}


def _write_json(path: Path | None, results: dict) -> None:
    if path is not None:
        from c2f_numpy.io import atomic_write

        atomic_write(path, lambda f: f.write(json.dumps(results, indent=1).encode()))


SCENARIOS = ("c2f_first", "torch_first", "busy")
SCENARIO_CONFIGS = [("n", 11, 64, 32, 3), ("micro", 7, 128, 28, 1)]  # the threading issue's rows


def _busy_loop(seconds: float) -> None:
    """The competing process of the ``busy`` scenario: a 2-thread NumPy GEMM loop, as a second job would be."""
    import numpy as np

    a = np.random.default_rng(0).random((1000, 1000), dtype=np.float32)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        a @ a


def scenario_rows(scenario: str, threads: int, repeats: int) -> list[dict]:
    """The N and micro rows in a process set up as ``scenario``: c2f_numpy imported before torch, torch imported
    first (what a notebook that cross-checks does), or c2f_numpy first beside a busy process."""
    if scenario == "torch_first":
        import torch
    import torch

    import c2f_numpy  # noqa: F401

    torch.set_num_threads(threads)
    competitor = None
    if scenario == "busy":
        env = os.environ | {"OPENBLAS_NUM_THREADS": "2"}
        competitor = subprocess.Popen([sys.executable, __file__, "--busy", "3600"], env=env)
    try:
        return model_rows(quick=True, repeats=repeats, configs=SCENARIO_CONFIGS)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()


def run_scenarios(args: argparse.Namespace) -> dict:
    """Each scenario in a fresh process (import order is decided once per process); slowdowns against c2f_first."""
    results: dict = {}
    for scenario in SCENARIOS:
        print(f"scenario {scenario}:", flush=True)
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            cmd = [sys.executable, __file__, "--scenario", scenario, "--threads", str(args.threads),
                   "--repeats", str(args.repeats), "--json", tmp.name]  # fmt: skip
            subprocess.run(cmd, check=True, env=os.environ)
            results[scenario] = json.loads(Path(tmp.name).read_text())["model"]
    base = {r["config"]: r for r in results["c2f_first"]}
    for scenario in SCENARIOS[1:]:
        for r in results[scenario]:
            q = base[r["config"]]
            ours = q["train_ours_ips"] / r["train_ours_ips"]
            theirs = q["train_torch_ips"] / r["train_torch_ips"]
            r["train_slowdown_ours"], r["train_slowdown_torch"] = ours, theirs
            print(f"  {scenario} {r['config']}: training step {ours:.2f}x its c2f_first time (PyTorch {theirs:.2f}x)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the results here (atomically)")
    parser.add_argument("--small", action="store_true", help="only the small-image models' rows")
    parser.add_argument("--profile", action="store_true", help="only the profiles: by stage and by function")
    scenarios_help = "only the N and micro rows, in three processes: c2f_numpy first, torch first, busy"
    parser.add_argument("--scenarios", action="store_true", help=scenarios_help)
    parser.add_argument("--scenario", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--busy", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.busy:
        _busy_loop(args.busy)
        return
    if args.child:
        kind, k, b, s = args.child
        _child(kind, int(k), int(b), int(s))
        return
    wanted = ALLOCATOR | {"C2F_NUM_THREADS": str(args.threads)}
    if any(os.environ.get(k) != v for k, v in wanted.items()):  # allocator settings only work from the start
        os.execve(sys.executable, [sys.executable, *sys.argv], os.environ | wanted)
    if args.scenario:
        _write_json(args.json, {"model": scenario_rows(args.scenario, args.threads, args.repeats)})
        return
    _print_machine()
    if args.scenarios:
        _write_json(args.json, {"machine": _machine(), "scenarios": run_scenarios(args)})
        return
    import torch

    import c2f_numpy
    from c2f_numpy.kernels import gemm  # noqa: F401  (loads SciPy's BLAS, whose kernel family is printed)
    from c2f_numpy.kernels.pool import threading_info

    torch.set_num_threads(args.threads)
    blas = ", ".join(f"{Path(str(b['filepath'])).name} {b['architecture']}" for b in threading_info()["blas"])  # type: ignore[attr-defined]
    print(f"threads: {args.threads}, torch {torch.__version__}, c2f_numpy {c2f_numpy.__version__}, Numba layer "
          f"{_threading_layer()}, BLAS: {blas}", flush=True)  # fmt: skip
    if args.profile:
        _write_json(args.json, {"machine": _machine(), "profile": [profile(*config) for config in PROFILES]})
        return
    if args.small:
        rows = model_rows(args.quick, 7, small_only=True)
        sgemm = sgemm_rate(args.repeats)
        _write_json(args.json, {"machine": _machine(), "model": rows, "sgemm": sgemm,
                                "gemm_floor": gemm_floor(rows, sgemm["ours_gflops"])})  # fmt: skip
        return
    results: dict[str, Any] = {"machine": _machine(), "depthwise": depthwise_rows(args.quick, args.repeats),
               "model": model_rows(args.quick, 5)}  # fmt: skip
    if not args.quick:
        results["scenarios"] = run_scenarios(args)
    results["sgemm"] = sgemm_rate(args.repeats)
    results["gemm_floor"] = gemm_floor(results["model"], results["sgemm"]["ours_gflops"])
    results["peak_memory_mb"] = peak_memory()
    results["jit"] = jit_startup()
    results["profile"] = [profile(*config) for config in PROFILES]
    _write_json(args.json, results)


def _machine() -> dict:
    """lscpu's model and flags (every benchmark result records them), the load and the steal time at the start, and
    OPENBLAS_CORETYPE if the environment sets it (it overrides OpenBLAS's choice of kernels for the CPU)."""
    info: dict[str, Any] = {
        "model": "",
        "flags": "",
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),  # if set, it forces OpenBLAS's kernels
        "numba_threading_layer": _threading_layer(),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            info["model"] = value.strip()
        elif key.strip() == "Flags":
            info["flags"] = " ".join(f for f in value.split() if f.startswith(("avx", "fma", "amx")))
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()
    info["steal_fraction"] = int(cpu[8]) / max(1, sum(int(v) for v in cpu[1:]))
    return info


def _threading_layer() -> str | None:
    """The Numba layer the fast copy runs on (kernels/pool.py), if c2f_numpy's kernels are loaded here."""
    pool = sys.modules.get("c2f_numpy.kernels.pool")
    return None if pool is None else str(pool.threading_info()["numba_threading_layer_config"])


def _print_machine() -> None:
    m = _machine()
    forced = f", OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}" if m["OPENBLAS_CORETYPE"] else ""
    print(f"machine: {m['model']} ({m['flags']}), load {' '.join(m['loadavg'])}, steal {m['steal_fraction']:.1%}"
          f"{forced}")  # fmt: skip


if __name__ == "__main__":
    main()
