"""The sections around the watches: `[server]`, `[registries."HOST"]`, `[awx.NAME]`, and the database URL.
Each rejection names its key path; credentials in a URL are refused without echoing them."""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from pathlib import Path

from reconciler import errors, model
from reconciler.config import table as config_table
from reconciler.config.settings import (
    DEFAULT_MARKER,
    AwxSettings,
    GithubSettings,
    RegistrySettings,
    ServerSettings,
)
from reconciler.store import urls


def http_url(table: config_table.Table, name: str, *, required: bool, credentials: str) -> str | None:
    """An http(s) URL without credentials in it: they would be echoed in logs, errors and the database."""
    value = table.required(name) if required else table.text(name)
    if value is not None and "@" in value.partition("://")[2].split("/", 1)[0]:
        raise errors.ConfigError(f"{table.key(name)}: the URL must not carry a user name or password; {credentials}")
    if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise errors.ConfigError(f"{table.key(name)}: expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/") if value else None


def database(url: str, where: str, *, base: Path | None = None) -> str:
    """A database URL; with `base` (it came from the configuration file), a relative SQLite path is taken from the
    file's directory, so every command finds the same database wherever it is run from."""
    plain = urls.parse(url)
    if plain is not None:  # the usual spellings, read without SQLAlchemy (`status` starts faster); the driver is ours
        if base is None or plain.path is None or os.path.isabs(plain.path):
            return url
        return f"{url[: url.index('://')]}:///{os.path.abspath(base / plain.path)}"
    from sqlalchemy.engine import make_url  # noqa: PLC0415
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError  # noqa: PLC0415

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)  # never echo a password
        raise errors.ConfigError(f"{where}: {shown!r} is not a database URL such as sqlite:///reconciler.db") from None
    if parsed.drivername in ("postgres", "postgresql"):  # the usual spellings: through psycopg, which is installed
        parsed = parsed.set(drivername="postgresql+psycopg")
        url = parsed.render_as_string(hide_password=False)
    try:
        parsed.get_dialect().import_dbapi()
    except (ImportError, NoSuchModuleError):
        raise errors.ConfigError(
            f"{where}: no database driver for {parsed.drivername!r} is installed; "
            "use sqlite:///reconciler.db or postgresql+psycopg://…"
        ) from None
    name = parsed.database or ""
    if base is None or parsed.get_backend_name() != "sqlite" or name in ("", ":memory:") or "uri" in parsed.query:
        return url
    if os.path.isabs(os.path.expanduser(name)):
        return url
    return parsed.set(database=os.path.abspath(base / name)).render_as_string(hide_password=False)


def registries(table: config_table.Table | None) -> dict[str, RegistrySettings]:
    out: dict[str, RegistrySettings] = {}
    for host in table.data if table is not None else ():
        assert table is not None
        entry = table.table(host)
        assert entry is not None
        entry.path = f"registries.{json.dumps(host)}"
        entry.expect("url", "username_env", "username_file", "password_env", "password_file")
        found, missing = entry.secrets("username", "password")
        username, password = found["username"], found["password"]
        if not missing and (username is None) != (password is None):
            raise errors.ConfigError(f"{entry.path}: give both username and password, or neither")
        url = http_url(entry, "url", required=False, credentials="give them as username_env and password_env")
        key = model.DOCKER_HUB if host == "index.docker.io" else host.lower()
        if missing:  # only commands that ask this registry need them (reconcile, run); they refuse to start
            username = password = None
        out[key] = RegistrySettings(url=url, username=username, password=password, missing=missing)
    return out


def awx_servers(table: config_table.Table | None) -> dict[str, AwxSettings]:
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
        url = http_url(entry, "url", required=True, credentials="give token_env, or username_env and password_env")
        assert url is not None
        marker = entry.get("marker")
        if marker is None:
            marker = DEFAULT_MARKER
        if not isinstance(marker, str) or not re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]{0,99})?", marker):
            raise errors.ConfigError(
                f'{entry.key("marker")}: expected the name of an extra var (letters, digits, _), or "" for none, '
                f"got {marker!r}"
            )
        named = {s for s in ("token", "username", "password") if entry.text(f"{s}_env") or entry.text(f"{s}_file")}
        if ("token" in named) == ({"username", "password"} <= named):
            raise errors.ConfigError(f"{entry.path}: give token_env (or token_file), or username and password")
        # A secret named but not set holds back only the watches that act through this server: they are observed
        # and reported, and say which variable is missing; the commands that only read never need it.
        found, missing = entry.secrets("token", "username", "password")
        token, username, password = found["token"], found["username"], found["password"]
        settings = AwxSettings(
            url=url,
            token=token,
            username=username,
            password=password,
            timeout=entry.duration("timeout", timedelta(minutes=45)),
            poll=entry.duration("poll", timedelta(seconds=5)),
            marker=marker,
            missing=missing,
        )
        out[name] = settings
    return out


def github_servers(table: config_table.Table | None) -> dict[str, GithubSettings]:
    """`[github.NAME]`: the API (GitHub Enterprise: https://HOST/api/v3) and the token that dispatches."""
    out: dict[str, GithubSettings] = {}
    for name in table.data if table is not None else ():
        assert table is not None
        entry = table.table(name)
        assert entry is not None
        entry.expect("url", "token_env", "token_file", "timeout", "poll")
        url = http_url(entry, "url", required=False, credentials="give the token as token_env")
        if not entry.text("token_env") and not entry.text("token_file"):
            raise errors.ConfigError(f"{entry.path}: give token_env (or token_file): dispatching needs actions:write")
        found, missing = entry.secrets("token")
        timeout, poll = entry.duration("timeout", timedelta(minutes=45)), entry.duration("poll", timedelta(seconds=15))
        for key, value in (("timeout", timeout), ("poll", poll)):
            if value <= timedelta(0):
                raise errors.ConfigError(f"{entry.key(key)}: must be longer than 0s")
        out[name] = GithubSettings(
            url=url or "https://api.github.com", token=found["token"], timeout=timeout, poll=poll, missing=missing
        )
    return out


def server(top: config_table.Table) -> ServerSettings:
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
