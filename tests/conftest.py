"""Shared test configuration: hypothesis profiles and a record of the largest differences against PyTorch.

Tolerances are not set here: they live in one place, :mod:`c2f_numpy.testing`.
"""

from __future__ import annotations

import os

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


class TorchDiffRecord:
    """Largest scaled difference against PyTorch per dtype, printed at the end of the run."""

    def __init__(self) -> None:
        self.worst: dict[str, tuple[float, str]] = {}

    def add(self, dtype: str, scaled: float, where: str) -> None:
        if scaled >= self.worst.get(dtype, (-1.0, ""))[0]:
            self.worst[dtype] = (scaled, where)


TORCH_DIFFS = TorchDiffRecord()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TORCH_DIFFS.worst:
        terminalreporter.section("largest differences against PyTorch (scaled max error)")
        for dtype, (scaled, where) in sorted(TORCH_DIFFS.worst.items()):
            terminalreporter.write_line(f"{dtype}: {scaled:.3e}  ({where})")
