"""An action whose secret is not set: the watch is observed and reported but its action is not attempted (and no
attempt is counted); `status`, `/readyz` and the log name the missing variable, once; setting it and starting again
makes the watch act. Commands that only read never need an action secret. The CLI in this process, the daemon as
a real one, the real registry and the fake AWX."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from reconciler import cli
from tests.fakes.awx import FakeAwx
from tests.support.awx_scenario import TOKEN, Scenario, baseline, make_scenario
from tests.support.daemon import AWX_TOKEN, Daemon, configure, repo_of, wait_until
from tests.support.registry import LocalRegistry, push_schema2

REPO = Path(__file__).resolve().parent.parent
_SCRUBBED = ("RECONCILER_", "AWX_", "DOCKERHUB_", "TEST_AWX_", "GITHUB_")


def _env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}, **extra}


def _cli(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`reconciler --config CONFIG ARGS…` in this process (the daemon tests below run real processes), with the
    secrets scrubbed from the environment and `env` added."""
    argv = ["--config", str(config), *args]
    saved = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(_env(**env))
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        logging.getLogger().handlers.clear()  # the CLI's handler wrote into `err`, which is done with
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@pytest.fixture
def default_config(tmp_path: Path) -> Path:
    """The repository's own config.toml; its SQLite database lands beside the copy."""
    path = tmp_path / "config.toml"
    shutil.copy(REPO / "config.toml", path)
    return path


@pytest.mark.parametrize("command", [("status",), ("status", "--json"), ("history",), ("db", "upgrade")])
def test_commands_that_only_read_need_no_action_secret(default_config: Path, command: tuple[str, ...]) -> None:
    result = _cli(default_config, *command)
    assert result.returncode == 0, result.stderr
    assert "AWX_TOKEN" not in result.stderr  # nothing to say: they never use it


def test_config_check_warns_naming_the_key_and_the_variable(default_config: Path) -> None:
    result = _cli(default_config, "config", "check")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "AWX_TOKEN" in line]
    assert len(warnings) == 1, result.stderr
    assert "awx.production.token_env" in warnings[0] and "warning" in warnings[0].lower()
    assert "stack-staging" in warnings[0] and "stack-production" in warnings[0]
    assert json.loads(result.stdout)["awx"]["production"]["token"] is None


def test_status_of_the_default_config_names_the_missing_variable(default_config: Path) -> None:
    watches = json.loads(_cli(default_config, "status", "--json").stdout)["watches"]
    blocked = {w["name"]: w["cannot_act"] for w in watches}
    assert blocked["stack-staging"] == "AWX_TOKEN is not set (awx.production.token_env)"
    assert blocked["stack-production"] == blocked["stack-staging"]
    assert blocked["frontend"] == "GITHUB_TOKEN is not set (github.default.token_env)"


@pytest.fixture
def quick(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> Scenario:
    """The AWX scenario polling every 20 ms: the CLI waits for the job in real time."""
    return make_scenario(tmp_path, registry, awx, f"sqlite:///{tmp_path}/reconciler.db", poll="20ms")


def test_a_watch_without_its_token_is_observed_but_never_attempted_until_the_token_is_set(quick: Scenario) -> None:
    s = quick
    baseline(s)
    second = s.push("two")
    for _ in range(2):  # passes repeat; none attempts anything, none counts an attempt
        result = _cli(s.path, "reconcile", "--json")
        assert result.returncode == 1, result.stderr  # due, and not done: not "in sync"
        document = json.loads(result.stdout)
        watch = document["watches"][0]
        assert watch["decision"]["verdict"] == "blocked", result.stdout
        assert watch["observed"]["digest"] == second
        assert watch["action"] is None
        assert "TEST_AWX_TOKEN is not set (awx.production.token_env)" in watch["decision"]["reason"]
        assert result.stderr.count("TEST_AWX_TOKEN") == 1, result.stderr  # named once per run
    assert _cli(s.path, "reconcile", "--dry-run").returncode == 5  # there is drift an action is due for
    assert s.awx.launches == [] and s.awx.requests == [], "nothing may reach AWX without its token"
    assert s.actions() == [], "no action is planned, so no attempt is counted"

    status = json.loads(_cli(s.path, "status", "--json").stdout)["watches"][0]
    assert status["cannot_act"] == "TEST_AWX_TOKEN is not set (awx.production.token_env)"
    assert status["state"] == "drifted" and status["deployed"]["digest"] != second
    assert "TEST_AWX_TOKEN" in _cli(s.path, "status").stdout  # the table says it too

    result = _cli(s.path, "reconcile", "--json", TEST_AWX_TOKEN=TOKEN)
    watch = json.loads(result.stdout)["watches"][0]
    assert watch["decision"]["verdict"] == "drift" and watch["action"]["status"] == "succeeded", result.stderr
    assert watch["action"]["attempt"] == 1
    assert len(s.awx.launches) == 1 and watch["cannot_act"] is None


@pytest.fixture
def daemon_awx() -> Iterator[FakeAwx]:
    with FakeAwx(token=AWX_TOKEN) as fake:
        fake.add_template("Staging Fragalysis Stack")
        yield fake


@pytest.fixture
def daemon(tmp_path: Path, registry: LocalRegistry, daemon_awx: FakeAwx) -> Iterator[Daemon]:
    d = configure(tmp_path, registry, daemon_awx)
    yield d
    if d.proc and d.proc.poll() is None:
        d.stop(signal.SIGKILL)


def test_the_daemon_runs_without_the_token_names_it_once_and_acts_after_a_restart_with_it(
    daemon: Daemon, registry: LocalRegistry, daemon_awx: FakeAwx
) -> None:
    d, awx = daemon, daemon_awx
    first = push_schema2(registry.base, repo_of(d), "latest", label="one")
    push_schema2(registry.base, f"{repo_of(d)}-frontend", "latest", label="front")
    d.start(without=("TEST_AWX_TOKEN",))
    wait_until("the baseline", lambda: (d.status().get("deployed") or {}).get("digest") == first)
    second = push_schema2(registry.base, repo_of(d), "latest", label="two")
    wait_until("the new digest", lambda: (d.status().get("observed") or {}).get("digest") == second)
    checked = _checked_at(d)
    wait_until("another pass", lambda: _checked_at(d) not in (checked, None))
    code, body = d.get("/readyz")
    assert code == 200, body
    assert b"TEST_AWX_TOKEN is not set (awx.production.token_env)" in body and b"staging" in body
    assert d.status()["cannot_act"] == "TEST_AWX_TOKEN is not set (awx.production.token_env)"
    assert awx.launches == [] and awx.requests == [] and d.actions() == []
    assert d.stop()[0] == 0
    assert d.logs().count("TEST_AWX_TOKEN") == 1, d.logs()

    d.start()
    wait_until("the launch once the token is set", lambda: len(awx.launches) == 1)
    wait_until("the roll-out", lambda: (d.status().get("deployed") or {}).get("digest") == second)
    assert d.status()["cannot_act"] is None
    assert AWX_TOKEN not in d.logs()


def _checked_at(d: Daemon) -> str | None:
    return d.status().get("checked_at")


def test_registry_credentials_named_but_unset_stop_only_the_commands_that_ask_the_registry(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[registries."docker.io"]\nusername_env = "HUB_USER_UNSET"\npassword_env = "HUB_PASSWORD_UNSET"\n'
        '[[watch]]\nname = "app"\nimage = "xchem/app"\ntag = "latest"\n'
    )
    for command in (("status",), ("history",), ("db", "upgrade")):
        assert _cli(config, *command).returncode == 0, command
    checked = _cli(config, "config", "check")
    assert checked.returncode == 0 and "HUB_USER_UNSET is not set" in checked.stderr, checked.stderr
    for command in (("reconcile",), ("reconcile", "--dry-run")):
        refused = _cli(config, *command)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.strip().splitlines() == [
            f'reconciler: {config}: registries."docker.io".username_env: HUB_USER_UNSET is not set '
            "(the credentials of registry docker.io)"
        ]


def test_an_action_secret_file_that_cannot_be_read_holds_back_only_its_watches(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[awx.production]\nurl = "https://awx.example.org"\ntoken_file = "nowhere/awx-token"\n'
        '[[watch]]\nname = "app"\nimage = "xchem/app"\ntag = "latest"\n'
        '[watch.action]\nkind = "awx"\nawx = "production"\ntemplate = "Deploy"\n'
    )
    for command in (("status",), ("history",), ("db", "upgrade")):
        assert _cli(config, *command).returncode == 0, command
    checked = _cli(config, "config", "check")
    assert checked.returncode == 0, checked.stderr
    [warning] = [line for line in checked.stderr.splitlines() if "warning" in line]
    assert warning == (
        "reconciler: warning: awx.production.token_file: cannot read 'nowhere/awx-token': No such file or "
        "directory; watch app will be observed but not acted on"
    )
    [watch] = json.loads(_cli(config, "status", "--json").stdout)["watches"]
    assert (
        watch["cannot_act"] == "cannot read 'nowhere/awx-token': No such file or directory (awx.production.token_file)"
    )


def test_config_check_in_json_says_everything_as_json(default_config: Path) -> None:
    result = _cli(default_config, "--log-format", "json", "config", "check")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    said = [(line["level"], "AWX_TOKEN" in line["message"], "GITHUB_TOKEN" in line["message"]) for line in lines]
    assert said == [("warning", True, False), ("warning", False, True), ("info", False, False)]
    assert lines[2]["message"].endswith("is valid")
