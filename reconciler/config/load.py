"""Reading `config.toml`: defaults in code, then the file, then the environment, into `Settings`."""

from __future__ import annotations

import marshal
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from reconciler import errors, model
from reconciler.config import cache, notify, sections, watches
from reconciler.config import table as config_table
from reconciler.config.settings import DEFAULT_DATABASE, DEFAULT_INSTANCE, DEFAULT_KEEP, Settings

_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MIN_KEEP = timedelta(hours=1)


OVERRIDES = tuple(f"RECONCILER_{key.upper()}" for key in watches.SCHEDULE_KEYS)


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
        if not re.fullmatch(r"[0-9]{1,7}", value):  # not isdigit(): "²" is a digit that int() refuses
            raise errors.ConfigError(f"RECONCILER_MAX_ATTEMPTS: expected a whole number, got {value[:40]!r}")
        section["max_attempts"] = int(value)


def resolve_path(explicit: str | None, env: Mapping[str, str]) -> Path:
    return Path(explicit or env.get("RECONCILER_CONFIG") or "config.toml")


def load(
    path: Path,
    *,
    env: Mapping[str, str] | None = None,
    database: str | None = None,
    only: Sequence[str] | None = None,
) -> Settings:
    """Read and validate the configuration; `database` (from --database) wins over everything. Given `only` (some
    watch names), a large configuration known valid (`cache`) builds only those watches: every other part is
    read and checked as always."""
    env = os.environ if env is None else env
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise errors.ConfigError(
            f"{path}: configuration file not found (give --config PATH or set RECONCILER_CONFIG)"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise errors.ConfigError(f"{path}: cannot read the configuration: {getattr(exc, 'strerror', exc)}") from None
    kept = cache.key(raw, env, OVERRIDES) if len(raw) >= cache.SMALLEST else None
    data = cache.read(kept, env) if kept else None
    blob = None
    if data is None:
        only = None  # not known valid: every watch is checked
        data = _parsed(raw, path)
        blob = _kept(data) if kept else None  # before the overrides change it
    try:
        _env_overrides(data, env)
        settings = _settings(data, path=path, env=env, database=database, only=only)
        if kept and blob is not None:
            cache.write(kept, blob, env)
        return settings
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{path}: {exc}") from None
    except (ValueError, OverflowError, RecursionError, UnicodeError, LookupError, TypeError) as exc:
        # The net under the checks above: whatever else a value does to a library, one line, never a traceback.
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise errors.ConfigError(f"{path}: a value cannot be used ({type(exc).__name__}: {reason})") from None


def _kept(data: dict[str, Any]) -> bytes | None:
    """What `cache` keeps of a parsed configuration; None for one marshal cannot write (a TOML date or time, which
    no key accepts: the checks that follow say where)."""
    try:
        return marshal.dumps(data)
    except ValueError:
        return None


def _parsed(raw: bytes, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise errors.ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.ConfigError(f"{path}: TOML syntax error: {exc}") from None
    except RecursionError:
        raise errors.ConfigError(f"{path}: TOML nested too deep to read") from None


def _settings(
    data: dict[str, Any], *, path: Path, env: Mapping[str, str], database: str | None, only: Sequence[str] | None
) -> Settings:
    top = config_table.Table(data, "", env, path.parent).expect(
        "reconciler", "server", "registries", "awx", "github", "kubernetes", "watch", "notify"
    )
    main = top.table("reconciler") or config_table.Table({}, "reconciler", env, path.parent)
    main.expect("database", "lease", "keep", "instance", *watches.SCHEDULE_KEYS)
    lease_ttl = main.duration("lease", timedelta(seconds=60))
    if lease_ttl < timedelta(seconds=3):
        raise errors.ConfigError("reconciler.lease: must be at least 3s")
    keep = main.duration("keep", DEFAULT_KEEP)
    if keep < MIN_KEEP:  # the hour's runs row, and an action a launch's lost answer is looked up against
        raise errors.ConfigError("reconciler.keep: must be at least 1h")
    instance = main.text("instance", DEFAULT_INSTANCE)
    assert instance is not None
    if not _INSTANCE.fullmatch(instance):
        raise errors.ConfigError(
            f"reconciler.instance: expected a name of letters, digits, '.', '_' or '-' (at most 63), got "
            f"{instance[:70]!r}"
        )
    file_database = main.text("database", DEFAULT_DATABASE)
    assert file_database is not None
    defaults = watches.schedule_of(main, watches.Defaults())
    awx = sections.awx_servers(top.table("awx"))
    github = sections.github_servers(top.table("github"))
    kube = (top.table("kubernetes") or config_table.Table({}, "kubernetes", env, path.parent)).expect("context", "poll")
    context = kube.text("context")
    kube_poll = kube.duration("poll", timedelta(seconds=5))
    watch_list = top.get("watch") or []
    if not isinstance(watch_list, list):
        raise errors.ConfigError("watch: expected [[watch]] tables")
    base_dir = path.parent
    names = [w.get("name") if isinstance(w, dict) else None for w in watch_list]
    chosen: Sequence[int] = range(len(watch_list))
    if only is not None and set(only) <= set(names):  # known valid: build just these (an unknown name: all, to list)
        chosen = [i for i, name in enumerate(names) if name in only]
    specs = tuple(
        watches.watch(config_table.Table(watch_list[i], f"watch[{i}]", env, base_dir), defaults, awx, github)
        for i in chosen
    )
    seen: set[str] = set()
    for i, w in enumerate(specs):
        if w.name in seen:
            raise errors.ConfigError(f"watch[{i}].name: {w.name!r} is used by another watch")
        seen.add(w.name)
    targets = notify.targets(top, [str(n) for n in names] if len(specs) < len(watch_list) else [w.name for w in specs])
    base = Path(os.path.abspath(path)).parent
    settings = Settings(
        source=str(path),
        database=sections.database(database, "--database")
        if database
        else (
            sections.database(env["RECONCILER_DATABASE_URL"], "RECONCILER_DATABASE_URL")
            if env.get("RECONCILER_DATABASE_URL")
            else sections.database(file_database, "reconciler.database", base=base)
        ),
        server=sections.server(top),
        registries=sections.registries(top.table("registries")),
        awx=awx,
        github=github,
        kube_context=context,
        kube_poll=kube_poll,
        lease_ttl=lease_ttl,
        keep=keep,
        instance=instance,
        watches=specs,
        notify=targets,
    )
    return settings
