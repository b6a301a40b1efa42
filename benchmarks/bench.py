"""c2f_numpy (Numba kernels) against PyTorch CPU, interleaved in one process: medians and ratios.

    python benchmarks/bench.py              # everything (about 15 minutes on 2 cores)
    python benchmarks/bench.py --quick      # the headline rows only
    python benchmarks/bench.py --scenarios  # N and micro: c2f_numpy first, torch first, beside a busy process

It compares against the PyTorch replica of the official model, c2f_numpy/torch_reference.py. For stable timings it
re-executes itself with the allocator settings of docs/performance.md. Both libraries get the same thread
count (--threads, default: all cores). Rows: depthwise convolution forward and backward on the shapes
Conv2Former-N runs; the N training step (forward + backward + AdamW) and inference; peak memory of a training
step, each library in its own process; Numba start-up (cold compile, warm cache); where our step's time goes.
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
        rows.append({"config": label, "train_ours_ips": batch / so,
                     "train_torch_ips": batch / st, "train_ratio": st / so, "infer_ours_ips": batch / io,
                     "infer_torch_ips": batch / it, "infer_ratio": it / io})  # fmt: skip
        r = rows[-1]
        print(f"  {r['config']}: train {r['train_ours_ips']:.1f} vs {r['train_torch_ips']:.1f} img/s "
              f"({r['train_ratio']:.2f}x), inference {r['infer_ours_ips']:.1f} vs {r['infer_torch_ips']:.1f} img/s "
              f"({r['infer_ratio']:.2f}x)", flush=True)  # fmt: skip
    return rows


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


def profile_step(k: int = 11) -> list[tuple[str, float]]:
    our_step, _ = our_model(k, 64, 32)
    our_step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        our_step()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    rows = sorted(((f"{Path(fn).parent.name}/{Path(fn).name}:{name}", v[2] / 3) for (fn, _, name), v in stats.items()),
                  key=lambda r: -r[1])[:12]  # fmt: skip
    print(f"  our training step by function (self time, per step; total {total / 3 * 1e3:.0f} ms):")
    for name, t in rows:
        print(f"    {t * 1e3:7.1f} ms  {name}")
    return rows


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

    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads}, torch {torch.__version__}, c2f_numpy {c2f_numpy.__version__}", flush=True)
    if args.small:
        _write_json(args.json, {"machine": _machine(), "model": model_rows(args.quick, 7, small_only=True)})
        return
    results = {"machine": _machine(), "depthwise": depthwise_rows(args.quick, args.repeats),
               "model": model_rows(args.quick, 5)}  # fmt: skip
    if not args.quick:
        results["scenarios"] = run_scenarios(args)
    results["peak_memory_mb"] = peak_memory()
    results["jit"] = jit_startup()
    results["profile"] = profile_step()
    _write_json(args.json, results)


def _machine() -> dict:
    """lscpu's model and flags (every benchmark result records them), the load and the steal time at the start."""
    info = {"model": "", "flags": "", "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
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


def _print_machine() -> None:
    m = _machine()
    print(f"machine: {m['model']} ({m['flags']}), load {' '.join(m['loadavg'])}, steal {m['steal_fraction']:.1%}")


if __name__ == "__main__":
    main()
