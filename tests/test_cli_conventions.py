"""The command line in the conventions of kubectl and flux: global options before or after the command, help with
defaults, examples and exit codes, repeatable `--watch`, `--dry-run` exit codes in the style of
`git diff --exit-code`, each failure said once, a JSON final error line with `--log-format json`, and counts in
good grammar. Real processes (or `cli.main` in-process where only the output matters), the real registry, the
fake AWX; tests wait for the other process to do something, never for time to pass."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler import cli
from tests.fakes.awx import FakeAwx
from tests.support import rows
from tests.support.awx_scenario import PRODUCTION, STAGING, TOKEN
from tests.support.daemon import wait_until
from tests.support.registry import LocalRegistry, free_port, push_schema2

_SCRUBBED = ("RECONCILER_", "AWX_", "DOCKERHUB_")
UNREACHABLE = "http://127.0.0.1:9"

HEAD = """
[reconciler]
database = "{database}"

[registries."docker.io"]
url = "{registry}"

[awx.production]
url = "{awx}"
token_env = "TEST_AWX_TOKEN"
poll = "10ms"
"""

AWX_WATCH = """
[[watch]]
name = "{name}"
image = "{image}"
{selector}
[watch.action]
kind = "awx"
awx = "production"
template = "{template}"
extra_vars = {{ stack_image_tag = "{{tag}}" }}
"""

PLAIN_WATCH = """
[[watch]]
name = "{name}"
image = "{image}"
tag = "latest"
"""

Run = Callable[..., tuple[int, str, str]]


def _config(
    tmp_path: Path,
    *,
    repo: str,
    registry: str = UNREACHABLE,
    awx: str = UNREACHABLE,
    watches: tuple[str, ...] = ("staging", "production", "frontend"),
    name: str = "config.toml",
) -> Path:
    """A configuration of `watches` among staging (`repo`:latest, AWX), production (`repo`, release tags, AWX),
    frontend (`repo`-frontend:latest, observed only) and plain watches named anything else (`repo`-NAME:latest)."""
    text = HEAD.format(database=f"sqlite:///{tmp_path}/r.db", registry=registry, awx=awx)
    for watch in watches:
        if watch == "staging":
            text += AWX_WATCH.format(name=watch, image=repo, selector='tag = "latest"', template=STAGING)
        elif watch == "production":
            text += AWX_WATCH.format(name=watch, image=repo, selector='tags = "release"', template=PRODUCTION)
        else:
            text += PLAIN_WATCH.format(name=watch, image=f"{repo}-{watch}")
    path = tmp_path / name
    path.write_text(text)
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    return {**env, "TEST_AWX_TOKEN": TOKEN, "COLUMNS": "200"}


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=cwd,
        timeout=120,
    )


def _seed(registry: LocalRegistry, repo: str) -> None:
    push_schema2(registry.base, f"{repo}-frontend", "latest", label="front")
    push_schema2(registry.base, repo, "1.0.0", label="rel")
    push_schema2(registry.base, repo, "latest", label="one")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """`reconciler ARGS…` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("TEST_AWX_TOKEN", TOKEN)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in document["watches"]}


# --- 1. global options before or after the command ---------------------------------------------------------------


def test_global_options_are_taken_after_the_command_too_and_win_there(tmp_path: Path) -> None:
    path = _config(tmp_path, repo="cli/global", watches=("frontend",))
    config = str(path)

    status = _cli("status", "--config", config, "--log-level", "DEBUG", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "INFO reconciler.app: database: sqlite:///" in status.stderr and "frontend" in status.stdout

    after_wins = _cli("--config", str(tmp_path / "missing.toml"), "status", "--config", config, cwd=tmp_path)
    assert after_wins.returncode == 0, after_wins.stderr

    other = tmp_path / "other.db"
    upgraded = _cli("db", "upgrade", "--config", config, "--database", f"sqlite:///{other}", cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert other.exists() and f"database sqlite:///{other} is at revision" in upgraded.stdout

    between = _cli("--log-level", "error", "db", "--config", config, "upgrade", "--log-level", "info", cwd=tmp_path)
    assert between.returncode == 0, between.stderr
    assert "INFO reconciler.app: database:" in between.stderr

    checked = _cli("config", "check", "--config", config, "--log-format", "json", "--log-level", "info", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["watch"][0]["name"] == "frontend"
    assert json.loads(checked.stderr.splitlines()[0])["message"].startswith("database: sqlite:///")


# --- 2. help: defaults, examples, exit codes ----------------------------------------------------------------------

COMMANDS = [
    (),
    ("run",),
    ("reconcile",),
    ("status",),
    ("history",),
    ("retry",),
    ("db",),
    ("db", "upgrade"),
    ("config",),
    ("config", "check"),
]
EXIT_CODES = {
    "0": "in sync or its action succeeded",
    "1": "an action failed",
    "2": "bad configuration or usage",
    "3": "a watch could not be checked",
    "4": "another instance holds the lock",
    "5": "--dry-run: drift an action is due for",
    "130, 143": "interrupted",
    "141": "the output was closed",
}


def _options(help_text: str) -> dict[str, str]:
    """Each option of a --help page with its help, wrapped lines joined."""
    options: dict[str, str] = {}
    current = None
    for line in help_text.split("\n\n"):
        for row in line.splitlines():
            if re.match(r"^  -", row):
                current = row.split()[0].rstrip(",")
                options[current] = row
            elif current is not None and row.startswith("      "):
                options[current] += " " + row.strip()
            else:
                current = None
    return options


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "reconciler")
def test_every_help_shows_each_options_default_and_examples(command: tuple[str, ...]) -> None:
    done = _cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    options = _options(done.stdout)
    assert {"--config", "--database", "--log-level", "--log-format"} <= set(options), done.stdout
    for option, text in options.items():
        if option not in ("-h", "--version"):
            assert "(default: " in text, f"{option} says no default: {text}"
    assert "\nexamples:\n  reconciler " in done.stdout
    examples = done.stdout.split("\nexamples:\n")[1].split("\n\n")[0]
    assert all(line.strip().startswith("reconciler") for line in examples.splitlines())
    if command == ("history",):
        assert "(default: 50)" in options["--limit"]


@pytest.mark.parametrize("command", [(), ("reconcile",)], ids=["reconciler", "reconcile"])
def test_the_help_of_reconciler_and_of_reconcile_lists_the_exit_codes(command: tuple[str, ...]) -> None:
    done = _cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    codes = done.stdout.split("\nexit codes:\n")[1]
    listed = {m.group(1): m.group(2) for m in re.finditer(r"^  (\d+(?:, \d+)?) +(.+)$", codes, re.MULTILINE)}
    assert set(listed) == set(EXIT_CODES)
    for code, meaning in EXIT_CODES.items():
        assert meaning in listed[code]
    assert {cli.EXIT_OK, cli.EXIT_ACTION_FAILED, cli.EXIT_CONFIG, cli.EXIT_UNCHECKED, cli.EXIT_LOCKED} == {
        0,
        1,
        2,
        3,
        4,
    }
    assert cli.EXIT_WOULD_ACT == 5


# Each command's own codes, from cli.main, cli._exit_code and its cmd_*.
COMMAND_EXIT_CODES = {
    ("run",): {"0", "1", "2", "130, 143"},
    ("status",): {"0", "1", "2", "130", "141"},
    ("history",): {"0", "1", "2", "130", "141"},
    ("retry",): {"0", "1", "2", "130"},
    ("db",): {"0", "1", "2", "130"},
    ("db", "upgrade"): {"0", "1", "2", "130"},
    ("config",): {"0", "2", "141"},
    ("config", "check"): {"0", "2", "141"},
}
REPOSITORY_CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def _help_at_80_columns(command: tuple[str, ...]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *command, "--help"],
        capture_output=True,
        text=True,
        env={**_env(), "COLUMNS": "80"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


def _examples(help_text: str) -> list[str]:
    return [line.strip() for line in help_text.split("\nexamples:\n")[1].split("\n\n", maxsplit=1)[0].splitlines()]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "reconciler")
def test_every_help_fits_80_columns_lists_exit_codes_and_names_the_watches_of_config_toml(
    command: tuple[str, ...],
) -> None:
    text = _help_at_80_columns(command)
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long, "\n".join(too_long)
    assert "\nexit codes:\n" in text
    codes = text.split("\nexit codes:\n")[1]
    listed = set(re.findall(r"^  (\d+(?:, \d+)?) +\S", codes, re.MULTILINE))
    assert listed == COMMAND_EXIT_CODES.get(command, set(EXIT_CODES)), codes

    watches = {w["name"] for w in tomllib.loads(REPOSITORY_CONFIG.read_text())["watch"]}
    named = [
        name
        for example in _examples(text)
        for name in re.findall(r"(?:--watch[ =]|^reconciler retry )([^\s-]\S*)", example)
    ]
    assert set(named) <= watches, f"examples name watches config.toml does not have: {set(named) - watches}"
    if command in ((), ("reconcile",), ("status",), ("history",), ("retry",)):
        assert named, "an example names a watch"


def test_the_examples_that_read_the_default_configuration_work_with_it(tmp_path: Path) -> None:
    """Every example of status, history, retry and config check that takes ./config.toml, run beside a copy of the
    repository's config.toml (a fresh database beside it, the AWX token unset)."""
    shutil.copy(REPOSITORY_CONFIG, tmp_path / "config.toml")
    ran = 0
    for command in (("status",), ("history",), ("retry",), ("config", "check")):
        for example in _examples(_help_at_80_columns(command)):
            args = example.split()[1:]
            if "--config" in args or "--database" in args:
                continue
            done = _cli(*args, cwd=tmp_path)
            assert done.returncode == 0, f"{example}: {done.stderr}"
            ran += 1
    assert ran >= 6


# --- 3. history --watch, repeatable -------------------------------------------------------------------------------


def test_history_takes_several_watches_and_names_an_unknown_one(
    registry: LocalRegistry, runner: Run, tmp_path: Path, awx: FakeAwx
) -> None:
    repo = "cli/history-many"
    _seed(registry, repo)
    path = str(_config(tmp_path, repo=repo, registry=registry.base, awx=awx.base))
    assert runner("--config", path, "reconcile")[0] == cli.EXIT_OK  # every watch: baseline
    push_schema2(registry.base, repo, "latest", label="two")
    push_schema2(registry.base, repo, "1.0.1", label="rel2")
    code, _, err = runner("--config", path, "reconcile")
    assert code == cli.EXIT_OK, err
    assert len(awx.launches) == 2

    code, out, _ = runner("--config", path, "history", "--json", "--watch", "staging", "--watch", "production")
    assert code == cli.EXIT_OK
    events = json.loads(out)["events"]
    assert {e["watch"] for e in events} == {"staging", "production"}
    assert {e["watch"] for e in events if e["type"] == "action"} == {"staging", "production"}
    assert sum(1 for e in events if e["type"] == "observation") == 4  # baseline and drift of each

    code, out, _ = runner("--config", path, "history", "--json", "--watch", "frontend", "--watch", "staging")
    assert code == cli.EXIT_OK
    assert sorted(e["watch"] for e in json.loads(out)["events"]) == ["frontend", "staging", "staging", "staging"]

    code, out, _ = runner(
        "--config", path, "history", "--json", "--watch", "production", "--watch", "staging", "--limit", "3"
    )
    assert code == cli.EXIT_OK
    limited = json.loads(out)["events"]
    assert len(limited) == 3 and [e["at"] for e in limited] == sorted((e["at"] for e in limited), reverse=True)

    for args in (("--watch", "staging", "--watch", "nosuch"), ("--watch", "nosuch", "--watch", "staging")):
        code, out, err = runner("--config", path, "history", *args)
        assert code == cli.EXIT_CONFIG and out == ""
        assert "no watch named 'nosuch'" in err


# --- 4. --dry-run: 0 nothing to do, 5 an action would be taken, 3 wins ---------------------------------------------


def test_a_dry_run_exits_5_when_an_action_would_be_taken_and_0_when_none_would(
    registry: LocalRegistry, runner: Run, tmp_path: Path, awx: FakeAwx
) -> None:
    repo = "cli/dry-exit"
    _seed(registry, repo)
    path = str(_config(tmp_path, repo=repo, registry=registry.base, awx=awx.base))
    assert runner("--config", path, "reconcile")[0] == cli.EXIT_OK
    code, out, err = runner("--config", path, "reconcile", "--dry-run")
    assert code == cli.EXIT_OK, err
    assert "dry run, nothing written" in out

    push_schema2(registry.base, repo, "latest", label="two")
    code, out, err = runner("--config", path, "reconcile", "--dry-run", "--json")
    assert code == cli.EXIT_WOULD_ACT, err
    staging = _by_name(json.loads(out))["staging"]
    assert staging["decision"]["verdict"] == "drift" and staging["action"]["status"] == "would_act"
    code, out, _ = runner("--config", path, "reconcile", "--dry-run", "--watch", "staging")
    assert code == cli.EXIT_WOULD_ACT and "would act: awx production" in out
    assert runner("--config", path, "reconcile", "--dry-run", "--watch", "frontend")[0] == cli.EXIT_OK
    assert awx.launches == []

    unchecked = str(
        _config(tmp_path, repo=repo, registry=registry.base, awx=awx.base, watches=("staging", "ghost"), name="b.toml")
    )
    code, out, err = runner("--config", unchecked, "reconcile", "--dry-run", "--json")
    assert code == cli.EXIT_UNCHECKED, err  # a watch that could not be checked wins over what would be done
    assert _by_name(json.loads(out))["staging"]["action"]["status"] == "would_act"
    assert awx.launches == []


def test_a_dry_run_never_reports_an_earlier_actions_failure_as_its_own(
    registry: LocalRegistry, runner: Run, tmp_path: Path, awx: FakeAwx
) -> None:
    repo = "cli/dry-stale"
    _seed(registry, repo)
    path = str(_config(tmp_path, repo=repo, registry=registry.base, awx=awx.base, watches=("staging",)))
    assert runner("--config", path, "reconcile")[0] == cli.EXIT_OK
    push_schema2(registry.base, repo, "latest", label="two")
    awx.script(outcome="failed", polls=0)
    code, _, err = runner("--config", path, "reconcile")
    assert code == cli.EXIT_ACTION_FAILED, err
    assert [a["status"] for a in rows.actions(f"sqlite:///{tmp_path}/r.db")] == ["failed"]

    for args in ((), ("--json",)):
        code, out, err = runner("--config", path, "reconcile", "--dry-run", *args)
        assert code == cli.EXIT_OK, err  # the failed action waits for its back-off: nothing would be done now
        assert "action failed" not in err and "reconciler:" not in err
        assert "dry run, nothing written" in out or json.loads(out)["dry_run"] is True
    assert len(awx.launches) == 1


# --- 5. each failure is said once -----------------------------------------------------------------------------------


def test_a_registry_failure_is_said_once_per_watch(tmp_path: Path) -> None:
    path = _config(tmp_path, repo="cli/unreachable", watches=("frontend", "backend"))
    done = _cli("--config", str(path), "reconcile", cwd=tmp_path)
    assert done.returncode == cli.EXIT_UNCHECKED, done.stderr
    lines = done.stderr.splitlines()
    assert not [line for line in lines if line.startswith("reconciler: watch ")], done.stderr
    for name in ("frontend", "backend"):
        said = [line for line in lines if f"watch {name}:" in line]
        assert len(said) == 1 and "cannot reach registry docker.io" in said[0], done.stderr
    assert "frontend" in done.stdout and "backend" in done.stdout  # the table still has the row


def test_an_action_failure_is_said_once(registry: LocalRegistry, runner: Run, tmp_path: Path, awx: FakeAwx) -> None:
    repo = "cli/fail-once"
    _seed(registry, repo)
    path = str(_config(tmp_path, repo=repo, registry=registry.base, awx=awx.base, watches=("staging",)))
    assert runner("--config", path, "reconcile")[0] == cli.EXIT_OK
    push_schema2(registry.base, repo, "latest", label="two")
    awx.script(outcome="failed", polls=0)
    code, out, err = runner("--config", path, "reconcile")
    assert code == cli.EXIT_ACTION_FAILED
    said = [line for line in err.splitlines() if "watch staging" in line]
    assert len(said) == 1 and "reconciler: watch" not in said[0], err
    assert "action #1 failed" in out


# --- 6. with --log-format json, the final error line is JSON too --------------------------------------------------


def _json_error(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in done.stderr
    entry: dict[str, Any] = json.loads(done.stderr.splitlines()[-1])
    assert set(entry) == {"time", "level", "logger", "message"}
    assert entry["level"] == "error" and entry["logger"] == "reconciler"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", entry["time"])
    return entry


@pytest.mark.parametrize(
    "args",
    [
        ("--log-format", "json", "status", "--watch", "nosuch"),
        ("status", "--watch", "nosuch", "--log-format", "json"),
        ("--log-format", "json", "history", "--watch", "frontend", "--watch", "nosuch"),
    ],
    ids=["before", "after", "history"],
)
def test_with_log_format_json_the_error_line_is_json(tmp_path: Path, args: tuple[str, ...]) -> None:
    path = _config(tmp_path, repo="cli/json-error", watches=("frontend",))
    done = _cli("--config", str(path), *args, cwd=tmp_path)
    assert done.returncode == cli.EXIT_CONFIG
    assert _json_error(done)["message"].startswith("no watch named 'nosuch'")

    text = _cli("--config", str(path), "status", "--watch", "nosuch", cwd=tmp_path)
    assert text.returncode == cli.EXIT_CONFIG
    assert text.stderr.startswith("reconciler: no watch named 'nosuch'")


def test_with_log_format_json_a_missing_configuration_and_a_closed_pipe_are_json(tmp_path: Path) -> None:
    missing = _cli("status", "--config", str(tmp_path / "missing.toml"), "--log-format", "json", cwd=tmp_path)
    assert missing.returncode == cli.EXIT_CONFIG
    assert "configuration file not found" in _json_error(missing)["message"]

    path = _config(tmp_path, repo="cli/pipe", watches=tuple(f"w{i}" for i in range(50)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "--log-format", "json", "--config", str(path), "status", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    proc.stdout.close()  # the reader is gone before anything is written
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141, err
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    assert _json_error(done)["message"] == "the output was closed before all of it was written"


@pytest.mark.parametrize(
    ("args", "said", "see"),
    [
        (("--log-format", "json", "status", "--bogus"), "unrecognized arguments: --bogus", "reconciler status"),
        (("status", "--log-format", "json", "--bogus"), "unrecognized arguments: --bogus", "reconciler status"),
        (
            ("--log-format=json", "history", "--limit", "0"),
            "argument --limit: expected a whole number",
            "reconciler history",
        ),
        (("--log-format", "json"), "the following arguments are required: COMMAND", "reconciler"),
        (("db", "upgrade", "--bogus", "--log-format=json"), "unrecognized arguments: --bogus", "reconciler db upgrade"),
        (("--log-format", "json", "config"), "the following arguments are required: COMMAND", "reconciler config"),
        (
            ("--log-format", "json", "--log-level", "loud", "status"),
            "argument --log-level: invalid choice",
            "reconciler",
        ),
    ],
    ids=["before", "after", "history-limit", "no-command", "db-upgrade", "config", "log-level"],
)
def test_with_log_format_json_a_usage_error_is_one_json_line(
    tmp_path: Path, args: tuple[str, ...], said: str, see: str
) -> None:
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == cli.EXIT_CONFIG
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    message = _json_error(done)["message"]
    assert message.startswith(said) and message.endswith(f" (see {see} --help)"), message


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--bogus"),
        ("--log-format", "text", "history", "--limit", "0"),
        ("--log-format", "json", "status", "--log-format", "text", "--bogus"),  # the last one given wins
    ],
    ids=["default", "text", "json-then-text"],
)
def test_without_log_format_json_a_usage_error_is_argparses_text(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == cli.EXIT_CONFIG and done.stdout == ""
    assert done.stderr.startswith("usage: reconciler")
    assert re.search(r"^reconciler( \w+)?: error: ", done.stderr, re.MULTILINE), done.stderr


# --- 7. counts in good grammar ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2])
def test_counts_are_grammatical_in_a_one_and_a_two_watch_run(
    registry: LocalRegistry, runner: Run, tmp_path: Path, count: int
) -> None:
    repo = f"cli/grammar-{count}"
    names = ("frontend", "backend")[:count]
    for name in names:
        push_schema2(registry.base, f"{repo}-{name}", "latest", label=name)
    path = _config(tmp_path, repo=repo, registry=registry.base, watches=names)
    plural = {1: "1 watch", 2: "2 watches"}[count]

    code, out, err = runner("--config", str(path), "reconcile")
    assert code == cli.EXIT_OK, err
    assert f"checked {plural} in " in out

    port = free_port()
    path.write_text(
        path.read_text().replace("[registries.", f'[server]\nlisten = "127.0.0.1:{port}"\n\n[registries.', 1)
    )
    log = tmp_path / "run.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli", "run", "--config", str(path)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    try:
        serving = wait_until("the daemon to serve", lambda: re.search(r"serving on .*", log.read_text()))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert serving.group(0) == f"serving on 127.0.0.1:{port}; watches: {count}"
    assert not re.search(r"\b1 (watches|actions)\b", log.read_text())


def test_an_interrupted_run_names_two_open_actions_and_says_it_resumes_them(
    registry: LocalRegistry, tmp_path: Path, awx: FakeAwx
) -> None:
    repo = "cli/interrupted-two"
    _seed(registry, repo)
    path = _config(tmp_path, repo=repo, registry=registry.base, awx=awx.base, watches=("staging", "production"))
    assert _cli("--config", str(path), "reconcile").returncode == cli.EXIT_OK
    push_schema2(registry.base, repo, "latest", label="two")
    push_schema2(registry.base, repo, "1.0.1", label="rel2")
    awx.script(outcome="successful", polls=10**6)  # both jobs keep running
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli", "--config", str(path), "reconcile"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    database = f"sqlite:///{tmp_path}/r.db"
    wait_until("both launches", lambda: [a["status"] for a in rows.actions(database)] == ["launched", "launched"])
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT, err
    [interrupted] = [line for line in err.splitlines() if line.startswith("reconciler: interrupted: ")]
    assert interrupted.count("action #") == 2 and "is left launched" in interrupted
    assert "resumes them (a launched job is followed, never launched again)" in interrupted
