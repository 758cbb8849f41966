"""Alembic's INFO chatter ("Context impl SQLiteImpl.", "Will assume non-transactional DDL.", "Running upgrade …")
stays out of the log at `--log-level info`, and is there with `--log-level debug`. Through the real CLI, in a
process of its own, on a fresh SQLite database."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_ALEMBIC_LOGGER = re.compile(r'(?:^|[\s"])alembic\.')  # "INFO alembic.runtime.migration:", '"logger": "alembic.…'


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(exist_ok=True)
    config = tmp_path / "config.toml"
    config.write_text("[reconciler]\n")
    database = f"sqlite:///{tmp_path / 'reconciler.db'}"
    command = [sys.executable, "-m", "reconciler.cli", "--config", str(config), "--database", database, *args]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done


def _alembic_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if _ALEMBIC_LOGGER.search(line)]


def test_db_upgrade_logs_alembic_at_debug_only(tmp_path: Path) -> None:
    info = _cli(tmp_path / "info", "--log-level", "info", "db", "upgrade")
    assert _alembic_lines(info.stderr) == [], info.stderr
    assert "Running upgrade" not in info.stderr and "Context impl" not in info.stderr, info.stderr
    assert "reconciler.app" in info.stderr  # the log is on at INFO: only Alembic's lines are missing
    assert "at revision" in info.stdout
    debug = _cli(tmp_path / "debug", "--log-level", "debug", "db", "upgrade")
    assert "alembic.runtime.migration: Running upgrade  -> 0001" in debug.stderr, debug.stderr
    assert "Context impl SQLiteImpl." in debug.stderr
    assert _alembic_lines(debug.stderr)  # what the pattern looks for, so its absence above means something


def test_the_json_log_at_info_has_no_alembic_lines(tmp_path: Path) -> None:
    done = _cli(tmp_path, "--log-level", "info", "--log-format", "json", "db", "upgrade")
    assert _alembic_lines(done.stderr) == [], done.stderr
    assert '"logger": "reconciler.app"' in done.stderr


def test_a_database_already_at_head_logs_nothing_from_alembic_at_info(tmp_path: Path) -> None:
    _cli(tmp_path, "db", "upgrade")
    again = _cli(tmp_path, "--log-level", "info", "db", "upgrade")
    status = _cli(tmp_path, "--log-level", "info", "status")  # reads the revision: a MigrationContext of its own
    for done in (again, status):
        assert _alembic_lines(done.stderr) == [], done.stderr
