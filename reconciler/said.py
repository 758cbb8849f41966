"""What a process says once, at start, about its configuration: a database file left where 0.1 kept it, and each
secret that is named but not set, with what stands aside without it (watches that do not act, notification
targets that do not send). Logging only; decides nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from reconciler import config, model
from reconciler.store import urls

log = logging.getLogger("reconciler.app")


def stray_database(database: str) -> None:
    """Before 0.2 a relative SQLite path was the working directory's: say so if state seems to be left there."""
    url = urls.parse(database)  # a URL with options after `?` is not looked at: it was written with care
    name = url.path if url is not None else None
    if name is None or not os.path.isabs(name) or os.path.exists(name):
        return
    stray = os.path.join(os.getcwd(), os.path.basename(name))
    if os.path.exists(stray):
        log.warning(
            "the database %s does not exist yet, but %s does: relative SQLite paths are taken from the "
            "configuration file's directory; move that file there if it holds this configuration's state",
            name,
            stray,
        )


def missing_secrets(settings: config.Settings, watches: Sequence[model.Watch]) -> None:
    """Name, once, each secret that is named but not set, and what cannot work without it."""
    names = {w.name for w in watches}
    for missing, users in settings.missing_secrets():
        held_back = [u for u in users if u in names]
        if held_back:
            log.warning(
                "%s: watch%s %s observed but not acted on until it is set (and reconciler restarted)",
                missing,
                "" if len(held_back) == 1 else "es",
                ", ".join(held_back) + (" is" if len(held_back) == 1 else " are"),
            )
    for target in settings.notify:
        for missing in target.missing:
            log.warning(
                "%s: notifications to %s are kept for a day but not sent until it is set (and reconciler restarted)",
                missing,
                target.name,
            )
