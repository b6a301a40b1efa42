"""One thread pool for the whole fast copy, GEMMs included: Numba's ``tbb`` threading layer where the ``tbb``
wheel is installed (a dependency on Linux x86-64), else Numba's own ``workqueue`` layer.

Why this arrangement (measured in docs/performance.md, "Threading"):

- A launch must be cheap. A training step launches 350-630 parallel kernels, most of them 0.1-1 ms long. TBB's
  workers wait for work spinning for a moment before they sleep, and the launching thread takes a share of the
  work: an empty kernel costs ~1.3 us. ``workqueue`` wakes sleeping workers through condition variables and the
  launching thread only waits: ~70 us per launch on these machines, and the second worker often starts late, so
  two threads ran a 0.3 ms kernel no faster than one. The micro training step went from 226 to 157-175 ms with
  TBB, the Conv2Former-N 32x32 step from 233 to 162 ms.
- It must not depend on what else the process loads. Numba's default ``omp`` layer runs on whichever GNU OpenMP
  runtime is loaded, and needs the system's ``libgomp``; TBB and ``workqueue`` are Numba's or pip's own.
- NumPy's OpenBLAS runs its own pool of threads for every GEMM. On a busy machine the two pools wait for each
  other's descheduled threads; routing the fast copy's GEMMs through this pool (:mod:`.gemm`, one
  single-threaded BLAS call per block of rows) leaves one pool.

The price of TBB's spinning: beside another CPU-bound process, a two-thread process loses more than with
``workqueue`` (the micro step 3.1x its quiet time against 1.1x; N 2.5x against 1.5x). ``c2f-train`` runs one
thread per process by default (``--workers 2``), where spinning costs nothing: there TBB is faster in both cases.
On a shared machine, ``NUMBA_THREADING_LAYER=workqueue`` picks the other trade.

The pip wheel puts ``libtbb.so.12`` in the environment's ``lib`` directory, where the dynamic loader does not
look; :func:`_tbb_usable` loads it from there (once, process-wide) so that Numba's TBB layer finds it.

The user's own choice wins: ``NUMBA_THREADING_LAYER`` in the environment (or ``_config.THREADING_LAYER`` set
before the first parallel kernel ran) is kept. ``C2F_NUM_THREADS`` sets the pool's size (c2f_numpy/__init__.py).

The ``workqueue`` layer is not thread-safe: two Python threads launching parallel kernels at once make Numba abort
the process. Every parallel kernel of the fast copy is therefore launched through :func:`parallel_kernel`, which
holds one process-wide lock for the kernel's duration (a kernel already uses every thread of the pool, so running
two at once would gain nothing), whichever layer runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import importlib.metadata
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numba
from numba import njit
from numba.np.ufunc import parallel as _numba_parallel

_config: Any = numba.config  # its attributes are set at import from the environment: untyped

TBB_LIBRARY = "libtbb.so.12"  # the oneTBB 2021+ runtime Numba's tbbpool links against (Linux)

_LAUNCH_LOCK = threading.RLock()
_F = TypeVar("_F", bound=Callable[..., Any])


def _pool_started() -> bool:
    """True once Numba has launched its threading layer (after that its choice cannot change)."""
    return bool(getattr(_numba_parallel, "_is_initialized", False))


def _load_wheel_tbb() -> None:
    """Load the ``tbb`` wheel's runtime globally, so that Numba's extension resolves ``libtbb.so.12`` to it."""
    try:
        dist = importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return
    for f in dist.files or []:
        if f.name == TBB_LIBRARY:
            with contextlib.suppress(OSError):  # a broken install: then TBB is simply not usable
                ctypes.CDLL(str(dist.locate_file(f)), mode=ctypes.RTLD_GLOBAL)
            return


@functools.cache
def _tbb_usable() -> bool:
    """True if Numba's TBB layer can load here: its extension imports and the runtime is oneTBB 2021.6 or later
    (Numba's own test). On Linux the pip wheel's runtime is loaded first. Nothing is started."""
    if sys.platform.startswith("linux"):
        _load_wheel_tbb()
    check = getattr(_numba_parallel, "_check_tbb_version_compatible", None)
    try:
        if check is not None:
            with warnings.catch_warnings():  # too old a TBB means "use workqueue", not a warning
                warnings.simplefilter("ignore")
                check()
        importlib.import_module("numba.np.ufunc.tbbpool")
    except ImportError:
        return False
    return True


def select_threading_layer() -> str:
    """Choose Numba's threading layer for the fast copy unless the user (or an earlier kernel) already did.

    Returns the layer that will be used: the user's ``NUMBA_THREADING_LAYER`` if set, the running layer if Numba's
    pool has already started, else :func:`preferred_layer`.
    """
    if _pool_started():
        return str(numba.threading_layer())
    if os.environ.get("NUMBA_THREADING_LAYER") or _config.THREADING_LAYER != "default":
        if str(_config.THREADING_LAYER).startswith("tbb"):  # the user's tbb may be the wheel's: let Numba find it
            _tbb_usable()
        return str(_config.THREADING_LAYER)
    _config.THREADING_LAYER = preferred_layer()
    return str(_config.THREADING_LAYER)


def preferred_layer() -> str:
    """The layer :func:`select_threading_layer` picks when nobody chose one: ``tbb`` where it loads, else
    ``workqueue`` (part of Numba: it always loads)."""
    return "tbb" if _tbb_usable() else "workqueue"


def parallel_kernel(**options: Any) -> Callable[[_F], _F]:
    """``numba.njit(parallel=True, cache=True, **options)`` whose launches hold the process-wide launch lock.

    The jitted dispatcher stays reachable as ``.kernel`` (for its signatures, or to call it from other jitted
    code, where no lock is needed: a parallel kernel never calls another one).
    """

    def wrap(fn: _F) -> _F:
        kernel = njit(parallel=True, cache=True, **options)(fn)

        @functools.wraps(fn)
        def launch(*args: Any) -> Any:
            with _LAUNCH_LOCK:
                return kernel(*args)

        launch.kernel = kernel  # type: ignore[attr-defined]
        return launch  # type: ignore[return-value]

    return wrap


def threading_info() -> dict[str, object]:
    """What the fast copy runs on: Numba's layer (chosen, and running if started), its thread count, and the
    BLAS libraries with their thread counts and kernel families (threadpoolctl's view)."""
    from threadpoolctl import threadpool_info

    return {
        "numba_threading_layer": numba.threading_layer() if _pool_started() else None,
        "numba_threading_layer_config": str(_config.THREADING_LAYER),
        "numba_num_threads": numba.get_num_threads(),
        "blas": [
            {
                "filepath": d.get("filepath"),
                "num_threads": d.get("num_threads"),
                "api": d.get("internal_api"),
                "architecture": d.get("architecture"),
            }
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        ],
    }
