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
import types
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


def _serial_twin(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The same function under the name ``<name>_serial``. Numba names a function's cache files after its qualified
    name and leaves the compile options out of their key (numba issue #6845), so the serial and the parallel
    compilation of one function would overwrite each other's cache entries under one name."""
    twin = types.FunctionType(fn.__code__, fn.__globals__, f"{fn.__name__}_serial", fn.__defaults__, fn.__closure__)
    twin.__qualname__ = f"{fn.__qualname__}_serial"
    twin.__module__, twin.__doc__ = fn.__module__, fn.__doc__
    return twin


def parallel_kernel(**options: Any) -> Callable[[_F], _F]:
    """``numba.njit(parallel=True, cache=True, **options)`` whose launches hold the process-wide launch lock.

    With one thread (``numba.get_num_threads() == 1``, as in each process of ``c2f-train --workers 2``) the call
    goes to a serial compilation of the same function instead (``prange`` is ``range`` there): a parallel launch
    hands its work to the pool's thread and waits for it even when that thread is the only one, tens of
    microseconds per launch, and a small-image training step makes hundreds. The kernels are written so that
    their results do not depend on how the iterations are split, so both compilations give the same values
    (tests/kernels/test_threading.py compares whole steps at 1 and 2 threads).

    The jitted dispatchers stay reachable as ``.kernel`` and ``.serial`` (for their signatures, or to call one
    from other jitted code, where no lock is needed: a parallel kernel never calls another one).
    """

    def wrap(fn: _F) -> _F:
        kernel = njit(parallel=True, cache=True, **options)(fn)
        serial = njit(cache=True, **options)(_serial_twin(fn))  # compiled on first use: only where one thread runs

        @functools.wraps(fn)
        def launch(*args: Any) -> Any:
            if numba.get_num_threads() == 1:
                return serial(*args)
            with _LAUNCH_LOCK:
                return kernel(*args)

        launch.kernel = kernel  # type: ignore[attr-defined]
        launch.serial = serial  # type: ignore[attr-defined]
        return launch  # type: ignore[return-value]

    return wrap


def threading_info() -> dict[str, object]:
    """What the fast copy runs on: Numba's layer (chosen, and running if started), its thread count, and the
    BLAS libraries with their thread counts (threadpoolctl's view)."""
    from threadpoolctl import threadpool_info

    return {
        "numba_threading_layer": numba.threading_layer() if _pool_started() else None,
        "numba_threading_layer_config": str(_config.THREADING_LAYER),
        "numba_num_threads": numba.get_num_threads(),
        "blas": [
            {"filepath": d.get("filepath"), "num_threads": d.get("num_threads"), "api": d.get("internal_api")}
            for d in threadpool_info()
            if d.get("user_api") == "blas"
        ],
    }
