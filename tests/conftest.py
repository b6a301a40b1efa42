"""Shared test configuration: hypothesis profiles and a record of the largest differences against PyTorch.

Tolerances are not set here: they live in one place, :mod:`c2f_numpy.testing`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

# CI runs a fixed (derandomized) set of examples so a green run is reproducible; locally each run explores new
# examples. C2F_HYPOTHESIS_EXAMPLES overrides the count either way.
_examples = int(os.environ.get("C2F_HYPOTHESIS_EXAMPLES", "0")) or None
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=_examples or 40,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", deadline=None, max_examples=_examples or 40, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# Under pytest-xdist (-n 2: one worker per core) each worker computes on one thread, or the two workers' thread
# pools would fight over the cores (measured: the fast tier took as long on two workers as on one process). The
# Numba pool keeps its full size: the kernel and model tests use all of it (the fixture below), and the
# thread-count tests compare one thread with the pool's size.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    import numba

    import c2f_numpy.kernels  # noqa: F401  (chooses the threading layer before the pool starts)

    numba.set_num_threads(1)


@pytest.fixture(autouse=True)
def _whole_pool_for_the_kernels(request: pytest.FixtureRequest) -> Iterator[None]:
    """The kernel and whole-network tests run on the pool's full size even under xdist: their multi-threaded
    paths (the split of every prange, the GEMM blocks) are what they check, beside the values."""
    parts = request.node.path.relative_to(request.config.rootpath).parts[:2]  # ("tests", "kernels"), ...
    if not os.environ.get("PYTEST_XDIST_WORKER") or not ("kernels" in parts or "models" in parts):
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    try:
        yield
    finally:
        numba.set_num_threads(before)


class TorchDiffRecord:
    """Largest scaled difference against PyTorch per dtype, printed at the end of the run."""

    def __init__(self) -> None:
        self.worst: dict[str, tuple[float, str]] = {}

    def add(self, dtype: str, scaled: float, where: str) -> None:
        if scaled >= self.worst.get(dtype, (-1.0, ""))[0]:
            self.worst[dtype] = (scaled, where)


TORCH_DIFFS = TorchDiffRecord()


# With pytest-xdist (``-n 2``) the tests run in worker processes: each sends its record to the controller when it
# finishes, and the controller prints the merged record.
def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # this process is an xdist worker
        workeroutput["torch_diffs"] = TORCH_DIFFS.worst


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:  # an xdist hook: called in the controller
    for dtype, (scaled, where) in getattr(node, "workeroutput", {}).get("torch_diffs", {}).items():
        TORCH_DIFFS.add(dtype, scaled, where)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TORCH_DIFFS.worst:
        terminalreporter.section("largest differences against PyTorch (scaled max error)")
        for dtype, (scaled, where) in sorted(TORCH_DIFFS.worst.items()):
            terminalreporter.write_line(f"{dtype}: {scaled:.3e}  ({where})")
