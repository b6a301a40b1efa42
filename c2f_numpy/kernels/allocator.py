"""Keep freed activation buffers in the process for the next step (glibc's malloc settings).

A training step allocates the same tensors every time: activations, caches, gradients, a few MB to tens of MB
each. glibc serves blocks above its mmap threshold (128 kB at start, raised on the fly up to 32 MB) with fresh
``mmap`` calls and returns them on ``free``, so the next step's identical tensor is page-faulted in and zeroed by
the kernel again, page by page, on whichever thread first touches it. :func:`retain_freed_memory` raises the mmap
threshold to its maximum, stops glibc from using ``mmap`` for blocks above even that (``M_MMAP_MAX`` = 0) and
stops the heap from being trimmed: freed blocks then stay in the heap and the next step's allocations reuse them,
the same buffers step after step, without the ops having to manage any (their functional forward/backward pairs
keep returning fresh arrays, so nothing a caller holds is ever overwritten). The price is that the process keeps
its peak heap until it exits, which a training run reaches anyway.

Blocks above 32 MB matter: at batch 500 of 28x28 images, ``micro``'s 14x14x128 MLP activations are 50 MB. The
mmap threshold cannot go above 32 MB, so without ``M_MMAP_MAX`` = 0 glibc would map each of them afresh on every
allocation and the kernel would fault it in again, up to 2 MB a fault (NumPy asks for transparent huge pages for
large arrays). ``C2F_NUM_THREADS=1 python benchmarks/steptime.py --batch 500 [--retain-freed-memory]`` shows the
difference in time and page faults; docs/performance.md ("Blocks above 32 MB") has the measurement.

The same settings, as environment variables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_MMAP_MAX_``,
``MALLOC_TRIM_THRESHOLD_``), are what ``benchmarks/bench.py`` runs both libraries with (docs/performance.md,
"How the benchmarks run"); ``c2f-train`` calls this function at start. It changes a process-wide
setting, so the library never calls it on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes a C int: 4 GB (the environment variable's value) would wrap to 0


def retain_freed_memory() -> bool:
    """Make glibc serve every block from the heap and keep freed ones there for reuse; True if the settings
    took effect.

    False (and nothing changed) where the C library is not glibc (macOS, musl) or refuses the values.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; all must succeed for the reuse to happen
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    return all(bool(mallopt(param, value)) for param, value in settings)
