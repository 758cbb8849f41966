"""Configuration: defaults in code, then `config.toml`, then the environment, validated into frozen settings.

Every rejection is one `ConfigError` naming the key path (`watch[2].action.template`) and what was expected.
Secrets never sit in the file: a key ending in `_env` names an environment variable, one ending in `_file` names
a file; both are resolved here, once, into `Secret` values that never print themselves.
`load` reads the file (`load.py`); `table` reads one TOML table; `watches`, `notify` and `sections` validate theirs;
`settings` holds what they build. This package reads files and the environment it is given; it builds no clients.
"""

from __future__ import annotations

from reconciler.config.load import load, resolve_path
from reconciler.config.settings import (
    DEFAULT_DATABASE,
    DEFAULT_MARKER,
    PLACEHOLDERS,
    AwxSettings,
    GithubSettings,
    MissingSecret,
    NotifySettings,
    RegistrySettings,
    Secret,
    ServerSettings,
    Settings,
)
from reconciler.config.table import duration_text

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_MARKER",
    "PLACEHOLDERS",
    "AwxSettings",
    "GithubSettings",
    "MissingSecret",
    "NotifySettings",
    "RegistrySettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "duration_text",
    "load",
    "resolve_path",
]
