"""The fast copy's threading arrangement (c2f_numpy/kernels/pool.py, gemm.py): which pool runs, in any import
order; GEMMs on that pool, bitwise the same at any thread count; safe from several Python threads.

These are structural checks, not timings: the speed they protect is measured by benchmarks/bench.py.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

from c2f_numpy.kernels import blas, gemm, nhwc, pool
from c2f_numpy.testing import assert_close

ROOT = Path(__file__).resolve().parents[2]

_REPORT = """
import json, numpy as np
{before}
import c2f_numpy
from c2f_numpy.kernels import pool
c2f_numpy.create_model("micro", num_classes=3, in_chans=1)(np.zeros((2, 1, 28, 28), np.float32))
print(json.dumps(pool.threading_info()))
"""


def _threading_in_child(before: str, env: dict[str, str] | None = None) -> dict:
    """threading_info() of a fresh process that runs ``before``, then imports c2f_numpy and runs a forward."""
    child_env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"} | (env or {})
    child_env["PYTHONPATH"] = str(ROOT) + os.pathsep + child_env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", _REPORT.format(before=before)], env=child_env,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("before", ["", "import torch; torch.ones(4).sum()"], ids=["c2f_first", "torch_first"])
def test_the_chosen_pool_runs_in_any_import_order(before: str) -> None:
    """torch ships its own OpenMP runtime; the fast copy's layer must be the one in use whichever came first, with
    the kernels' BLAS (kernels/blas.py, the one the pool's GEMM blocks call) held at one thread."""
    info = _threading_in_child(before)
    assert info["numba_threading_layer"] == pool.preferred_layer()
    ours = [b for b in info["blas"] if Path(b["filepath"]).parent.parent.name == "scipy_openblas32"]
    assert len(ours) == 1 and ours[0]["num_threads"] == 1, info["blas"]


def _tbb_wheel_installed() -> bool:
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(not _tbb_wheel_installed(), reason="the tbb wheel is a dependency only on Linux x86-64")
def test_the_tbb_wheel_gives_the_tbb_layer() -> None:
    """Where pip installed the tbb wheel (a dependency on Linux x86-64), its runtime is found although it lies
    outside the loader's path, and the fast copy runs on it."""
    assert pool.preferred_layer() == "tbb"
    assert _threading_in_child("")["numba_threading_layer"] == "tbb"


@pytest.mark.skipif(not _tbb_wheel_installed(), reason="the tbb wheel is a dependency only on Linux x86-64")
def test_the_users_tbb_choice_finds_the_wheel() -> None:
    """NUMBA_THREADING_LAYER=tbb set by the user: the wheel's runtime is loaded for it too (Numba alone would not
    find it and would fail at the first kernel)."""
    assert _threading_in_child("", {"NUMBA_THREADING_LAYER": "tbb"})["numba_threading_layer"] == "tbb"


_NO_TBB = """
import importlib.abc, importlib.metadata, sys
class NoTbb(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "numba.np.ufunc.tbbpool":
            raise ImportError("tbb hidden by the test")
sys.meta_path.insert(0, NoTbb())
"""


def test_without_tbb_the_workqueue_layer_runs() -> None:
    """Where TBB cannot load (no wheel for the platform, too old a runtime), the fallback is Numba's own layer."""
    assert _threading_in_child(_NO_TBB)["numba_threading_layer"] == "workqueue"


def test_the_users_threading_layer_wins() -> None:
    info = _threading_in_child("", {"NUMBA_THREADING_LAYER": "omp"})
    assert info["numba_threading_layer"] == "omp"


def test_this_process_runs_the_chosen_layer() -> None:
    """The test suite itself imports torch before c2f_numpy (conftest, the torch cross-checks)."""
    nhwc.gelu_forward(np.ones((2, 2, 2, 4), np.float32))
    expected = os.environ.get("NUMBA_THREADING_LAYER") or pool.preferred_layer()
    assert numba.threading_layer() == expected


def test_the_fast_copy_multiplies_matrices_only_through_the_pool() -> None:
    """No ``@``, np.matmul or np.dot in kernels/nhwc.py: a GEMM there would start NumPy's own BLAS threads."""
    tree = ast.parse((ROOT / "c2f_numpy" / "kernels" / "nhwc.py").read_text())
    offenders = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.BinOp | ast.AugAssign)
                 and isinstance(node.op, ast.MatMult)]  # fmt: skip
    offenders += [node.lineno for node in ast.walk(tree)
                  if isinstance(node, ast.Attribute) and node.attr in {"matmul", "dot", "einsum", "tensordot"}
                  and isinstance(node.value, ast.Name) and node.value.id == "np"]  # fmt: skip
    assert not offenders, f"kernels/nhwc.py lines {offenders}: use kernels.gemm"


GEMM_SHAPES = [(0, 3, 4), (1, 1, 1), (255, 7, 5), (257, 16, 64), (9000, 33, 17), (3000, 130, 20), (70, 200, 96)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("m", "k", "n"), GEMM_SHAPES)
def test_gemm_matches_numpy(m: int, k: int, n: int, dtype: type) -> None:
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    d = rng.standard_normal((m, n)).astype(dtype)
    assert_close(f"matmul {m}x{k}x{n}", gemm.matmul(a, b), a @ b)
    assert_close("matmul, F-ordered b", gemm.matmul(a, np.asfortranarray(b)), a @ b)
    assert_close("matmul, strided b", gemm.matmul(a, b[:, ::-1]), a @ b[:, ::-1])
    out = np.full((m, n), np.nan, dtype)
    assert gemm.matmul(a, b, out=out) is out
    assert_close("matmul into out", out, a @ b)
    assert_close(f"matmul_tn {m}x{k}x{n}", gemm.matmul_tn(a, d), a.T @ d)


def test_gemm_refuses_operands_that_do_not_chain() -> None:
    a = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="matmul: a"):
        gemm.matmul(a, np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="matmul: a"):
        gemm.matmul(a, np.ones((3, 2), np.float64))
    with pytest.raises(ValueError, match="out must be"):
        gemm.matmul(a, np.ones((3, 2), np.float32), out=np.empty((4, 3), np.float32))
    with pytest.raises(ValueError, match="matmul_tn"):
        gemm.matmul_tn(a, np.ones((5, 2), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("m", "k", "n"), [(5, 3, 4), (0, 3, 4), (5, 0, 4), (64, 32, 128), (3, 130, 1)])
def test_the_kernels_blas_call_reads_both_layouts(m: int, k: int, n: int, dtype: type) -> None:
    """blas.gemm (the one GEMM inside the kernels): every combination of C-ordered and transposed-view
    operands, an empty product, K = 0 (zeros, not what was in out)."""
    rng = np.random.default_rng(m * k + n)
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    for a_view in (a, np.ascontiguousarray(a.T).T):
        for b_view in (b, np.ascontiguousarray(b.T).T):
            out = np.full((m, n), np.nan, dtype)
            blas.gemm_py(a_view, b_view, out)
            assert_close(f"blas.gemm {m}x{k}x{n} {a_view.flags.f_contiguous} {b_view.flags.f_contiguous}", out, a @ b)


def test_the_kernels_blas_call_refuses_shapes_that_do_not_chain() -> None:
    with pytest.raises(ValueError, match=r"blas\.gemm: the shapes"):
        blas.gemm_py(np.ones((3, 2), np.float32), np.ones((3, 2), np.float32), np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"blas\.gemm: the shapes"):
        blas.gemm_py(np.ones((3, 2), np.float32), np.ones((2, 4), np.float32), np.ones((3, 5), np.float32))


POOL = numba.config.NUMBA_NUM_THREADS  # the pool's size (the default launch width may be lower: conftest.py)


def test_kernel_tests_run_on_the_whole_pool() -> None:
    """Under xdist the workers default to one thread (conftest.py); the kernel tests get the whole pool back."""
    assert numba.get_num_threads() == POOL


def _at_threads(threads: int, fn):
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(threads)
        return fn()
    finally:
        numba.set_num_threads(before)


def test_gemm_results_do_not_depend_on_the_thread_count() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((70_001, 24)).astype(np.float32)
    b = rng.standard_normal((24, 40)).astype(np.float32)
    d = rng.standard_normal((70_001, 40)).astype(np.float32)
    wide = rng.standard_normal((5_001, 160)).astype(np.float32)  # matmul_tn with a wide output (K = 160)
    dw = rng.standard_normal((5_001, 40)).astype(np.float32)

    def products() -> tuple[np.ndarray, ...]:
        return gemm.matmul(a, b), gemm.matmul_tn(a, d), gemm.matmul_tn(wide, dw), gemm.matmul(d[:300], b.T.copy())

    many = _at_threads(POOL, products)
    one = _at_threads(1, products)
    assert all(np.array_equal(x, y) for x, y in zip(many, one, strict=True))


def test_a_training_step_does_not_depend_on_the_thread_count() -> None:
    """Every gradient of a whole micro step, bitwise, at 1 thread and at the pool's size."""
    import c2f_numpy as c2f
    from c2f_numpy.testing import randomize_for_parity

    model = c2f.create_model("micro", num_classes=10, in_chans=1)
    randomize_for_parity(model)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 1, 28, 28)).astype(np.float32)
    dlogits = rng.standard_normal((6, 10)).astype(np.float32)

    def grads() -> dict[str, np.ndarray]:
        model.train()
        model.zero_grad()
        model(x)
        model.backward(dlogits)
        return {k: v.copy() for k, v in model.grads().items()}

    many, one = _at_threads(POOL, grads), _at_threads(1, grads)
    assert many.keys() == one.keys()
    assert [k for k in many if not np.array_equal(many[k], one[k])] == []


@pytest.mark.parametrize("layer", ["", "workqueue"], ids=["chosen", "workqueue"])
def test_kernels_can_be_called_from_several_python_threads(layer: str) -> None:
    """The workqueue layer aborts the process on concurrent launches; the launch lock serialises them (whichever
    layer runs: the test runs on the chosen one and on workqueue)."""
    script = """
import threading, numpy as np
from c2f_numpy.kernels import nhwc
x = np.random.default_rng(0).standard_normal((8, 14, 14, 32)).astype(np.float32)
w = np.ones((64, 32, 1, 1), np.float32)
errors = []
def work():
    try:
        for _ in range(200):
            nhwc.conv1x1_gelu_forward(x, w)
    except Exception as e:
        errors.append(e)
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print("ok" if not errors else errors)
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"} | {"PYTHONPATH": str(ROOT)}
    env |= {"NUMBA_THREADING_LAYER": layer} if layer else {}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600,
                          check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])
