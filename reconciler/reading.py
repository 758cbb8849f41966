"""`status` and `history`: their documents, from the database alone, read through `store.glance`.

Apart from `app` so that these commands, typed many times a day, import neither SQLAlchemy nor a client: with a
plain database URL (`store.urls`) they open the database's driver themselves. Any other URL is read through
SQLAlchemy, as every other command reads it. The daemon's page reads the same, through its engine's pool.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from reconciler import config, model, report
from reconciler.store import glance, urls

log = logging.getLogger("reconciler.app")
Source = Callable[[], AbstractContextManager[glance.Glance | None]]  # a connection; None: no database yet


def source(database: str) -> Source:
    """How a reading command reaches the database: its own driver when the URL is plain, else SQLAlchemy."""
    shown = urls.hidden(database)
    log.info("database: %s", shown)
    plain = urls.parse(database)
    if plain is not None:
        return lambda: glance.connect(plain, shown)
    return lambda: _through_sqlalchemy(database)


@contextmanager
def _through_sqlalchemy(database: str) -> Iterator[glance.Glance | None]:
    from reconciler import database as engines  # noqa: PLC0415  (SQLAlchemy: only for a URL that needs it)

    if engines.sqlite_file_missing(database):
        yield None
        return
    engine = engines.database_engine(database)
    try:
        with glance.borrowed(engine) as reading:
            yield reading
    finally:
        engine.dispose()


class Reading:
    """The documents of `status` and `history` for these settings' watches: another instance's, sharing the
    database, are not ours to show. `cannot_send` says which notification targets cannot send, and why (by
    default, their missing secrets)."""

    def __init__(
        self,
        settings: config.Settings,
        read: Source | None = None,
        *,
        cannot_send: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.settings = settings
        self._read = read or source(settings.database)
        self._cannot_send = cannot_send or self._missing_secrets

    def _missing_secrets(self) -> dict[str, str]:
        return {n.name: why for n in self.settings.notify if (why := n.cannot_send)}

    def status(self, selected: Sequence[str], *, now: datetime) -> dict[str, Any]:
        """The `status --json` document."""
        watches = self.settings.select(selected)
        targets = [n.name for n in self.settings.notify]
        # Every watch: every row, read whole (naming 10,000 watches in the query costs more than the rows it saves).
        names = [w.name for w in watches] if selected else None
        states: dict[str, model.WatchState] = {}
        last: dict[str, model.ActionRecord] = {}
        backlog: dict[str, model.Backlog] = {}
        with self._read() as opened:
            reading = glance.at_head(opened)
            if reading is not None:
                states = reading.states(names)
                last = reading.last_actions(names)
                backlog = reading.backlog(targets, instance=self.settings.instance) if targets else {}
        return report.status_document(
            watches,
            states,
            now=now,
            last_actions=last,
            notifications=backlog or {n: model.Backlog(target=n) for n in targets},
            cannot_send=self._cannot_send(),
        )

    def history(self, selected: Sequence[str], *, limit: int = 50) -> dict[str, Any]:
        """The `history --json` document: the newest changes and actions of these watches (by default, of every
        watch of this configuration)."""
        names = [w.name for w in self.settings.select(selected)]
        with self._read() as opened:
            reading = glance.at_head(opened)
            if reading is None:
                return report.history_document([], [], limit=limit)
            entries = reading.history(names, limit=limit)
            actions = reading.actions(names, limit=limit)
        return report.history_document(entries, actions, limit=limit)
