"""`[[notify]]` tables: where notifications go, which events and watches each target wants, and how long a
delivery may take. Each rejection names its key path.

An Apprise URL embeds its tokens, so it is a secret: it is only ever named by `url_env` or `url_file`, and no
error echoes it. A webhook's URL may be written plainly (it is then checked like any other http(s) URL), and the
webhook must name the secret its body is signed with. A secret named but not to be had, or a variable that does not
hold a URL of the right kind, disables only its target.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import timedelta

from reconciler import errors, model
from reconciler.config import sections
from reconciler.config import table as config_table
from reconciler.config.settings import DEFAULT_NOTIFY_TIMEOUT, MissingSecret, NotifySettings, Secret

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_HTTP_URL = re.compile(r"https?://[^\s/]+(/\S*)?")
MAX_TIMEOUT = timedelta(minutes=5)
_EVENTS = ", ".join(e.value for e in model.Event)


def targets(table: config_table.Table, watch_names: Collection[str]) -> tuple[NotifySettings, ...]:
    """Every `[[notify]]` table of the file (`table` is the file's top level), in order; names are unique."""
    value = table.get("notify")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise errors.ConfigError("notify: expected [[notify]] tables")
    found: list[NotifySettings] = []
    for i, entry in enumerate(value):
        target = _target(config_table.Table(entry, f"notify[{i}]", table.env, table.base), watch_names)
        for j, earlier in enumerate(found):
            if earlier.name == target.name:
                raise errors.ConfigError(f"notify[{i}].name: {target.name!r} is already the name of notify[{j}]")
        found.append(target)
    return tuple(found)


def _target(table: config_table.Table, watch_names: Collection[str]) -> NotifySettings:
    table.expect(
        "name", "kind", "url", "url_env", "url_file", "secret_env", "secret_file", "events", "watches", "timeout"
    )
    name = table.required("name")
    if not _NAME.fullmatch(name):
        raise errors.ConfigError(
            f"{table.key('name')}: {name[:60]!r} must be letters, digits, '.', '_' or '-', starting with a letter "
            "or digit, at most 100 characters"
        )
    kind = _kind(table)
    if kind is model.NotifyKind.APPRISE:
        url, shown, missing = _apprise_url(table)
        for key in ("secret_env", "secret_file"):
            if table.has(key):
                raise errors.ConfigError(
                    f'{table.key(key)}: only a webhook (kind = "webhook") is signed; an Apprise target has no secret'
                )
        secret: Secret | None = None
    else:
        url, shown, missing = _webhook_url(table)
        if not table.has("secret_env") and not table.has("secret_file"):
            raise errors.ConfigError(
                f"{table.key('secret_env')}: required for a webhook, which is never sent unsigned; give secret_env "
                "(or secret_file) naming the secret its body is signed with"
            )
        found, secret_missing = table.secrets("secret")
        secret, missing = found["secret"], missing + secret_missing
    timeout = table.duration("timeout", DEFAULT_NOTIFY_TIMEOUT)
    if not timedelta(0) < timeout <= MAX_TIMEOUT:
        raise errors.ConfigError(f"{table.key('timeout')}: must be longer than 0s and at most 5m")
    route = model.Route(target=name, events=_events(table), watches=_watches(table, watch_names))
    return NotifySettings(
        name=name,
        kind=kind,
        url=url,
        shown=shown,
        secret=secret,
        route=route,
        timeout=timeout,
        missing=missing,
    )


def _kind(table: config_table.Table) -> model.NotifyKind:
    value = table.get("kind")
    if value is None:
        return model.NotifyKind.APPRISE
    if isinstance(value, str) and value in tuple(model.NotifyKind):
        return model.NotifyKind(value)
    allowed = ", ".join(f'"{k.value}"' for k in model.NotifyKind)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    raise errors.ConfigError(f"{table.key('kind')}: expected one of {allowed}, got {shown}")


def _secret_url(
    table: config_table.Table, pattern: re.Pattern[str], what: str
) -> tuple[Secret | None, str, tuple[MissingSecret, ...]]:
    """The URL named by `url_env` or `url_file` (exactly one), checked against `pattern` without being echoed."""
    variable, file = table.text("url_env"), table.text("url_file")
    if variable is None and file is None:
        raise errors.ConfigError(f"{table.key('url_env')}: required; give url_env (or url_file) naming {what}")
    found, missing = table.secrets("url")  # refuses both
    url = found["url"]
    shown = f"${variable}" if variable else str(file)
    if url is not None and not pattern.fullmatch(url.reveal()):  # not this file's mistake: only its target stands aside
        key = table.key("url_env" if variable else "url_file")
        holder = f"{variable}" if variable else f"the file {file!r}"
        wrong = MissingSecret(key, str(variable or file), f"{holder} does not hold {what}")
        return None, shown, (*missing, wrong)
    return url, shown, missing


def _apprise_url(table: config_table.Table) -> tuple[Secret | None, str, tuple[MissingSecret, ...]]:
    if table.has("url"):
        raise errors.ConfigError(
            f"{table.key('url')}: an Apprise URL carries its service's tokens, so it is not written in the file; "
            "put it in an environment variable and name that with url_env (or put it in a file, url_file)"
        )
    return _secret_url(table, _ANY_URL, "an Apprise URL (scheme://…, such as slack://… or mailto://…)")


def _webhook_url(table: config_table.Table) -> tuple[Secret | None, str, tuple[MissingSecret, ...]]:
    if not table.has("url"):
        return _secret_url(table, _HTTP_URL, "an http:// or https:// URL")
    if table.has("url_env") or table.has("url_file"):
        raise errors.ConfigError(f"{table.key('url')}: give url or url_env (or url_file), not both")
    value = table.get("url")
    if isinstance(value, str) and _ANY_URL.fullmatch(value) and not re.match(r"https?://", value):
        # Not echoed: an Apprise URL (slack://…) given to a webhook by mistake carries tokens.
        raise errors.ConfigError(
            f"{table.key('url')}: a webhook needs an http:// or https:// URL; for an Apprise URL leave out "
            'kind = "webhook" and name it with url_env'
        )
    url = sections.http_url(
        table, "url", required=True, credentials="name a URL that must carry them with url_env instead"
    )
    assert url is not None
    return Secret(url, source=table.key("url")), url, ()


def _events(table: config_table.Table) -> frozenset[model.Event]:
    value = table.get("events")
    if value is None:
        return model.DEFAULT_EVENTS
    if not isinstance(value, list) or not value:
        got = "an empty array" if value == [] else config_table.kind(value)
        raise errors.ConfigError(f"{table.key('events')}: expected an array of event names ({_EVENTS}), got {got}")
    events: set[model.Event] = set()
    for item in value:
        if not isinstance(item, str) or item not in tuple(model.Event):
            shown = repr(item) if len(repr(item)) <= 40 else repr(item)[:37] + "..."
            raise errors.ConfigError(f"{table.key('events')}: unknown event {shown} (known: {_EVENTS})")
        events.add(model.Event(item))
    return frozenset(events)


def _watches(table: config_table.Table, watch_names: Collection[str]) -> frozenset[str] | None:
    value = table.get("watches")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        got = "an empty array" if value == [] else config_table.kind(value)
        raise errors.ConfigError(
            f"{table.key('watches')}: expected an array of watch names (leave it out for all), got {got}"
        )
    for item in value:
        if not isinstance(item, str) or item not in watch_names:
            shown = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
            known = ", ".join(watch_names) or "none"
            raise errors.ConfigError(f"{table.key('watches')}: no [[watch]] named {shown} (watches: {known})")
    return frozenset(value)
