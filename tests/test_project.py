"""The README's promises: its commands are what CI runs, its training command works, and the demo works."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from c2f_numpy import demo
from c2f_numpy.train.cli import build_parser
from c2f_numpy.train.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    commands = readme_commands()
    assert len(commands) >= 2
    setup_and_train, setup_and_test = commands[0], commands[1]
    assert "pip install -e ." in setup_and_train and ".venv/bin/c2f-train " in setup_and_train
    assert "'.[test,docs]'" in setup_and_test and "/pytest " in setup_and_test and "--cov=c2f_numpy" in setup_and_test
    assert setup_and_test.endswith("mkdocs build --strict")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_and_test in ci, ".ci/run must run the README's test command verbatim"


def test_demo_runs_and_every_gradient_checks(capsys) -> None:  # type: ignore[no-untyped-def]
    assert demo.main(["--kernel", "7", "--size", "9", "--channels", "6"]) == 0
    out = capsys.readouterr().out
    assert "21/21 gradients OK" in out and "NOT OK" not in out


def test_the_size_table_command(capsys) -> None:  # type: ignore[no-untyped-def]
    from c2f_numpy.models.__main__ import main

    main([])
    out = capsys.readouterr().out
    assert "| conv2former_n | 7 | 14.99M | 2.33G | 14.99M / 2.33G |" in out
    assert "| conv2former_l | 11 | 198.89M | 36.04G | 198.89M / 36.04G |" in out


def readme_train_args() -> list[str]:
    return shlex.split(readme_commands()[0].split(".venv/bin/c2f-train ", 1)[1])


def console_scripts() -> dict[str, str]:
    import tomllib

    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


@pytest.mark.parametrize("script", sorted(console_scripts()))
def test_every_command_prints_its_help(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` is the first thing a newcomer runs (argparse %-formats every help string it prints)."""
    import importlib

    module, func = console_scripts()[script].split(":")
    try:
        code = getattr(importlib.import_module(module), func)(["--help"])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 0
    assert capsys.readouterr().out.startswith(f"usage: {script}")


def test_readme_training_command_parses() -> None:
    args = build_parser().parse_args(readme_train_args())
    assert args.dataset == "fashion_mnist" and args.model == "micro"


@pytest.mark.realdata
def test_readme_training_command_runs_on_a_slice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's command on real Fashion-MNIST, cut to 512 training and 500 test images."""
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        msg = "real Fashion-MNIST absent: apt-get install -y dataset-fashion-mnist"
        pytest.fail(msg) if os.environ.get("CI") else pytest.skip(msg)  # .ci/run installs it
    args = [a for a in readme_train_args()]
    args[args.index("--out") + 1] = str(tmp_path / "quick")
    assert train_main([*args, "--train-subset", "512", "--test-subset", "500", "--no-progress"]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "epoch 1/1: train loss" in out and "done. test accuracy" in out and "best validation accuracy" in out


def tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / f for f in out.splitlines() if not f.startswith("benchmarks/results/") and (ROOT / f).is_file()]


def test_no_project_file_points_outside_the_repository() -> None:
    """A user's clone has only the repository: nothing may send a reader to a sibling folder."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no file list to read")
    outside = re.compile(r"\.\./shared\b|shared/notes|/work/")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in tracked_text_files()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if outside.search(line) and path.name != "test_project.py"
    ]
    assert offenders == []


def test_license_is_the_mit_text_pyproject_declares() -> None:
    license_text = (ROOT / "LICENSE").read_text()
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    assert license_text.startswith("MIT License\n") and "the c2f_numpy authors" in license_text


def test_pre_commit_runs_the_first_checks_of_ci() -> None:
    """ruff check, ruff format and mypy (on pyproject's files, so no file names passed), as CI runs them."""
    config = (ROOT / ".pre-commit-config.yaml").read_text()
    entries = re.findall(r"^\s*entry: (.+)$", config, flags=re.M)
    assert [e.split()[:2] for e in entries] == [["ruff", "check"], ["ruff", "format"], ["mypy"]]
    assert "pass_filenames: false" in config.split("id: mypy", 1)[1]


PACKAGE = ROOT / "c2f_numpy"


def test_the_code_map_lists_every_module_of_the_package() -> None:
    """docs/code-map.md names each module by its path; a module added or split must be added there too."""
    code_map = (ROOT / "docs" / "code-map.md").read_text()
    named = set(re.findall(r"`((?:c2f_numpy/)?[\w/]+\.py)`", code_map))
    named = {n if n.startswith("c2f_numpy/") else f"c2f_numpy/{n}" for n in named if not n.startswith("tests/")}
    files = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")}
    inits = {str(p.relative_to(ROOT)) for p in PACKAGE.glob("*/__init__.py")}  # the subpackage's own row says it
    assert sorted(files - inits - named) == [], "modules missing from docs/code-map.md"
    assert sorted(n for n in named - files if "/" in n.removeprefix("c2f_numpy/")) == [], "no such module"


def test_the_package_docstring_names_every_subpackage() -> None:
    import c2f_numpy

    subpackages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert subpackages, "found no subpackage"
    missing = [s for s in subpackages if f":mod:`c2f_numpy.{s}`" not in (c2f_numpy.__doc__ or "")]
    assert missing == []
