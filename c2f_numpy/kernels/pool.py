"""One thread pool for the whole fast copy: Numba's ``workqueue`` threading layer, GEMMs included.

Why this arrangement (measured in docs/performance.md, "Threading"):

- Numba's default ``omp`` layer runs its kernels on whichever GNU OpenMP runtime the process loaded first. PyTorch
  ships its own ``libgomp``; with ``import torch`` before c2f_numpy, both libraries share that runtime and the
  Conv2Former-N training step went from ~0.35 s to ~1.9 s (inference 0.11 -> 0.94 s). The ``workqueue`` layer is
  Numba's own pthread pool: nothing another library loads can change it, so the speed no longer depends on
  import order.
- NumPy's OpenBLAS runs its own second pool of threads for every GEMM. On a busy machine the two pools wait for
  each other's descheduled threads; routing the fast copy's GEMMs through the Numba pool (:mod:`.gemm`, one
  single-threaded BLAS call per block of rows) leaves one pool, so one set of threads to share the cores.

The user's own choice wins: ``NUMBA_THREADING_LAYER`` in the environment (or ``_config.THREADING_LAYER`` set
before the first parallel kernel ran) is kept. ``C2F_NUM_THREADS`` sets the pool's size (c2f_numpy/__init__.py).

The ``workqueue`` layer is not thread-safe: two Python threads launching parallel kernels at once make Numba abort
the process. Every parallel kernel of the fast copy is therefore launched through :func:`parallel_kernel`, which
holds one process-wide lock for the kernel's duration (a kernel already uses every thread of the pool, so running
two at once would gain nothing).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numba
from numba import njit
from numba.np.ufunc import parallel as _numba_parallel

_config: Any = numba.config  # its attributes are set at import from the environment: untyped

PREFERRED_LAYER = "workqueue"

_LAUNCH_LOCK = threading.RLock()
_F = TypeVar("_F", bound=Callable[..., Any])


def _pool_started() -> bool:
    """True once Numba has launched its threading layer (after that its choice cannot change)."""
    return bool(getattr(_numba_parallel, "_is_initialized", False))


def select_threading_layer() -> str:
    """Choose Numba's threading layer for the fast copy unless the user (or an earlier kernel) already did.

    Returns the layer that will be used: the user's ``NUMBA_THREADING_LAYER`` if set, the running layer if Numba's
    pool has already started, else :data:`PREFERRED_LAYER`.
    """
    if _pool_started():
        return str(numba.threading_layer())
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return str(_config.THREADING_LAYER)
    if _config.THREADING_LAYER == "default":  # not set by the user in code either
        _config.THREADING_LAYER = PREFERRED_LAYER
    return str(_config.THREADING_LAYER)


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
