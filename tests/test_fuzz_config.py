"""Property-based fuzzing of the configuration boundary: whatever `config.toml` and the environment hold, loading
it gives settings or one `ConfigError` in one line naming the file, and `reconciler config check` exits 0 or 2
with one line on stderr, never a traceback. Every crash a fuzz run once found is kept as an `@example`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reconciler import cli, config, errors
from tests.support import fuzzing

BASE = """
[reconciler]
{reconciler}

[server]
listen = "127.0.0.1:8080"

[awx.production]
url = "https://awx.example.org"
token_env = "AWX_TOKEN"
{awx}

[[watch]]
name = "staging"
image = "xchem/fragalysis-stack"
{selector}
{watch}
[watch.action]
kind = "awx"
awx = "production"
template = "Staging Fragalysis Stack"
{action}
"""
SECTIONS = ("reconciler", "awx", "watch", "action", "selector")
KEYS = {
    "reconciler": ["database", "interval", "jitter", "settle", "first_seen", "max_attempts", "lease", "bogus"],
    "awx": ["timeout", "poll", "marker", "username_file", "password_file"],
    "watch": ["interval", "jitter", "settle", "max_attempts", "first_seen"],
    "action": ["extra_vars", "workflow_template"],
    "selector": ["tag", "tags"],
}


def _toml(value: Any) -> str:
    """A TOML literal for a generated value (strings as JSON strings, which TOML reads as basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return '""'


durations = st.one_of(
    st.from_regex(r"\A[0-9]{1,16}(ms|s|m|h|d)\Z"), st.sampled_from(["0s", "99999999999999d", "1h30m", "5", "-1s"])
)
values = st.one_of(durations, fuzzing.json_values, fuzzing.huge_numbers, fuzzing.weird_text)
edits = st.dictionaries(
    st.sampled_from(SECTIONS),
    st.dictionaries(st.sampled_from(sorted({k for ks in KEYS.values() for k in ks})), values, max_size=3),
    max_size=3,
)
environments = st.dictionaries(
    st.sampled_from(["RECONCILER_MAX_ATTEMPTS", "RECONCILER_INTERVAL", "RECONCILER_FIRST_SEEN"]),
    st.one_of(st.sampled_from(["²", "3", "99999999999999999999", "5m"]), st.text(alphabet="0123456789²٣s", max_size=8)),
    max_size=2,
)


def _render(edit: dict[str, dict[str, Any]]) -> str:
    lines = {s: "\n".join(f"{k} = {_toml(v)}" for k, v in edit.get(s, {}).items()) for s in SECTIONS}
    if not lines["selector"]:
        lines["selector"] = 'tag = "latest"'
    return BASE.format(**lines)


def _check(path: Path, env: dict[str, str]) -> None:
    try:
        config.load(path, env={"AWX_TOKEN": "t", **env})
    except errors.ConfigError as exc:
        assert fuzzing.one_line(str(exc)), repr(str(exc))
        assert str(exc).startswith(str(path))


@fuzzing.examples(150)
@given(edit=edits, env=environments)
@example(edit={"reconciler": {"settle": "99999999999999d"}}, env={})  # past timedelta's range
@example(edit={"reconciler": {"interval": "999999999d"}}, env={})  # accepted once; APScheduler died later
@example(edit={"watch": {"jitter": "999999999d"}}, env={})
@example(edit={"selector": {"tags": {"pattern": "a{4294967296}"}}}, env={})  # OverflowError, not re.error
@example(edit={"selector": {"tags": {"range": ">=1" + "0" * 5000}}}, env={})  # past the int-string limit
@example(edit={"awx": {"username_file": "x\x00y", "password_file": "p"}}, env={})  # a NUL in a path
@example(edit={"awx": {"username_file": "~nosuchuser/x", "password_file": "p"}}, env={})
@example(edit={"awx": {"username_file": "p", "password_file": "p"}}, env={})  # a secret file that is not UTF-8
@example(edit={}, env={"RECONCILER_MAX_ATTEMPTS": "²"})  # isdigit() is true, int() refuses it
@example(edit={"reconciler": {"database": "mysql://db/reconciler"}}, env={})  # a driver that is not installed
@example(edit={"reconciler": {"max_attempts": 10**40}}, env={})
def test_any_configuration_loads_or_is_refused_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, edit: dict[str, dict[str, Any]], env: dict[str, str]
) -> None:
    folder = tmp_path_factory.mktemp("config")
    (folder / "p").write_bytes(b"\xff\xfe not utf-8")  # a secret file that is not UTF-8
    path = folder / "config.toml"
    path.write_text(_render(edit), encoding="utf-8")
    _check(path, env)


@fuzzing.examples(40)
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
@example(raw=b"a = " + b"[" * 500 + b"]" * 500)  # TOML nested 500 deep
@example(raw=b"a = " + b"{b = " * 500 + b"1" + b"}" * 500)
@example(raw=b"\xff\xfe")
def test_any_file_loads_or_is_refused_in_one_line(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("config") / "config.toml"
    path.write_bytes(raw)
    _check(path, {})


@pytest.mark.parametrize(
    "text",
    [
        '[reconciler]\nsettle = "99999999999999d"\n',
        "a = " + "[" * 500 + "]" * 500 + "\n",
        '[reconciler]\ninterval = "999999999d"\n',
        '[reconciler]\ndatabase = "mysql://db/reconciler"\n',
    ],
)
def test_config_check_exits_2_with_one_line(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    for name in [n for n in os.environ if n.startswith("RECONCILER_")]:
        monkeypatch.delenv(name)
    assert cli.main(["--config", str(path), "config", "check"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("reconciler: ") and "Traceback" not in err
