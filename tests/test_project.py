"""The README's promises: its commands are what CI runs, and the demo it advertises works."""

from __future__ import annotations

import re
from pathlib import Path

from c2f_numpy import demo

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    commands = readme_commands()
    assert len(commands) >= 2
    setup_and_demo, setup_and_test = commands[0], commands[1]
    assert "pip install -e ." in setup_and_demo and "c2f_numpy.demo" in setup_and_demo
    assert "'.[test,docs]'" in setup_and_test and "/pytest &&" in setup_and_test
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
