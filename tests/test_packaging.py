"""The Alembic migrations live in the top-level migrations/ and ship in the wheel as `reconciler.migrations`.

pyproject.toml maps the package onto the directory (`[tool.setuptools] package-dir`), and `store.schema` finds it
by importing it, so the editable install (the test environment), a checkout that is not installed and an
installed wheel all find the same scripts. The wheel is built from exactly what the Dockerfile's build stage
copies, with pip's build isolation as the Dockerfile does (the venv's own setuptools is older than the
`setuptools>=69` pyproject.toml asks for, and has no `bdist_wheel`, so `--no-build-isolation` cannot build it);
it is unpacked, not installed into a new venv, and then migrates a fresh SQLite database from outside the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from reconciler.store import schema

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
VERSIONS = sorted(p.name for p in (MIGRATIONS / "versions").glob("*.py"))


def _run(code: str, *, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_migrations_are_a_top_level_directory_of_the_source_tree() -> None:
    assert not (ROOT / "reconciler" / "migrations").exists()
    assert (MIGRATIONS / "env.py").is_file() and (MIGRATIONS / "script.py.mako").is_file()
    assert VERSIONS and "0001_initial_schema.py" in VERSIONS


def test_the_editable_install_maps_the_package_onto_the_top_level_directory(tmp_path: Path) -> None:
    assert schema.MIGRATIONS.resolve() == MIGRATIONS
    # From elsewhere, so that only the installed finder (not the checkout on sys.path) can find it.
    code = (
        "import reconciler.migrations as m; from reconciler.store import schema; print(m.__file__, schema.MIGRATIONS)"
    )
    package, found = _run(code, cwd=tmp_path).split()
    assert Path(package) == MIGRATIONS / "__init__.py"
    assert Path(found) == MIGRATIONS


def test_a_checkout_that_is_not_installed_finds_the_top_level_directory(tmp_path: Path) -> None:
    code = (
        "import sys; "
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]; "
        f"sys.path.insert(0, {str(ROOT)!r}); "
        "import importlib.util; assert importlib.util.find_spec('reconciler.migrations') is None; "
        "from reconciler.store import schema; print(schema.MIGRATIONS, schema.head())"
    )
    found, head = _run(code, cwd=tmp_path).split()
    assert Path(found) == MIGRATIONS
    assert head == schema.head()


def test_alembic_ini_points_at_the_migrations_from_any_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT / "tests")
    script = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini")))
    assert Path(script.dir).resolve() == MIGRATIONS
    assert script.get_current_head() == schema.head()


# --- the wheel (a few seconds: pip fetches setuptools for its isolated build) -----------------------------------


def _build_stage_sources() -> list[str]:
    """What the Dockerfile's build stage copies into the build context: `COPY <src>... <dest>` before the 2nd FROM."""
    sources: list[str] = []
    stages = 0
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            stages += 1
        elif words[:1] == ["COPY"] and stages == 1 and not any(w.startswith("--from") for w in words):
            sources.extend(w for w in words[1:-1] if not w.startswith("--"))
    return sources


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built as the Dockerfile builds it: from a copy of what it copies (no build/ left in the tree)."""
    source = tmp_path_factory.mktemp("context")
    for name in _build_stage_sources():
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("wheels")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("reconciler-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_ships_every_migration_inside_the_package_and_migrates_when_installed(
    wheel: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for name in ("__init__.py", "env.py", "script.py.mako"):
        assert f"reconciler/migrations/{name}" in names
    for version in VERSIONS:
        assert f"reconciler/migrations/versions/{version}" in names
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"reconciler"}  # no top-level `migrations`
    # pyproject.toml lists the packages by hand: every package of the tree must be in the wheel.
    for init in (ROOT / "reconciler").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names, f"{init.parent.name} is missing from [tool.setuptools]"
    assert "reconciler/py.typed" in names
    # installed, it migrates a fresh database from outside the source tree
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # a pure-Python wheel unpacked is what pip installs
    config = tmp_path / "config.toml"
    config.write_text("[reconciler]\n")
    database = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of the editable install in the venv
    where = _run(
        "import reconciler; from reconciler.store import schema; print(reconciler.__file__, schema.MIGRATIONS)",
        cwd=tmp_path,
        env=env,
    ).split()
    assert where == [str(site / "reconciler" / "__init__.py"), str(site / "reconciler" / "migrations")]
    command = [sys.executable, "-m", "reconciler.cli", "--config", str(config), "--database", database, "db", "upgrade"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    head = _run(
        "from sqlalchemy import create_engine; from reconciler.store import schema; "
        f"print(schema.current(create_engine({database!r})))",
        cwd=tmp_path,
        env=env,
    )
    assert head == schema.head()
