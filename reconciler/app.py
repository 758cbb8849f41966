"""Composition root: the operations the command line and the daemon call, wired from settings and the clients
`clients` builds (the only module that builds them) over the engine `database` builds.

The commands people type most (`status`, `history`) only read the database: the HTTP clients (`clients`,
`actuation`, the registry client: requests, urllib3, docker) are imported by the operations that use them, so
those commands start without them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from reconciler import config, database, deploy, engine, errors, lease, model, notifications, reading, report, said
from reconciler.progress import Progress
from reconciler.store import approvals, glance, leases, outbox, prune, queries, schema, urls

if TYPE_CHECKING:
    import requests
    from kubernetes import client as k8s

    from reconciler.registry import client

log = logging.getLogger(__name__)


@dataclass
class App:
    """The settings and the clients built from them. `stop` is the process's stop request (SIGINT/SIGTERM): every
    wait of a pass (registry retries, AWX and roll-out polls) ends at once when it is set."""

    settings: config.Settings
    registry: client.RegistryClient | None = None
    progress: deploy.Progress | None = None  # how long waits report themselves; by default a log line a minute
    backoff: float = 0.5  # seconds before a failed AWX or GitHub read is asked again, doubling (tests: 0)

    def __post_init__(self) -> None:
        self._db: Engine | None = None
        self._awx_session: requests.Session | None = None
        self._kube_api: k8s.ApiClient | None = None
        self.notifications = notifications.Notifications(
            self.settings.notify, clock=engine.utc_now, instance=self.settings.instance
        )
        self.stop = threading.Event()
        log.info("database: %s", urls.hidden(self.settings.database))
        said.stray_database(self.settings.database)

    @property
    def db(self) -> Engine:
        if self._db is None:
            self._db = database.database_engine(self.settings.database)
        return self._db

    def upgrade(self) -> str:
        schema.upgrade(self.db)
        return schema.head()

    @contextmanager
    def _borrowed(self) -> Iterator[glance.Glance | None]:
        """A connection of the engine's pool to read with; None while there is no SQLite file (reading makes none)."""
        if database.sqlite_file_missing(self.settings.database):
            yield None
            return
        with glance.borrowed(self.db) as found:
            yield found

    def reader(self) -> queries.Store | None:
        """The store for reading without writing anything: None when no database (or schema) exists yet."""
        with self._borrowed() as found:
            if glance.at_head(found) is None:
                return None
        return queries.Store(self.db)

    @property
    def reading(self) -> reading.Reading:
        """`status` and `history`, through the engine's pool (the reading commands read without this `App`)."""
        return reading.Reading(self.settings, self._borrowed, cannot_send=self.notifications.cannot_send)

    def actuators(
        self, *, clock: engine.Clock, sleep: Callable[[float], object]
    ) -> dict[model.ActionKind, deploy.Actuator]:
        from reconciler import actuation, clients  # noqa: PLC0415  (the HTTP clients: see actuation's docstring)

        return actuation.actuators(
            self.settings,
            awx_session=lambda: self.awx_session,
            kube_api=lambda: self.kube_api,
            github_session=lambda: clients.github_session(backoff=self.backoff, stop=self.stop),
            clock=clock,
            sleep=sleep,
        )

    @property
    def kube_api(self) -> k8s.ApiClient:
        if self._kube_api is None:
            from reconciler import clients  # noqa: PLC0415

            self._kube_api = clients.kube_api(self.settings.kube_context)
        return self._kube_api

    @property
    def awx_session(self) -> requests.Session:
        if self._awx_session is None:
            from reconciler import clients  # noqa: PLC0415

            self._awx_session = clients.awx_session(backoff=self.backoff, stop=self.stop)
        return self._awx_session

    def registry_client(self) -> client.RegistryClient:
        if self.registry is None:
            from reconciler import clients  # noqa: PLC0415

            self.registry = clients.registry_client(self.settings, stop=self.stop)
        return self.registry

    def _stop_check(self) -> None:
        if self.stop.is_set():
            raise errors.Stopped("stopping: open actions are left to be resumed by the next run")

    def reconcile(
        self,
        names: Sequence[str],
        *,
        dry_run: bool,
        clock: engine.Clock = engine.utc_now,
        sleep: Callable[[float], object] | None = None,
        held: lease.Lease | None = None,
    ) -> model.RunReport:
        """One pass; unless a dry run, under the lease (taken here, or `held` by the daemon), after finishing what
        a previous run left open. Waits sleep on `stop` unless `sleep` is given (tests move a fake clock)."""
        watches = self.settings.select(names)
        if held is None:  # the daemon said so once, at start
            self.settings.require_registry_secrets()
            said.missing_secrets(self.settings, watches)
            self.notifications.targets()  # says, once, which targets cannot send and why
        registry = self.registry_client()
        actuators = self.actuators(clock=clock, sleep=sleep or self.stop.wait)
        if dry_run:
            store = self.reader()
            deployer = deploy.Deployer(outbox=outbox.Outbox(self.db), actuators=actuators, clock=clock)
            runner = engine.Engine(
                registry=registry,
                store=store,
                clock=clock,
                workers=engine.WORKERS,
                actions=outbox.Outbox(self.db) if store else None,
                deployer=deployer,
            )
            return runner.run_pass(watches, dry_run=True)
        if held is None:  # the daemon migrated once at start; its passes run concurrently
            schema.upgrade(self.db)
        holder = held or self.new_lease()
        if held is None:
            holder.acquire()
        box = self.notifications.box(self.db)
        notifying = bool(self.settings.notify) and held is None  # the daemon runs its own courier
        courier = self.notifications.courier(self.db, clock=clock, halt=self.stop) if notifying else None
        if courier is not None:
            courier.start()  # notices go out as they are recorded, while the pass goes on
        tenure = holder.tenure  # the hold this pass acts under; lost and taken again since, it acts no more

        def keep_alive() -> None:
            self._stop_check()
            holder.keep_alive(tenure)

        def confirm() -> None:
            self._stop_check()
            holder.confirm(tenure)

        try:
            deployer = deploy.Deployer(
                outbox=outbox.Outbox(self.db, box),
                actuators=actuators,
                clock=clock,
                keep_alive=keep_alive,
                sleep=sleep or self.stop.wait,
                configured=self.settings.watches,
                progress=self.progress or Progress(clock),
            )
            runner = engine.Engine(
                registry=registry,
                store=queries.Store(self.db, box, instance=self.settings.instance),
                clock=clock,
                workers=engine.WORKERS,
                actions=outbox.Outbox(self.db),
                deployer=deployer,
                keep_alive=keep_alive,
                confirm=confirm,
            )
            return runner.run_pass(watches)
        finally:
            if held is None:
                try:
                    holder.release()
                except errors.StoreError as exc:  # it expires by itself; the pass's own outcome matters more
                    log.warning("could not release the lease: %s", exc)
            if courier is not None:  # due notices get the longest target timeout; the next run sends what is left
                courier.stop(courier.longest_timeout)  # at once on a stop request

    def new_lease(self) -> lease.Lease:
        """This instance's lease (`[reconciler].instance`): daemons of other instances hold their own."""
        name = lease.name_of(self.settings.instance)
        return lease.Lease(store=leases.Leases(self.db), ttl=self.settings.lease_ttl, name=name)

    def prune(
        self,
        *,
        now: datetime,
        dry_run: bool = False,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> prune.Pruned:
        """`reconciler db prune` (and the daemon, hourly): what is older than `[reconciler].keep` goes, in small
        batches; a stop request ends it between two. Nothing when no database exists yet."""
        if self.reader() is None:
            return prune.Pruned()
        pruner = prune.Pruner(self.db, on_batch=on_batch, should_stop=self.stop.is_set)
        return pruner.prune(now - self.settings.keep, dry_run=dry_run)

    def retry(self, name: str, *, now: datetime) -> model.ActionRecord | None:
        """`reconciler retry WATCH`: the watch's failed action no longer holds it back; None if it has none."""
        self.settings.watch(name)
        if self.reader() is None:
            return None
        return outbox.Outbox(self.db).reset(name, now)

    def decide(
        self, name: str, digest: str | None, *, approve: bool, by: str, now: datetime, action_id: int | None = None
    ) -> model.ActionRecord:
        """`reconciler approve` / `reject` (and the daemon's POST /approve, /reject): a person's say on the action
        the watch waits on; NotWaiting, changing nothing, when none waits (for that digest)."""
        self.settings.watch(name)
        if digest is not None:
            approvals.digest_prefix(digest)  # a malformed one is a usage error, whether anything was recorded or not
        approvals.checked_name(by)
        if self.reader() is None:
            raise errors.NotWaiting(f"nothing of watch {name} waits for approval: nothing was recorded yet")
        return approvals.Approvals(self.db).decide(name, digest, approve=approve, by=by, now=now, action_id=action_id)

    def page(self, *, now: datetime, recent: int = 50) -> dict[str, Any]:
        """What the daemon's status page shows: the status, the newest history events, what waits for approval."""
        names = [w.name for w in self.settings.watches]  # another configuration's waiting actions are not ours
        waiting = approvals.Approvals(self.db).waiting(names) if self.reader() is not None else []
        return {
            "status": self.status([], now=now),
            "history": self.history([], limit=recent),
            "approvals": report.waiting_document(waiting, self.settings.watches),
        }

    def open_actions(self, names: Sequence[str]) -> list[model.ActionRecord]:
        if self.reader() is None:
            return []
        return [a for a in outbox.Outbox(self.db).open_actions() if not names or a.watch in names]

    def status(self, selected: Sequence[str], *, now: datetime) -> dict[str, Any]:
        return self.reading.status(selected, now=now)

    def notify_test(self, names: Sequence[str]) -> list[tuple[str, str | None]]:
        """`reconciler notify test`: per target (these, or all), None when it took a test notice, else why not."""
        if not self.settings.notify:
            raise errors.ConfigError(f"{self.settings.source}: no [[notify]] targets to test (docs/configuration.md)")
        for name in names:
            self.settings.notify_target(name)
        return self.notifications.test(names)

    def database_ok(self) -> bool:
        try:
            with self.db.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def history(self, selected: Sequence[str], *, limit: int = 50) -> dict[str, Any]:
        return self.reading.history(selected, limit=limit)

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
