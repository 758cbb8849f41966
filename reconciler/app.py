"""Composition root: the only place that builds clients (the HTTP session, the database engine, the registry
client) from settings, and the operations the command line and the daemon call.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from urllib3.util import Retry

from reconciler import config, daemon, deploy, engine, errors, lease, metrics, model, report
from reconciler.actuators import awx

if TYPE_CHECKING:
    from kubernetes import client as k8s
from reconciler.registry import auth, client
from reconciler.store import leases, outbox, queries, schema

log = logging.getLogger(__name__)
_PROXY_VARIABLES = tuple(v for n in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY") for v in (n, n.lower()))
USER_AGENT = "reconciler/0.1 (+https://github.com/xchem)"
WORKERS = 16


class _StoppableRetry(Retry):
    """urllib3's Retry whose waits (a back-off, a `Retry-After` of up to a minute) end at once on `stop`."""

    stop: threading.Event | None = None  # set on a subclass per process stop event (`new()` keeps the class)

    def sleep(self, response: Any = None) -> None:
        seconds = self.get_retry_after(response) if self.respect_retry_after_header and response else None
        seconds = seconds or self.get_backoff_time()
        if self.stop is not None and self.stop.wait(max(seconds, 0.0)):
            raise errors.Stopped("stopping: gave up waiting to ask again")
        if self.stop is None and seconds > 0:
            super().sleep(response)


def _retry(stop: threading.Event | None, **options: Any) -> Retry:
    kind = type("StoppableRetry", (_StoppableRetry,), {"stop": stop})
    retry: Retry = kind(**options)
    return retry


def registry_session(
    *, retries: int = 3, backoff: float = 0.5, pool: int = WORKERS, stop: threading.Event | None = None
) -> requests.Session:
    """A session that retries 429, 5xx and connection failures with exponential back-off, honouring Retry-After;
    its waits end at once when `stop` is set."""
    retry = _retry(
        stop,
        total=retries,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"HEAD", "GET"}),
        backoff_factor=backoff,
        backoff_max=30,
        respect_retry_after_header=True,
        retry_after_max=60,
        raise_on_status=False,  # the last answer is turned into one clear RegistryError by the client
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    # requests re-reads proxy and CA settings from the environment (and ~/.netrc) on every request: about a fifth
    # of a pass's CPU at 1,000 watches. Without proxy variables, read the CA bundle once here instead.
    if not any(os.environ.get(name) for name in _PROXY_VARIABLES):
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        session.trust_env = False
    return session


def registry_client(
    settings: config.Settings,
    *,
    session: requests.Session | None = None,
    docker_config: str | None = None,
    stop: threading.Event | None = None,
) -> client.RegistryClient:
    session = session or registry_session(stop=stop)
    from_docker = auth.docker_config_credentials(docker_config)

    def credentials(registry: str) -> auth.Credentials | None:
        configured = settings.registries.get(registry)
        if configured is not None and configured.username and configured.password:
            return auth.Credentials(configured.username.reveal(), configured.password.reveal())
        return from_docker(registry)

    urls = {host: r.url for host, r in settings.registries.items() if r.url}
    return client.RegistryClient(
        session=session, authenticator=auth.Authenticator(session=session, credentials=credentials), urls=urls
    )


def awx_session(*, retries: int = 3, backoff: float = 0.5, stop: threading.Event | None = None) -> requests.Session:
    """A session for AWX: GETs retried on 502/503/504 and connection failures; the launch POST never re-sent
    once it may have reached AWX (urllib3 retries a POST only when the connection could not be made)."""
    retry = _retry(
        stop,
        total=retries,
        status_forcelist=(502, 503, 504),
        allowed_methods=frozenset({"GET"}),
        backoff_factor=backoff,
        backoff_max=30,
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def split_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:8080` or `[::1]:8080` into host and port (the configuration has checked the form)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def awx_server(name: str, settings: config.AwxSettings) -> awx.Server:
    if settings.token is not None:
        authorization = f"Bearer {settings.token.reveal()}"
    else:
        assert settings.username is not None and settings.password is not None
        raw = f"{settings.username.reveal()}:{settings.password.reveal()}".encode()
        authorization = "Basic " + base64.b64encode(raw).decode("ascii")
    return awx.Server(
        name=name,
        url=settings.url,
        authorization=authorization,
        timeout=settings.timeout,
        poll=settings.poll,
        marker=settings.marker,
    )


def kube_api(context: str | None) -> k8s.ApiClient:
    """In-cluster configuration inside a pod (KUBERNETES_SERVICE_HOST is set), else the kubeconfig."""
    # Imported here: the client costs ~0.5 s and ~30 MiB, paid only by configurations that roll StatefulSets.
    from kubernetes import client as k8s  # noqa: PLC0415
    from kubernetes import config as kube_config  # noqa: PLC0415

    configuration = k8s.Configuration()
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if in_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG"),  # the library reads it once, at import
                context=context,
                client_configuration=configuration,
            )
    except (kube_config.ConfigException, OSError) as exc:
        where = "in-cluster" if in_cluster else "kubeconfig ($KUBECONFIG or ~/.kube/config)"
        raise errors.ConfigError(f"kubernetes: cannot load the {where} configuration: {exc}") from None
    # urllib3's default Retry re-sends a GET or DELETE answered 429/503 with Retry-After, sleeping in real time up to
    # hours, past the lease and the stop request; the actuator asks again itself, through its injected sleep.
    configuration.retries = Retry(total=3, respect_retry_after_header=False)
    return k8s.ApiClient(configuration)


def database_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        return create_engine(url, connect_args={"timeout": 30})  # wait for a concurrent writer, don't fail
    return create_engine(url, pool_pre_ping=True)


def _sqlite_file_missing(url: str) -> bool:
    parsed = make_url(url)
    database = parsed.database
    return (
        parsed.get_backend_name() == "sqlite"
        and bool(database)
        and database != ":memory:"
        and not Path(database or "").exists()
    )


@dataclass
class App:
    """The settings and the clients built from them. `stop` is the process's stop request (SIGINT/SIGTERM): every
    wait of a pass (registry retries, AWX and roll-out polls) ends at once when it is set."""

    settings: config.Settings
    registry: client.RegistryClient | None = None

    def __post_init__(self) -> None:
        self._db: Engine | None = None
        self._awx_session: requests.Session | None = None
        self._kube_api: k8s.ApiClient | None = None
        self.stop = threading.Event()
        log.info("database: %s", make_url(self.settings.database).render_as_string(hide_password=True))

    @property
    def db(self) -> Engine:
        if self._db is None:
            self._db = database_engine(self.settings.database)
        return self._db

    def upgrade(self) -> str:
        schema.upgrade(self.db)
        return schema.head()

    def reader(self) -> queries.Store | None:
        """The store for reading without writing anything: None when no database (or schema) exists yet."""
        if _sqlite_file_missing(self.settings.database):
            return None
        if not schema.has_tables(self.db):
            return None
        if schema.current(self.db) != schema.head():
            raise errors.StoreError(
                f"the database {schema.safe_url(self.db)} is at an older schema; run `reconciler db upgrade`"
            )
        return queries.Store(self.db)

    def select(self, names: Sequence[str]) -> tuple[model.Watch, ...]:
        if not names:
            return self.settings.watches
        return tuple(self.settings.watch(n) for n in dict.fromkeys(names))

    def actuators(
        self, *, clock: engine.Clock, sleep: Callable[[float], object]
    ) -> dict[model.ActionKind, deploy.Actuator]:
        clients = {
            name: awx.AwxClient(session=self.awx_session, server=awx_server(name, s))
            for name, s in self.settings.awx.items()
        }
        actuators: dict[model.ActionKind, deploy.Actuator] = {
            model.ActionKind.AWX: awx.AwxActuator(clients=clients, clock=clock, sleep=sleep)
        }
        if any(isinstance(w.action, model.StatefulSetAction) for w in self.settings.watches):
            from reconciler.actuators import kube  # noqa: PLC0415  (see kube_api)

            actuators[model.ActionKind.STATEFULSET] = kube.StatefulSetActuator(
                api=self.kube_api, clock=clock, sleep=sleep, poll=self.settings.kube_poll.total_seconds()
            )
        return actuators

    @property
    def kube_api(self) -> k8s.ApiClient:
        if self._kube_api is None:
            self._kube_api = kube_api(self.settings.kube_context)
        return self._kube_api

    @property
    def awx_session(self) -> requests.Session:
        if self._awx_session is None:
            self._awx_session = awx_session(stop=self.stop)
        return self._awx_session

    def _registry(self) -> client.RegistryClient:
        self.registry = self.registry or registry_client(self.settings, stop=self.stop)
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
        watches = self.select(names)
        registry = self._registry()
        actuators = self.actuators(clock=clock, sleep=sleep or self.stop.wait)
        if dry_run:
            store = self.reader()
            deployer = deploy.Deployer(outbox=outbox.Outbox(self.db), actuators=actuators, clock=clock)
            runner = engine.Engine(
                registry=registry,
                store=store,
                clock=clock,
                workers=WORKERS,
                actions=outbox.Outbox(self.db) if store else None,
                deployer=deployer,
            )
            return runner.run_pass(watches, dry_run=True)
        if held is None:  # the daemon migrated once at start; its passes run concurrently
            schema.upgrade(self.db)
        holder = held or self.new_lease()
        if held is None:
            holder.acquire()

        def keep_alive() -> None:
            self._stop_check()
            holder.keep_alive()

        def confirm() -> None:
            self._stop_check()
            holder.confirm()

        try:
            deployer = deploy.Deployer(
                outbox=outbox.Outbox(self.db),
                actuators=actuators,
                clock=clock,
                keep_alive=keep_alive,
                sleep=sleep or self.stop.wait,
                configured=self.settings.watches,
            )
            runner = engine.Engine(
                registry=registry,
                store=queries.Store(self.db),
                clock=clock,
                workers=WORKERS,
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

    def new_lease(self) -> lease.Lease:
        return lease.Lease(store=leases.Leases(self.db), ttl=self.settings.lease_ttl)

    def retry(self, name: str, *, now: datetime) -> model.ActionRecord | None:
        """`reconciler retry WATCH`: the watch's failed action no longer holds it back; None if it has none."""
        self.settings.watch(name)
        if self.reader() is None:
            return None
        return outbox.Outbox(self.db).reset(name, now)

    def open_actions(self, names: Sequence[str]) -> list[model.ActionRecord]:
        if self.reader() is None:
            return []
        return [a for a in outbox.Outbox(self.db).open_actions() if not names or a.watch in names]

    def status(self, selected: Sequence[str], *, now: datetime) -> dict[str, Any]:
        """The `status --json` document, from the database alone."""
        watches = self.select(selected)
        store = self.reader()
        states = store.states([w.name for w in watches]) if store is not None else {}
        return report.status_document(
            watches, states, now=now, last_actions=self.last_actions([w.name for w in watches])
        )

    def database_ok(self) -> bool:
        try:
            with self.db.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    def serve(self) -> None:
        """`reconciler run`: migrate, then poll, act and serve the endpoints until SIGTERM/SIGINT."""
        self.upgrade()
        clock = engine.utc_now
        holder = self.new_lease()
        registry = self._registry()
        counters = metrics.Metrics(
            registry_requests=lambda: registry.requests, ratelimit_remaining=lambda: registry.ratelimit_remaining
        )
        server = self.settings.server
        host, port = split_listen(server.listen)
        daemon.Daemon(
            watches=self.settings.watches,
            run_pass=lambda names: self.reconcile(names, dry_run=False, clock=clock, held=holder),
            holder=holder,
            status=lambda: self.status([], now=clock()),
            database_ok=self.database_ok,
            counters=counters,
            stop=self.stop,
            server=daemon.Server(
                host=host,
                port=port,
                token=server.token.reveal() if server.token else None,
                webhook_secret=server.webhook_secret.reveal() if server.webhook_secret else None,
            ),
        ).run_forever()

    def last_actions(self, names: Sequence[str]) -> dict[str, model.ActionRecord]:
        return outbox.Outbox(self.db).last_actions(names) if self.reader() is not None else {}

    def actions(self, *, watch: str | None, limit: int) -> list[model.ActionRecord]:
        return outbox.Outbox(self.db).actions(watch=watch, limit=limit) if self.reader() is not None else []

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
