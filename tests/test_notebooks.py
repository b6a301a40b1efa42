"""The teaching notebooks (notebooks/*.ipynb) run top to bottom in their small settings, and are stored clean.

Each notebook is executed with nbclient in a fresh kernel of this interpreter, from notebooks/ as the working
directory, with C2F_NOTEBOOK_SMALL=1 (the notebooks' small-settings switch) and the Agg matplotlib backend.
A cell that raises fails the test with that cell's error. CI leaves these out (``-m "not notebook"``): its docs
build executes every notebook the same way (mkdocs-jupyter, ``allow_errors: false``, the small settings), and
running them twice cost about 80 s. nbclient, nbformat and ipykernel come with the
``test`` extra: without them the execution tests skip, except under CI (``CI`` set) or with
C2F_REQUIRE_NOTEBOOKS=1, where a missing package is an error.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell
KERNEL_NAME = "python3"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # colours in IPython tracebacks


def _require(name: str) -> ModuleType:
    if os.environ.get("C2F_REQUIRE_NOTEBOOKS") == "1" or os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name)


def test_the_notebooks_are_there() -> None:
    names = [p.name for p in NOTEBOOKS]
    expected = ["01_ops.ipynb", "02_convmod.ipynb", "03_network.ipynb", "04_kernel_size.ipynb", "05_training.ipynb"]
    assert names[: len(expected)] == expected, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [
        f"cell {i} ({cell.get('id', '?')})"
        for i, cell in enumerate(nb["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: clear the outputs before saving; stored outputs in {', '.join(dirty)}"


@pytest.fixture
def this_interpreter_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec named python3 that runs this interpreter, found first (JUPYTER_PATH precedes the rest)."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python 3 ({sys.executable})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's platformdirs migration, without a warning
    return KERNEL_NAME


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, this_interpreter_kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = _require("nbformat")
    nbclient = _require("nbclient")
    _require("ipykernel")
    # The kernel inherits this environment: the small settings, a non-interactive matplotlib backend.
    monkeypatch.setenv("C2F_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=this_interpreter_kernel,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    error = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:  # the failing cell's source, output and traceback
        error = ANSI_ESCAPE.sub("", str(err))
    if error is not None:
        pytest.fail(f"{path.name}: a cell raised\n{error}", pytrace=False)
