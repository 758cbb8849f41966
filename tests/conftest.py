"""Session fixtures for the real components: the registry (plain and token auth) and PostgreSQL.

A missing component skips the tests that need it, except under CI (`CI` set), where it fails them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import NoReturn

import bcrypt
import psycopg
import pytest

from tests.support.registry import LocalRegistry
from tests.support.token_server import TokenRegistry, TokenServer

# the `db` fixtures, over SQLite and PostgreSQL; `awx` and `scenario`, the AWX deployment harness
pytest_plugins = ["tests.support.databases", "tests.support.awx_scenario"]

URL_ENV = "RECONCILER_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def _need_registry_binary() -> None:
    if shutil.which("docker-registry") is None:
        _unavailable("docker-registry not found on PATH: apt-get install -y docker-registry")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    _need_registry_binary()
    with LocalRegistry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    _need_registry_binary()
    base = tmp_path_factory.mktemp("token-registry")
    with (
        TokenServer(base / "keys", users={"alice": "s3cret"}, public=None) as tokens,
        LocalRegistry(base / "registry", token=tokens.token_config()) as reg,
    ):
        yield TokenRegistry(registry=reg, tokens=tokens)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get(URL_ENV, DEFAULT_POSTGRES_URL)
    try:
        psycopg.connect(url.replace("+psycopg", "", 1), connect_timeout=2).close()
    except psycopg.Error as exc:
        _unavailable(f"PostgreSQL at {url} does not answer ({exc}); start it or set {URL_ENV}")
    return url


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A registry behind HTTP Basic auth (htpasswd, bcrypt cost 4: it hashes on every request): user bob/hunter2."""
    _need_registry_binary()
    base = tmp_path_factory.mktemp("basic-registry")
    htpasswd = base / "htpasswd"
    htpasswd.write_text("bob:" + bcrypt.hashpw(b"hunter2", bcrypt.gensalt(rounds=4)).decode() + "\n")
    with LocalRegistry(base / "registry", htpasswd=htpasswd) as reg:
        yield reg
