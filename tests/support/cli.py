"""`reconciler` as a person runs it: a new process on a configuration file, its output captured as text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
