"""The house rules, checked as part of the test command: ruff (lint and format), mypy --strict
on the package, and the import-linter contracts for the one-way import direction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([sys.executable, "-m", "ruff", "check", "."], id="ruff-check"),
        pytest.param([sys.executable, "-m", "ruff", "format", "--check", "."], id="ruff-format"),
        pytest.param([sys.executable, "-m", "mypy"], id="mypy-strict"),
        pytest.param([str(BIN / "lint-imports")], id="import-linter"),
    ],
)
def test_the_code_meets_the_house_rules(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command[-3:])} failed:\n{done.stdout}\n{done.stderr}"
