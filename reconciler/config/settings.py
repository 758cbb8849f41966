"""The validated, frozen settings the configuration loads into, and their defaults. No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from reconciler import errors, model
from reconciler.config import table as config_table

Secret = config_table.Secret  # settings carry these; re-exported for their readers
MissingSecret = config_table.MissingSecret
DEFAULT_DATABASE = "sqlite:///reconciler.db"
DEFAULT_MARKER = "reconciler_action"
PLACEHOLDERS = ("image", "tag", "digest", "previous_tag", "previous_digest", "watch")
_SCHEDULE_KEYS = ("interval", "jitter", "settle", "first_seen", "max_attempts")
DEFAULT_NOTIFY_TIMEOUT = timedelta(seconds=10)
DEFAULT_KEEP = timedelta(days=90)
DEFAULT_INSTANCE = "default"


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
    missing: tuple[MissingSecret, ...] = ()  # named but unset: checks that need them cannot run


@dataclass(frozen=True, slots=True)
class AwxSettings:
    url: str
    token: Secret | None = None
    username: Secret | None = None
    password: Secret | None = None
    timeout: timedelta = timedelta(minutes=45)
    poll: timedelta = timedelta(seconds=5)
    marker: str = "reconciler_action"  # the extra var that names the action a launch belongs to; "" = none
    missing: tuple[MissingSecret, ...] = ()  # named but unset: the watches acting through this server do not act


@dataclass(frozen=True, slots=True)
class NotifySettings:
    """One `[[notify]]` target: where its notices go (an Apprise URL or our own signed webhook) and which it wants.

    The URL is a `Secret` whatever its kind, since Apprise URLs embed tokens; a plain webhook `url` is wrapped too,
    so consumers have one type. `shown` is how output may name the URL: the plain webhook URL, else `$VAR` or the
    file as written. A secret named but not to be had leaves `url` or `secret` None and is listed in `missing`:
    this target is disabled, nothing else is."""

    name: str
    kind: model.NotifyKind
    url: Secret | None  # None when missing
    shown: str
    secret: Secret | None  # the HMAC-SHA256 key of a webhook; None for Apprise, or when missing
    route: model.Route  # target = name; its events, and its watches (all when None)
    timeout: timedelta = DEFAULT_NOTIFY_TIMEOUT
    missing: tuple[MissingSecret, ...] = ()  # named but unset: this target is not sent to

    @property
    def cannot_send(self) -> str | None:
        """Why this target sends nothing (its missing secrets), or None."""
        return "; ".join(str(m) for m in self.missing) or None


@dataclass(frozen=True, slots=True)
class GithubSettings:
    """A GitHub (or GitHub Enterprise: `https://HOST/api/v3`) API and the token that dispatches workflows."""

    url: str = "https://api.github.com"
    token: Secret | None = None
    timeout: timedelta = timedelta(minutes=45)  # how long a run may take before it is cancelled
    poll: timedelta = timedelta(seconds=15)
    missing: tuple[MissingSecret, ...] = ()  # the token named but unset: the watches dispatching through it do not act


@dataclass(frozen=True, slots=True)
class Settings:
    source: str
    database: str = DEFAULT_DATABASE
    server: ServerSettings = ServerSettings()
    registries: Mapping[str, RegistrySettings] = field(default_factory=dict)
    awx: Mapping[str, AwxSettings] = field(default_factory=dict)
    github: Mapping[str, GithubSettings] = field(default_factory=dict)
    kube_context: str | None = None
    kube_poll: timedelta = timedelta(seconds=5)
    lease_ttl: timedelta = timedelta(seconds=60)
    keep: timedelta = DEFAULT_KEEP  # how long runs, observations and finished actions are kept (`db prune`)
    instance: str = DEFAULT_INSTANCE  # names the lease: daemons with disjoint watches may share one database
    watches: tuple[model.Watch, ...] = ()
    notify: tuple[NotifySettings, ...] = ()

    def missing_secrets(self) -> list[tuple[MissingSecret, list[str]]]:
        """Each secret named but unset, with the watches it holds back (those acting through, or checking at, it)."""
        found: list[tuple[MissingSecret, list[str]]] = []
        for name, awx in self.awx.items():
            users = [w.name for w in self.watches if isinstance(w.action, model.AwxAction) and w.action.server == name]
            found += [(m, users) for m in awx.missing]
        for name, github in self.github.items():
            users = [
                w.name for w in self.watches if isinstance(w.action, model.GithubAction) and w.action.server == name
            ]
            found += [(m, users) for m in github.missing]
        for host, registry in self.registries.items():
            users = [w.name for w in self.watches if w.image.registry == host]
            found += [(m, users) for m in registry.missing]
        return found

    def require_registry_secrets(self) -> None:
        """Checking a registry needs its credentials: commands that ask registries refuse to start without them."""
        for host, registry in self.registries.items():
            if registry.missing:
                missing = registry.missing[0]
                raise errors.ConfigError(
                    f"{self.source}: {missing.key}: {missing.what} (the credentials of registry {host})"
                )

    def watch(self, name: str) -> model.Watch:
        for w in self.watches:
            if w.name == name:
                return w
        known = ", ".join(w.name for w in self.watches) or "none"
        raise errors.ConfigError(f"no watch named {name!r} in {self.source} (watches: {known})")

    def select(self, names: Sequence[str]) -> tuple[model.Watch, ...]:
        """These watches, each once and in the order asked (every watch when none is named); an unknown name is a
        ConfigError."""
        if not names:
            return self.watches
        return tuple(self.watch(n) for n in dict.fromkeys(names))

    def notify_target(self, name: str) -> NotifySettings:
        for target in self.notify:
            if target.name == name:
                return target
        known = ", ".join(t.name for t in self.notify) or "none; add a [[notify]] table"
        raise errors.ConfigError(f"no notify target named {name!r} in {self.source} (targets: {known})")
