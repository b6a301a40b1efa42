"""retain_freed_memory: a step's freed buffers are reused by the next step instead of being page-faulted in again.

Each measurement runs in a fresh child process: the setting is process-wide (c2f-train's main, which other tests
call in-process, applies it to the test session too), so only a new process has glibc's defaults to compare with.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import resource, sys
import numpy as np
from c2f_numpy.kernels.allocator import retain_freed_memory

def faults_of_a_step():  # a "step": eight tensors of MB megabytes alive at once, touched, then all freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [np.ones(int(sys.argv[2]) << 18, dtype=np.float32) for _ in range(8)]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del tensors
    return after - before

if sys.argv[1] == "retain":
    assert retain_freed_memory()
faults_of_a_step()  # the first step always faults its memory in
print(min(faults_of_a_step() for _ in range(3)))
"""


def _faults(mode: str, megabytes: int) -> int:
    args = [sys.executable, "-c", CHILD, mode, str(megabytes)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings; Linux only")
@pytest.mark.parametrize("megabytes", [16, 64])
def test_freed_buffers_are_reused_instead_of_faulted_in_again(megabytes: int) -> None:
    default, retained = _faults("default", megabytes), _faults("retain", megabytes)
    # glibc by default gives the freed top of the heap back to the OS (its trim threshold follows the mmap
    # threshold, 2 x 16 MB for 16 MB tensors), so every step faults at least one tensor in again; tensors above
    # the largest mmap threshold (32 MB) are mapped afresh every time unless M_MMAP_MAX is 0. A fault maps a
    # 4 kB page or, where NumPy asked for transparent huge pages (large arrays on Linux), 2 MB: counts, not sizes.
    assert default >= 8, f"the default allocator should fault every tensor of the step in ({default} faults)"
    assert retained * 20 <= default, f"with retain_freed_memory the buffers should be reused ({retained} faults)"
