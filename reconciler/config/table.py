"""Reading one TOML table of the configuration: typed getters that name the key path in every error, the
up-front check for unknown keys, durations, and the `_env`/`_file` secret indirection.

Pure apart from reading the secret files and the environment mapping it is given.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from reconciler import errors, model

_DURATION = re.compile(r"(\d{1,12})(ms|s|m|h|d)")
MAX_DURATION = timedelta(days=3650)  # ten years: past it, datetime arithmetic (and APScheduler) overflow
MAX_INTEGER = 1_000_000
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_E = TypeVar("_E", model.FirstSeen, model.RolloutMode, model.OnDelete)


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value and where it came from; prints as its source, never its value."""

    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"<secret from {self.source}>"

    def reveal(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class MissingSecret:
    """A secret the configuration names but cannot have (a variable not set, a file not readable): the parts that
    need it stand aside; the commands that only read never need it."""

    key: str  # the key that names it, e.g. awx.production.token_env
    variable: str  # the environment variable (e.g. AWX_TOKEN), or the file as written
    what: str = ""  # what is wrong with it, e.g. "AWX_TOKEN is not set"

    def __post_init__(self) -> None:
        if not self.what:
            object.__setattr__(self, "what", f"{self.variable} is not set")

    def __str__(self) -> str:
        return f"{self.what} ({self.key})"


def duration_text(value: timedelta) -> str:
    """A duration as the configuration writes it: `90d`, `1h30m`, `45s` (what `parse_duration` reads back)."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n)


def parse_duration(text: object, path: str) -> timedelta:
    """`90s`, `5m`, `1h30m`, `250ms`, `2d`, at most ten years; plain numbers are refused so that units are never
    guessed."""
    if isinstance(text, str) and text and len(text) <= 100 and _DURATION.sub("", text) == "":
        seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text))
        if seconds > MAX_DURATION.total_seconds():
            raise errors.ConfigError(f"{path}: {text!r} is longer than the longest duration accepted, 3650d")
        return timedelta(seconds=seconds)
    shown = repr(text) if len(repr(text)) <= 60 else repr(text)[:57] + "..."
    raise errors.ConfigError(f'{path}: expected a duration such as "90s", "5m" or "1h", got {shown}')


@functools.lru_cache(maxsize=256)  # the same few key names, once per watch of a large configuration
def _shown(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)  # keeps odd keys on one line


class Table:
    """A TOML table being read: typed getters that name the key path, and a check for unknown keys."""

    def __init__(self, data: object, path: str, env: Mapping[str, str], base: Path) -> None:
        if not isinstance(data, dict):
            raise errors.ConfigError(f"{path}: expected a table, got {kind(data)}")
        self.data: dict[str, Any] = data
        self.path, self.env, self.base = path, env, base

    def key(self, name: str) -> str:
        shown = _shown(name)
        return f"{self.path}.{shown}" if self.path else shown

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def has(self, name: str) -> bool:
        return name in self.data

    def text(self, name: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.get(name)
        if value is None:
            if required:
                raise errors.ConfigError(f"{self.key(name)}: required, expected a string")
            return default
        if not isinstance(value, str) or not value.strip():
            raise errors.ConfigError(f"{self.key(name)}: expected a non-empty string, got {kind(value)}")
        return value

    def required(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def duration(self, name: str, default: timedelta) -> timedelta:
        value = self.get(name)
        return default if value is None else parse_duration(value, self.key(name))

    def integer(self, name: str, default: int, *, minimum: int) -> int:
        value = self.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_INTEGER:
            shown = repr(value) if len(repr(value)) <= 40 else f"a number of {len(str(value))} digits"
            raise errors.ConfigError(
                f"{self.key(name)}: expected a whole number from {minimum} to {MAX_INTEGER}, got {shown}"
            )
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise errors.ConfigError(f"{self.key(name)}: expected true or false, got {kind(value)}")
        return value

    def choice(self, name: str, enum: type[_E], default: _E) -> _E:
        value = self.get(name)
        if value is None:
            return default
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(f'"{e.value}"' for e in enum)
            raise errors.ConfigError(f"{self.key(name)}: expected one of {allowed}, got {value!r}") from None

    def table(self, name: str) -> Table | None:
        value = self.get(name)
        return None if value is None else Table(value, self.key(name), self.env, self.base)

    def secret(self, name: str, *, required: bool, default_env: str | None = None) -> Secret | None:
        """Resolve `<name>_env` or `<name>_file`; a secret named but absent is an error when `required`."""
        env_key, file_key = f"{name}_env", f"{name}_file"
        variable, file = self.text(env_key), self.text(file_key)
        if variable and file:
            raise errors.ConfigError(f"{self.key(env_key)}: give {env_key} or {file_key}, not both")
        variable = variable or (None if file else default_env)
        if variable:
            # A value set from a file (`export X=$(cat …)` keeps none, but a Kubernetes secret made with
            # --from-file, or an env file, often ends in a newline): no token or URL ends in one, and an HTTP header
            # holding it is refused before anything is sent.
            value = (self.env.get(variable) or "").rstrip("\r\n")
            if value:
                return Secret(value, f"${variable}")
            if required:
                raise errors.ConfigError(f"{self.key(env_key)}: environment variable {variable} is not set")
        if file:
            try:
                path = self.base / Path(file).expanduser()
                text = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise errors.ConfigError(f"{self.key(file_key)}: cannot read {file!r}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise errors.ConfigError(f"{self.key(file_key)}: {file!r} is not UTF-8 text") from None
            except (ValueError, RuntimeError) as exc:  # a NUL in the path; `~nosuchuser`
                raise errors.ConfigError(f"{self.key(file_key)}: cannot read {file!r}: {exc}") from None
            if not text:
                raise errors.ConfigError(f"{self.key(file_key)}: {path} is empty")
            return Secret(text, str(path))
        return None

    def secrets(self, *names: str) -> tuple[dict[str, Secret | None], tuple[MissingSecret, ...]]:
        """Resolve each `<name>_env` or `<name>_file` like `secret`, except that one named but not to be had (a
        variable not set, a file that cannot be read) is left None and reported as missing, not refused."""
        values: dict[str, Secret | None] = {}
        missing: list[MissingSecret] = []
        for name in names:
            variable, file = self.text(f"{name}_env"), self.text(f"{name}_file")
            if variable and not file and not (self.env.get(variable) or "").rstrip("\r\n"):
                values[name] = None
                missing.append(MissingSecret(self.key(f"{name}_env"), variable))
                continue
            try:
                values[name] = self.secret(name, required=False)
            except errors.ConfigError as exc:
                if not file or variable:  # "give one, not both" is a mistake in the file, not a missing secret
                    raise
                values[name] = None
                key = self.key(f"{name}_file")
                missing.append(MissingSecret(key, file, str(exc).removeprefix(f"{key}: ")))
        return values, tuple(missing)

    def expect(self, *names: str) -> Table:
        """Reject any key but these, before reading a value, so a misspelt key is named as such."""
        unknown = sorted(set(self.data) - set(names))
        if unknown:
            expected = ", ".join(sorted(names))
            raise errors.ConfigError(f"{self.key(unknown[0])}: unknown key (expected one of: {expected})")
        return self


def kind(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)
