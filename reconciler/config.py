"""Configuration: defaults in code, then `config.toml`, then the environment, validated into frozen settings.

Every rejection is one `ConfigError` naming the key path (`watch[2].action.template`) and what was expected.
Secrets never sit in the file: a key ending in `_env` names an environment variable, one ending in `_file` names
a file; both are resolved here, once, into `Secret` values that never print themselves.
This module reads files and the environment it is given; it builds no clients.
"""

from __future__ import annotations

import json
import os
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from reconciler import config_table, errors, model

Secret = config_table.Secret  # settings carry these; re-exported for their readers
DEFAULT_DATABASE = "sqlite:///reconciler.db"
DEFAULT_MARKER = "reconciler_action"
PLACEHOLDERS = ("image", "tag", "digest", "previous_tag", "previous_digest", "watch")
_SCHEDULE_KEYS = ("interval", "jitter", "settle", "first_seen", "max_attempts")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: str = "127.0.0.1:8080"
    token: Secret | None = None
    webhook_secret: Secret | None = None


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """How to reach one registry host: an API URL override and optional credentials."""

    url: str | None = None
    username: Secret | None = None
    password: Secret | None = None


@dataclass(frozen=True, slots=True)
class AwxSettings:
    url: str
    token: Secret | None = None
    username: Secret | None = None
    password: Secret | None = None
    timeout: timedelta = timedelta(minutes=45)
    poll: timedelta = timedelta(seconds=5)
    marker: str = "reconciler_action"  # the extra var that names the action a launch belongs to; "" = none


@dataclass(frozen=True, slots=True)
class Settings:
    source: str
    database: str = DEFAULT_DATABASE
    server: ServerSettings = ServerSettings()
    registries: Mapping[str, RegistrySettings] = field(default_factory=dict)
    awx: Mapping[str, AwxSettings] = field(default_factory=dict)
    kube_context: str | None = None
    kube_poll: timedelta = timedelta(seconds=5)
    lease_ttl: timedelta = timedelta(seconds=60)
    watches: tuple[model.Watch, ...] = ()

    def watch(self, name: str) -> model.Watch:
        for w in self.watches:
            if w.name == name:
                return w
        known = ", ".join(w.name for w in self.watches) or "none"
        raise errors.ConfigError(f"no watch named {name!r} in {self.source} (watches: {known})")


def _url(table: config_table.Table, name: str, *, required: bool, credentials: str) -> str | None:
    """An http(s) URL without credentials in it: they would be echoed in logs, errors and the database."""
    value = table.required(name) if required else table.text(name)
    if value is not None and "@" in value.partition("://")[2].split("/", 1)[0]:
        raise errors.ConfigError(f"{table.key(name)}: the URL must not carry a user name or password; {credentials}")
    if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise errors.ConfigError(f"{table.key(name)}: expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/") if value else None


def _database(url: str, where: str, *, base: Path | None = None) -> str:
    """A database URL; with `base` (it came from the configuration file), a relative SQLite path is taken from the
    file's directory, so every command finds the same database wherever it is run from."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)  # never echo a password
        raise errors.ConfigError(f"{where}: {shown!r} is not a database URL such as sqlite:///reconciler.db") from None
    name = parsed.database or ""
    if base is None or parsed.get_backend_name() != "sqlite" or name in ("", ":memory:") or "uri" in parsed.query:
        return url
    if os.path.isabs(os.path.expanduser(name)):
        return url
    return parsed.set(database=os.path.abspath(base / name)).render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class _Defaults:
    interval: timedelta = timedelta(minutes=5)
    jitter: timedelta = timedelta(seconds=30)
    settle: timedelta = timedelta(0)
    first_seen: model.FirstSeen = model.FirstSeen.BASELINE
    max_attempts: int = 3


def _schedule(table: config_table.Table, inherited: _Defaults) -> _Defaults:
    interval = table.duration("interval", inherited.interval)
    if interval <= timedelta(0):
        raise errors.ConfigError(f"{table.key('interval')}: must be longer than 0s")
    return _Defaults(
        interval=interval,
        jitter=table.duration("jitter", inherited.jitter),
        settle=table.duration("settle", inherited.settle),
        first_seen=table.choice("first_seen", model.FirstSeen, inherited.first_seen),
        max_attempts=table.integer("max_attempts", inherited.max_attempts, minimum=1),
    )


def _env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> None:
    """`RECONCILER_<KEY>` overrides `[reconciler].<key>`; the values are then validated like the file's."""
    section = data.setdefault("reconciler", {})
    if not isinstance(section, dict):
        return
    for key in ("interval", "jitter", "settle"):
        if value := env.get(f"RECONCILER_{key.upper()}"):
            config_table.parse_duration(value, f"RECONCILER_{key.upper()}")
            section[key] = value
    if value := env.get("RECONCILER_FIRST_SEEN"):
        if value not in tuple(model.FirstSeen):
            allowed = ", ".join(f'"{e.value}"' for e in model.FirstSeen)
            raise errors.ConfigError(f"RECONCILER_FIRST_SEEN: expected one of {allowed}, got {value!r}")
        section["first_seen"] = value
    if value := env.get("RECONCILER_MAX_ATTEMPTS"):
        if not value.isdigit():
            raise errors.ConfigError(f"RECONCILER_MAX_ATTEMPTS: expected a whole number, got {value!r}")
        section["max_attempts"] = int(value)


def _template(value: object, path: str) -> str | int:
    if value is None:
        raise errors.ConfigError(f"{path}: required, expected a job template name or a numeric id")
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int)
        or value == ""
        or (isinstance(value, int) and value < 1)
    ):
        raise errors.ConfigError(f"{path}: expected a job template name or a numeric id >= 1, got {value!r}")
    return value


def _extra_vars(table: config_table.Table | None) -> dict[str, model.ExtraVar]:
    if table is None:
        return {}
    out: dict[str, model.ExtraVar] = {}
    for key, value in table.data.items():
        path = table.key(key)
        if not isinstance(value, str | int | float | bool):
            raise errors.ConfigError(f"{path}: expected a string, number or boolean, got {config_table.kind(value)}")
        if isinstance(value, str):
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
            except ValueError as exc:
                raise errors.ConfigError(f"{path}: {exc} in {value!r} (write {{{{ for a literal brace)") from None
            for name in fields:
                if name not in PLACEHOLDERS:
                    allowed = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                    raise errors.ConfigError(f"{path}: unknown placeholder {{{name}}} (known: {allowed})")
        out[key] = value
    return out


def _action(table: config_table.Table, awx: Mapping[str, AwxSettings]) -> model.Action:
    kind = table.required("kind")
    if kind == model.ActionKind.AWX:
        table.expect("kind", "awx", "template", "workflow_template", "extra_vars")
        server = table.required("awx")
        if server not in awx:
            known = ", ".join(f"[awx.{n}]" for n in awx) or "none"
            raise errors.ConfigError(f"{table.key('awx')}: no [awx.{server}] section (defined: {known})")
        if table.has("template") and table.has("workflow_template"):
            raise errors.ConfigError(f"{table.key('workflow_template')}: give template or workflow_template, not both")
        key = "workflow_template" if table.has("workflow_template") else "template"
        action: model.Action = model.AwxAction(
            server=server,
            template=_template(table.get(key), table.key(key)),
            extra_vars=_extra_vars(table.table("extra_vars")),
            workflow=key == "workflow_template",
        )
    elif kind == model.ActionKind.STATEFULSET:
        table.expect("kind", "namespace", "name", "container", "mode", "timeout", "on_delete")
        action = model.StatefulSetAction(
            namespace=table.required("namespace"),
            name=table.required("name"),
            container=table.required("container"),
            mode=table.choice("mode", model.RolloutMode, model.RolloutMode.RESTART),
            timeout=table.duration("timeout", timedelta(minutes=15)),
            on_delete=table.choice("on_delete", model.OnDelete, model.OnDelete.REPORT),
        )
    else:
        raise errors.ConfigError(f'{table.key("kind")}: expected "awx" or "statefulset", got {kind!r}')
    return action


def _selector(table: config_table.Table) -> model.Selector:
    if table.has("tag") == table.has("tags"):
        raise errors.ConfigError(f'{table.path}: give exactly one of tag = "latest" or tags = "release"')
    if table.has("tag"):
        tag = table.required("tag")
        try:
            return model.TagSelector(tag)
        except errors.ConfigError as exc:
            raise errors.ConfigError(f"{table.key('tag')}: {exc}") from None
    tags = table.get("tags")
    if tags == "release":
        return model.ReleaseSelector()
    if not isinstance(tags, dict):
        raise errors.ConfigError(f'{table.key("tags")}: expected "release" or a table {{pattern, range}}, got {tags!r}')
    rule = config_table.Table(tags, table.key("tags"), table.env, table.base).expect("pattern", "range")
    pattern = rule.text("pattern", model.RELEASE_PATTERN)
    assert pattern is not None
    version_range = rule.text("range")
    try:
        return model.ReleaseSelector(pattern=pattern, range=version_range)
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{rule.path}: {exc}") from None


def _watch(table: config_table.Table, defaults: _Defaults, awx: Mapping[str, AwxSettings]) -> model.Watch:
    table.expect("name", "image", "tag", "tags", "action", *_SCHEDULE_KEYS)
    name = table.required("name")
    image_text = table.required("image")
    try:
        image = model.ImageRef.parse(image_text)
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{table.key('image')}: {exc}") from None
    selector = _selector(table)
    schedule = _schedule(table, defaults)
    action_table = table.table("action")
    action = _action(action_table, awx) if action_table is not None else None
    try:
        return model.Watch(
            name=name,
            image=image,
            selector=selector,
            interval=schedule.interval,
            jitter=schedule.jitter,
            settle=schedule.settle,
            first_seen=schedule.first_seen,
            max_attempts=schedule.max_attempts,
            action=action,
        )
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{table.path}: {exc}") from None


def _registries(table: config_table.Table | None) -> dict[str, RegistrySettings]:
    out: dict[str, RegistrySettings] = {}
    for host in table.data if table is not None else ():
        assert table is not None
        entry = table.table(host)
        assert entry is not None
        entry.path = f"registries.{json.dumps(host)}"
        entry.expect("url", "username_env", "username_file", "password_env", "password_file")
        username = entry.secret("username", required=True)
        password = entry.secret("password", required=True)
        if (username is None) != (password is None):
            raise errors.ConfigError(f"{entry.path}: give both username and password, or neither")
        url = _url(entry, "url", required=False, credentials="give them as username_env and password_env")
        key = model.DOCKER_HUB if host == "index.docker.io" else host.lower()
        out[key] = RegistrySettings(url=url, username=username, password=password)
    return out


def _awx(table: config_table.Table | None) -> dict[str, AwxSettings]:
    out: dict[str, AwxSettings] = {}
    for name in table.data if table is not None else ():
        assert table is not None
        entry = table.table(name)
        assert entry is not None
        entry.expect(
            "url",
            "timeout",
            "poll",
            "marker",
            *(f"{s}_{k}" for s in ("token", "username", "password") for k in ("env", "file")),
        )
        url = _url(entry, "url", required=True, credentials="give token_env, or username_env and password_env")
        assert url is not None
        marker = entry.get("marker")
        if marker is None:
            marker = DEFAULT_MARKER
        if not isinstance(marker, str) or not re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]{0,99})?", marker):
            raise errors.ConfigError(
                f'{entry.key("marker")}: expected the name of an extra var (letters, digits, _), or "" for none, '
                f"got {marker!r}"
            )
        token = entry.secret("token", required=True)
        username = entry.secret("username", required=True)
        password = entry.secret("password", required=True)
        if (token is None) == (username is None or password is None):
            raise errors.ConfigError(f"{entry.path}: give token_env (or token_file), or username and password")
        settings = AwxSettings(
            url=url,
            token=token,
            username=username,
            password=password,
            timeout=entry.duration("timeout", timedelta(minutes=45)),
            poll=entry.duration("poll", timedelta(seconds=5)),
            marker=marker,
        )
        out[name] = settings
    return out


def _server(top: config_table.Table) -> ServerSettings:
    table = top.table("server") or config_table.Table({}, "server", top.env, top.base)
    table.expect("listen", "token_env", "token_file", "webhook_secret_env", "webhook_secret_file")
    listen = table.text("listen", "127.0.0.1:8080")
    assert listen is not None
    if not re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[^\s:]+):\d{1,5}", listen) or int(listen.rsplit(":", 1)[1]) > 65535:
        raise errors.ConfigError(f"{table.key('listen')}: expected host:port such as 127.0.0.1:8080, got {listen!r}")
    # Unset, these only disable the endpoints that need them; `reconcile` must not depend on them.
    server = ServerSettings(
        listen=listen,
        token=table.secret("token", required=False, default_env="RECONCILER_API_TOKEN"),
        webhook_secret=table.secret("webhook_secret", required=False, default_env="RECONCILER_WEBHOOK_SECRET"),
    )
    return server


def resolve_path(explicit: str | None, env: Mapping[str, str]) -> Path:
    return Path(explicit or env.get("RECONCILER_CONFIG") or "config.toml")


def load(path: Path, *, env: Mapping[str, str] | None = None, database: str | None = None) -> Settings:
    """Read and validate the configuration; `database` (from --database) wins over everything."""
    env = os.environ if env is None else env
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise errors.ConfigError(
            f"{path}: configuration file not found (give --config PATH or set RECONCILER_CONFIG)"
        ) from None
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise errors.ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.ConfigError(f"{path}: TOML syntax error: {exc}") from None
    _env_overrides(data, env)
    try:
        return _settings(data, path=path, env=env, database=database)
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{path}: {exc}") from None


def _settings(data: dict[str, Any], *, path: Path, env: Mapping[str, str], database: str | None) -> Settings:
    top = config_table.Table(data, "", env, path.parent).expect(
        "reconciler", "server", "registries", "awx", "kubernetes", "watch"
    )
    main = top.table("reconciler") or config_table.Table({}, "reconciler", env, path.parent)
    main.expect("database", "lease", *_SCHEDULE_KEYS)
    lease_ttl = main.duration("lease", timedelta(seconds=60))
    if lease_ttl < timedelta(seconds=3):
        raise errors.ConfigError("reconciler.lease: must be at least 3s")
    file_database = main.text("database", DEFAULT_DATABASE)
    assert file_database is not None
    defaults = _schedule(main, _Defaults())
    awx = _awx(top.table("awx"))
    kube = (top.table("kubernetes") or config_table.Table({}, "kubernetes", env, path.parent)).expect("context", "poll")
    context = kube.text("context")
    kube_poll = kube.duration("poll", timedelta(seconds=5))
    watch_list = top.get("watch") or []
    if not isinstance(watch_list, list):
        raise errors.ConfigError("watch: expected [[watch]] tables")
    watches = tuple(
        _watch(config_table.Table(w, f"watch[{i}]", env, path.parent), defaults, awx) for i, w in enumerate(watch_list)
    )
    seen: set[str] = set()
    for i, w in enumerate(watches):
        if w.name in seen:
            raise errors.ConfigError(f"watch[{i}].name: {w.name!r} is used by another watch")
        seen.add(w.name)
    base = Path(os.path.abspath(path)).parent
    settings = Settings(
        source=str(path),
        database=_database(database, "--database")
        if database
        else (
            _database(env["RECONCILER_DATABASE_URL"], "RECONCILER_DATABASE_URL")
            if env.get("RECONCILER_DATABASE_URL")
            else _database(file_database, "reconciler.database", base=base)
        ),
        server=_server(top),
        registries=_registries(top.table("registries")),
        awx=awx,
        kube_context=context,
        kube_poll=kube_poll,
        lease_ttl=lease_ttl,
        watches=watches,
    )
    return settings
