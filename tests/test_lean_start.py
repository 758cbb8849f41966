"""The commands people type many times a day start lean: `status`, `history` and `--version` import none of the
libraries only acting needs, and a large configuration, once found valid, is read from its parsed copy
(`reconciler/config/cache.py`), building only the watches asked about. Whole processes, as a user runs them."""

from __future__ import annotations

import gc
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli, reading
from reconciler.config import cache
from tests.support.databases import TestDatabase

pytest_plugins = ["tests.support.databases"]

HEAVY = ("alembic", "requests", "urllib3", "docker", "apscheduler", "waitress", "kubernetes", "apprise", "jinja2")
PROBE = """
import json, sys
sys.argv = ["reconciler", *json.loads(sys.argv[1])]
from reconciler import cli
try:
    code = cli.main()
finally:
    sys.stdout.flush()
    print("\\nMODULES " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
raise SystemExit(code)
"""


def _config(tmp_path: Path, watches: int, *, notify: bool = True) -> Path:
    lines = [
        "[reconciler]",
        f'database = "sqlite:///{tmp_path}/reconciler.db"',
        "[awx.production]",
        'url = "https://awx.example.org"',
        'token_env = "AWX_TOKEN"',
    ]
    if notify:
        lines += ["[[notify]]", 'name = "slack"', 'url_env = "SLACK_URL"', 'watches = ["w1"]']
    for n in range(1, watches + 1):
        lines += [
            "[[watch]]",
            f'name = "w{n}"',
            f'image = "example/app{n % 50}"',
            f'tag = "t{n}"',
            "[watch.action]",
            'kind = "awx"',
            'awx = "production"',
            'template = "Deploy"',
            'extra_vars = { tag = "{tag}" }',
        ]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(["--config", str(config), *args])],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    modules = json.loads(done.stderr.rpartition("MODULES ")[2])
    return done, set(modules)


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    config = _config(tmp_path, 3)
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "--config", str(config), "db", "upgrade"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return config


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["status", "--watch", "w2"],
        ["history", "--watch", "w2"],
        ["history", "--json"],
    ],
)
def test_the_commands_that_read_import_nothing_only_acting_needs(migrated: Path, args: list[str]) -> None:
    done, modules = _run(migrated, *args)
    assert done.returncode == 0, done.stderr
    assert modules.isdisjoint({*HEAVY, "sqlalchemy"}), sorted(modules & {*HEAVY, "sqlalchemy"})  # sqlite3 reads
    if "--json" in args:
        assert "rich" not in modules  # the tables' library: not for JSON


@pytest.mark.postgres
def test_on_postgresql_the_commands_that_read_use_psycopg_alone(
    tmp_path: Path, plain_postgres_db: TestDatabase
) -> None:
    config = _config(tmp_path, 3)
    config.write_text(config.read_text().replace(f"sqlite:///{tmp_path}/reconciler.db", plain_postgres_db.url))
    upgraded = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", "--config", str(config), "db", "upgrade"], capture_output=True
    )
    assert upgraded.returncode == 0, upgraded.stderr
    for args in (["status", "--json"], ["history", "--watch", "w2", "--json"]):
        done, modules = _run(config, *args)
        assert done.returncode == 0, done.stderr
        assert "psycopg" in modules and modules.isdisjoint({*HEAVY, "sqlalchemy"}), sorted(modules)
    assert [w["name"] for w in json.loads(_run(config, "status", "--json")[0].stdout)["watches"]] == ["w1", "w2", "w3"]


def test_a_database_url_with_options_is_read_through_sqlalchemy(migrated: Path) -> None:
    text = migrated.read_text()
    migrated.write_text(text.replace('reconciler.db"', 'reconciler.db?timeout=5"', 1))
    done, modules = _run(migrated, "status", "--json")
    assert done.returncode == 0, done.stderr
    assert "sqlalchemy" in modules and modules.isdisjoint(HEAVY)
    assert len(json.loads(done.stdout)["watches"]) == 3


def test_a_reading_command_builds_without_cycle_collection_and_gives_it_back(
    migrated: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` makes objects by the ten thousand and no cycles: the collector is off while it reads, and on again
    once `main` returns (in the same process), whichever way it ends."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # cli.main sets its own handler up: undone after
    monkeypatch.setattr(root, "level", root.level)
    collecting: list[bool] = []
    document = reading.Reading.status

    def status(self: reading.Reading, *args: Any, **kwargs: Any) -> dict[str, Any]:
        collecting.append(gc.isenabled())
        return document(self, *args, **kwargs)

    monkeypatch.setattr(reading.Reading, "status", status)
    assert gc.isenabled()
    assert cli.main(["--config", str(migrated), "status", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["watches"]) == 3
    assert collecting == [False] and gc.isenabled()
    assert cli.main(["--config", str(migrated), "status", "--watch", "nosuch"]) == cli.EXIT_CONFIG
    assert gc.isenabled()


def test_version_imports_neither_the_database_nor_the_configuration(migrated: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, '["--version"]'],
        capture_output=True,
        text=True,
    )
    assert done.stdout.startswith("reconciler ")
    modules = set(json.loads(done.stderr.rpartition("MODULES ")[2]))
    assert modules.isdisjoint({*HEAVY, "sqlalchemy", "rich", "tomllib"}), sorted(modules)


def test_a_reconcile_still_imports_what_it_acts_with(migrated: Path) -> None:
    """The other side: the lean start is not an accident of a command that does nothing."""
    _, modules = _run(migrated, "reconcile", "--dry-run")
    assert {"requests", "urllib3"} <= modules


# --- the kept copy of a large configuration -------------------------------------------------------------------


@pytest.fixture
def cache_home(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "cache-home"
    return {"XDG_CACHE_HOME": str(home)}


def _copies(env: dict[str, str]) -> list[Path]:
    return sorted((Path(env["XDG_CACHE_HOME"]) / "reconciler").glob("*.marshal"))


def test_a_large_configuration_is_kept_parsed_once_valid_and_read_afresh_once_edited(
    tmp_path: Path, cache_home: dict[str, str]
) -> None:
    config = _config(tmp_path, 600)
    assert config.stat().st_size >= cache.SMALLEST
    first, _ = _run(config, "status", "--json", env=cache_home)
    assert first.returncode == 0, first.stderr
    kept = _copies(cache_home)
    assert len(kept) == 1
    written = kept[0].stat().st_mtime_ns
    assert oct(kept[0].stat().st_mode & 0o777) == "0o600"
    assert oct(kept[0].parent.stat().st_mode & 0o777) == "0o700"

    again, _ = _run(config, "status", "--watch", "w7", "--json", env=cache_home)
    assert [w["name"] for w in json.loads(again.stdout)["watches"]] == ["w7"]
    assert _copies(cache_home) == kept and kept[0].stat().st_mtime_ns == written  # read, not written again

    config.write_text(config.read_text().replace('name = "w7"', 'name = "seven"'))
    edited, _ = _run(config, "status", "--watch", "seven", "--json", env=cache_home)
    assert [w["name"] for w in json.loads(edited.stdout)["watches"]] == ["seven"]
    assert len(_copies(cache_home)) == 2  # the edited file, once found valid


def test_an_invalid_large_configuration_is_never_kept_and_always_refused(
    tmp_path: Path, cache_home: dict[str, str]
) -> None:
    config = _config(tmp_path, 600)
    config.write_text(config.read_text().replace('name = "w599"', 'name = "w1"'))  # a name used twice
    for args in (["status", "--watch", "w7"], ["status"]):
        done, _ = _run(config, *args, env=cache_home)
        assert done.returncode == 2
        assert "'w1' is used by another watch" in done.stderr
    assert _copies(cache_home) == []


def test_asking_about_an_unknown_watch_of_a_kept_configuration_lists_every_watch(
    tmp_path: Path, cache_home: dict[str, str]
) -> None:
    config = _config(tmp_path, 600)
    _run(config, "status", env=cache_home)
    done, _ = _run(config, "status", "--watch", "nope", env=cache_home)
    assert done.returncode == 2
    assert "no watch named 'nope'" in done.stderr and "w1, w2, w3" in done.stderr and "w600" in done.stderr


def test_the_overrides_in_the_environment_are_part_of_the_key(tmp_path: Path, cache_home: dict[str, str]) -> None:
    config = _config(tmp_path, 600)
    _run(config, "status", env=cache_home)
    done, _ = _run(config, "config", "check", env={**cache_home, "RECONCILER_INTERVAL": "7m"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["watch"][0]["interval"] == "7m"
    assert len(_copies(cache_home)) == 2


def test_a_copy_someone_else_could_have_written_is_not_read(tmp_path: Path, cache_home: dict[str, str]) -> None:
    config = _config(tmp_path, 600)
    _run(config, "status", env=cache_home)
    (kept,) = _copies(cache_home)
    kept.chmod(0o666)  # writable by anyone: ignored
    assert cache.read(kept.stem, cache_home) is None
    kept.chmod(0o600)
    assert isinstance(cache.read(kept.stem, cache_home), dict)
    kept.parent.chmod(0o777)
    assert cache.read(kept.stem, cache_home) is None
    kept.parent.chmod(0o700)


def test_a_small_configuration_is_parsed_every_time_and_kept_nowhere(
    tmp_path: Path, cache_home: dict[str, str]
) -> None:
    config = _config(tmp_path, 5)
    done, _ = _run(config, "status", env=cache_home)
    assert done.returncode == 0, done.stderr
    assert not (Path(cache_home["XDG_CACHE_HOME"]) / "reconciler").exists()


def test_the_daemon_migrates_in_a_child_process_and_never_imports_alembic_itself(tmp_path: Path) -> None:
    """Alembic stays resident once imported (~8 MiB of the daemon): `run` migrates a database that needs it in a
    child process, and one already at head without it."""
    config = _config(tmp_path, 2, notify=False)
    script = """
import sys
from pathlib import Path
from reconciler import app, config, running
from reconciler.store import schema
application = app.App(config.load(Path(sys.argv[1])))
for _ in range(2):  # a fresh database, then one at head
    running.upgrade_apart(application)
    assert schema.current(application.db) == schema.head()
print("alembic" in sys.modules, "mako" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script, str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_a_migration_that_fails_in_the_child_is_one_line_from_run(tmp_path: Path) -> None:
    """A database a newer version migrated (a revision this one does not know): `run` says so in one line."""
    config = _config(tmp_path, 2, notify=False)
    upgrade = [sys.executable, "-m", "reconciler.cli", "--config", str(config), "db", "upgrade"]
    assert subprocess.run(upgrade, capture_output=True, timeout=60).returncode == 0
    with sqlite3.connect(tmp_path / "reconciler.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    run = [sys.executable, "-m", "reconciler.cli", "--config", str(config), "run"]
    done = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("reconciler: cannot migrate the database") and "9999" in last, done.stderr
    assert "Traceback" not in done.stderr
