"""`reconciler run`: the daemon, wired from the `App`. Imported by that command alone: APScheduler, waitress and
prometheus_client are ~0.1 s of every other command's start, and nothing of theirs.

The database is migrated first, in a child process when a migration is due: Alembic (with Mako and Pygments) stays
resident once imported, ~8 MiB of a daemon that needs it only at start.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from datetime import datetime
from typing import TYPE_CHECKING

from reconciler import app, approval_desk, clients, config, daemon, database, endpoints, engine, errors, metrics, said
from reconciler.store import approvals, schema

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

log = logging.getLogger(__name__)
NOTIFY_ON_STOP = 2.0  # seconds a stopping daemon gives due notifications; the next process sends what is left


def serve(application: app.App) -> None:
    """Migrate, then poll, act and serve the endpoints until SIGTERM/SIGINT."""
    settings = application.settings
    settings.require_registry_secrets()
    said.missing_secrets(settings, settings.watches)
    upgrade_apart(application)
    clock = engine.utc_now
    holder = application.new_lease()
    registry = application.registry_client()
    gated = [w.name for w in settings.watches if w.approve]
    decisions = approvals.Approvals(application.db)
    counters = metrics.Metrics(
        registry_requests=lambda: registry.requests,
        ratelimit_remaining=lambda: registry.ratelimit_remaining,
        awaiting_approval=lambda: (
            dict.fromkeys(gated, False) | {a.watch: True for a in decisions.waiting(gated)} if gated else {}
        ),
    )
    notifications = application.notifications
    notifications.counted = lambda target, event, result: counters.notifications.labels(
        target=target, event=event, result=result
    ).inc()
    courier = notifications.courier(application.db, clock=clock) if settings.notify else None
    if courier is not None:
        courier.start()  # first of all, what a previous process recorded but did not deliver
    server = settings.server
    host, port = clients.split_listen(server.listen)
    daemon.Daemon(
        watches=settings.watches,
        run_pass=lambda names: application.reconcile(names, dry_run=False, clock=clock, held=holder),
        holder=holder,
        status=lambda: application.status([], now=clock()),
        database_ok=application.database_ok,
        counters=counters,
        approvals=approval_desk.Approvals(
            page=lambda: application.page(now=clock()),
            decide=lambda name, digest, approve, by, action: application.decide(
                name, digest, approve=approve, by=by, now=clock(), action_id=action
            ),
            approved=decisions.approved,
        ),
        prune=lambda: _prune_logged(application, clock()),
        stop=application.stop,
        server=endpoints.Server(
            host=host,
            port=port,
            token=server.token.reveal() if server.token else None,
            webhook_secret=server.webhook_secret.reveal() if server.webhook_secret else None,
        ),
    ).run_forever()
    if courier is not None:
        courier.stop(min(courier.longest_timeout, NOTIFY_ON_STOP))


def upgrade_apart(application: app.App) -> None:
    """The migration, in a child process when one is due (nothing at head)."""
    if schema.current(application.db) == schema.head():
        return
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this one is copied
    answer, told = context.Pipe(duplex=False)
    url = application.settings.database
    child = context.Process(target=_upgrade, args=(url, told), name="migrate", daemon=True)
    child.start()  # the URL travels by the pipe, not in argv
    told.close()
    child.join()
    why = answer.recv() if answer.poll() else None
    if why is not None or child.exitcode != 0:
        raise errors.StoreError(why or f"the migration's process ended abruptly (exit code {child.exitcode})")


def _upgrade(url: str, told: Connection) -> None:
    """`upgrade_apart`'s child: migrate the database at `url` to head; tell the parent why not, if not. A stop
    request is the parent's to act on: a migration is one transaction, left to end whichever way it ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    db = database.database_engine(url)
    try:
        schema.upgrade(db)
        told.send(None)
    except errors.ReconcilerError as exc:
        told.send(str(exc))
    except Exception as exc:  # e.g. Alembic's: a revision this version does not know (a newer one migrated it)
        told.send(f"cannot migrate the database: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    finally:
        db.dispose()


def _prune_logged(application: app.App, now: datetime) -> None:
    pruned = application.prune(now=now)
    if pruned.total:
        gone = ", ".join(f"{n} {kind}" for kind, n in pruned.counts().items() if n)
        log.info("pruned what is older than %s: %s", config.duration_text(application.settings.keep), gone)
