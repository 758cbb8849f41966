"""The configuration as the user meets it: `reconciler … config check` and config errors, through a real process.

Every run gets a clean environment (no AWX_*, DOCKERHUB_*, RECONCILER_* from the developer's shell) and runs in
`tmp_path`, so it finds no stray `config.toml` and writes nothing elsewhere. No run needs the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

AWX_TOKEN = "sekrit-awx-token-123"
HUB_USER = "sekrit-hub-user-456"
HUB_TOKEN = "sekrit-hub-token-789"
WEBHOOK = "sekrit-webhook-from-file-000"
DB_PASSWORD = "sekrit-db-password-321"
SECRETS = (AWX_TOKEN, HUB_USER, HUB_TOKEN, WEBHOOK, DB_PASSWORD)
_SCRUBBED = ("RECONCILER_", "AWX_", "DOCKERHUB_")

VALID = """
[reconciler]
interval = "5m"

[server]
listen = "127.0.0.1:8080"
webhook_secret_file = "webhook-secret"

[registries."docker.io"]
username_env = "DOCKERHUB_USERNAME"
password_env = "DOCKERHUB_TOKEN"

[awx.production]
url = "https://awx.example.org"
token_env = "AWX_TOKEN"

[[watch]]
name = "stack-staging"
image = "xchem/fragalysis-stack"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = "Staging Fragalysis Stack"
extra_vars = { stack_image_tag = "{tag}" }

[[watch]]
name = "frontend"
image = "xchem/fragalysis-frontend"
tag = "latest"
"""
VALID_ENV = {"AWX_TOKEN": AWX_TOKEN, "DOCKERHUB_USERNAME": HUB_USER, "DOCKERHUB_TOKEN": HUB_TOKEN}


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_valid(tmp_path: Path, text: str = VALID) -> Path:
    (tmp_path / "webhook-secret").write_text(WEBHOOK + "\n", encoding="utf-8")
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.stdout == ""
    assert result.stderr.endswith("\n")
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("reconciler: "), lines[0]
    return lines[0]


# --- config check on a valid file --------------------------------------------------------------------------------


def test_config_check_prints_the_resolved_configuration_with_secrets_redacted(tmp_path: Path) -> None:
    path = write_valid(tmp_path)

    result = run(tmp_path, "--config", str(path), "config", "check", env=VALID_ENV)

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["awx"]["production"]["token"] == "<redacted, from $AWX_TOKEN>"
    assert document["registries"]["docker.io"]["username"] == "<redacted, from $DOCKERHUB_USERNAME>"
    assert document["registries"]["docker.io"]["password"] == "<redacted, from $DOCKERHUB_TOKEN>"
    assert document["server"]["webhook_secret"].startswith("<redacted, from ")
    assert document["server"]["webhook_secret"].endswith("webhook-secret>")
    assert document["server"]["token"] is None
    assert [w["name"] for w in document["watch"]] == ["stack-staging", "frontend"]
    staging = document["watch"][0]
    assert staging["image"] == "docker.io/xchem/fragalysis-stack"
    assert staging["selector"] == "tag:latest"
    assert staging["action"]["template"] == "Staging Fragalysis Stack"
    assert document["watch"][1]["action"] is None
    assert "is valid" in result.stderr


def test_config_check_never_prints_a_secret_value(tmp_path: Path) -> None:
    path = write_valid(tmp_path)

    result = run(tmp_path, "--config", str(path), "config", "check", env=VALID_ENV)

    assert result.returncode == 0, result.stderr
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("how", "args", "env"),
    [
        pytest.param("file", (), {}, id="from-the-file"),
        pytest.param("env", (), {"RECONCILER_DATABASE_URL": "{url}"}, id="from-the-environment"),
        pytest.param("flag", ("--database", "{url}"), {}, id="from-the-flag"),
    ],
)
def test_config_check_hides_the_database_password(
    tmp_path: Path, how: str, args: tuple[str, ...], env: dict[str, str]
) -> None:
    url = f"postgresql+psycopg://reconciler:{DB_PASSWORD}@db.example.org:5432/reconciler"
    text = VALID.replace('interval = "5m"', f'interval = "5m"\ndatabase = "{url}"') if how == "file" else VALID
    path = write_valid(tmp_path, text)

    result = run(
        tmp_path,
        "--config",
        str(path),
        *(a.format(url=url) for a in args),
        "config",
        "check",
        env={**VALID_ENV, **{k: v.format(url=url) for k, v in env.items()}},
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["database"] == "postgresql+psycopg://reconciler:***@db.example.org:5432/reconciler"
    assert DB_PASSWORD not in result.stdout + result.stderr


def test_config_check_accepts_the_repository_config(tmp_path: Path) -> None:
    repository_config = Path(__file__).resolve().parent.parent / "config.toml"

    result = run(tmp_path, "--config", str(repository_config), "config", "check", env={"AWX_TOKEN": AWX_TOKEN})

    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["watch"]) == 4
    assert AWX_TOKEN not in result.stdout + result.stderr


def test_config_path_defaults_to_reconciler_config_variable(tmp_path: Path) -> None:
    path = write_valid(tmp_path)
    (tmp_path / "elsewhere").mkdir()

    result = run(tmp_path / "elsewhere", "config", "check", env={**VALID_ENV, "RECONCILER_CONFIG": str(path)})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["source"] == str(path)


# --- configuration errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        pytest.param('[reconciler]\ninterval = "5m"\njitter = 30s\n', {}, "TOML syntax error", id="toml-syntax-error"),
        pytest.param('[reconciler]\nintervall = "5m"\n', {}, "reconciler.intervall", id="unknown-key"),
        pytest.param('[reconciler]\ninterval = "5"\n', {}, "reconciler.interval", id="bad-duration"),
        pytest.param(
            '[[watch]]\nname = "w"\nimage = "xchem/x"\ntag = "latest"\ntags = "release"\n',
            {},
            "watch[0]",
            id="both-tag-and-tags",
        ),
        pytest.param(
            '[server]\nwebhook_secret_file = "no-such-secret-file"\n',
            {},
            "server.webhook_secret_file: cannot read 'no-such-secret-file'",
            id="missing-webhook-secret-file",
        ),
        pytest.param(
            f'[reconciler]\ndatabase = "postgresql+psycopg://u:{DB_PASSWORD}@db:port/x"\n',
            {},
            "reconciler.database",
            id="database-url-with-a-bad-port",
        ),
    ],
)
def test_config_check_on_a_bad_config_exits_2_with_one_line_and_no_traceback(
    tmp_path: Path, text: str, env: dict[str, str], expected: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")

    result = run(tmp_path, "--config", str(path), "config", "check", env=env)

    line = assert_one_line_error(result)
    assert result.returncode == 2
    assert expected in line
    assert DB_PASSWORD not in line


def test_a_missing_config_file_exits_2_naming_the_path_and_the_option(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"

    result = run(tmp_path, "--config", str(absent), "config", "check")

    line = assert_one_line_error(result)
    assert result.returncode == 2
    assert str(absent) in line
    assert "--config" in line


def test_without_config_option_a_missing_default_file_is_named(tmp_path: Path) -> None:
    result = run(tmp_path, "config", "check")

    line = assert_one_line_error(result)
    assert result.returncode == 2
    assert "config.toml" in line
    assert "--config" in line


def test_reconcile_with_an_unknown_watch_exits_2_naming_it(tmp_path: Path) -> None:
    path = write_valid(tmp_path)
    database = tmp_path / "x.db"

    result = run(
        tmp_path,
        "--config",
        str(path),
        "--database",
        f"sqlite:///{database}",
        "reconcile",
        "--watch",
        "nope",
        env=VALID_ENV,
    )

    line = assert_one_line_error(result)
    assert result.returncode == 2
    assert "'nope'" in line
    assert "stack-staging" in line  # the known watches are listed
    assert not database.exists()  # a usage error touches nothing


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("frobnicate",), id="unknown-command"),
        pytest.param(("config", "frobnicate"), id="unknown-config-subcommand"),
        pytest.param(("--frobnicate", "config", "check"), id="unknown-option"),
        pytest.param((), id="no-command"),
    ],
)
def test_usage_errors_exit_2_with_usage(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run(tmp_path, *args)

    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_one_database_wherever_you_stand(tmp_path: Path) -> None:
    """A relative SQLite path in config.toml is the file's neighbour, not the working directory's: run from
    elsewhere, the same database is found (else its first pass would take a new image as the baseline)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.toml").write_text('[reconciler]\ndatabase = "sqlite:///state.db"\n')
    upgraded = run(tmp_path, "--config", "conf/config.toml", "--log-level", "info", "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert (conf / "state.db").exists()
    assert not (tmp_path / "state.db").exists()
    assert f"database: sqlite:///{conf / 'state.db'}" in upgraded.stderr


def test_log_level_info_names_the_database_without_its_password(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[reconciler]\n")
    url = f"postgresql+psycopg://reconciler:{DB_PASSWORD}@127.0.0.1:1/nowhere"
    result = run(tmp_path, "--database", url, "--log-level", "info", "config", "check")
    assert result.returncode == 0, result.stderr
    assert "database: postgresql+psycopg://reconciler:***@127.0.0.1:1/nowhere" in result.stderr
    assert DB_PASSWORD not in result.stderr + result.stdout


def test_a_database_left_in_the_working_directory_is_pointed_out(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "config.toml").write_text('[reconciler]\ndatabase = "sqlite:///state.db"\n')
    (tmp_path / "state.db").write_bytes(b"")  # where an older version kept it, relative to the working directory
    result = run(tmp_path, "--config", "conf/config.toml", "status")
    assert result.returncode == 0, result.stderr
    assert "taken from the configuration file's directory" in result.stderr and str(conf / "state.db") in result.stderr
