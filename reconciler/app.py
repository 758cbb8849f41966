"""Composition root: the only place that builds clients (the HTTP session, the database engine, the registry
client) from settings, and the operations the command line and the daemon call.
"""

from __future__ import annotations

import base64
import os
import time
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
from reconciler.store import outbox, queries, schema

_PROXY_VARIABLES = tuple(v for n in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY") for v in (n, n.lower()))
USER_AGENT = "reconciler/0.1 (+https://github.com/xchem)"
WORKERS = 16


def registry_session(*, retries: int = 3, backoff: float = 0.5, pool: int = WORKERS) -> requests.Session:
    """A session that retries 429, 5xx and connection failures with exponential back-off, honouring Retry-After."""
    retry = Retry(
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
    settings: config.Settings, *, session: requests.Session | None = None, docker_config: str | None = None
) -> client.RegistryClient:
    session = session or registry_session()
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


def awx_session(*, retries: int = 3, backoff: float = 0.5) -> requests.Session:
    """A session for AWX: GETs retried on 502/503/504 and connection failures; the launch POST never re-sent
    once it may have reached AWX (urllib3 retries a POST only when the connection could not be made)."""
    retry = Retry(
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
        name=name, url=settings.url, authorization=authorization, timeout=settings.timeout, poll=settings.poll
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
    """The settings and the clients built from them."""

    settings: config.Settings
    registry: client.RegistryClient | None = None

    def __post_init__(self) -> None:
        self._db: Engine | None = None
        self._awx_session: requests.Session | None = None
        self._kube_api: k8s.ApiClient | None = None

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
            self._awx_session = awx_session()
        return self._awx_session

    def reconcile(
        self,
        names: Sequence[str],
        *,
        dry_run: bool,
        clock: engine.Clock = engine.utc_now,
        sleep: Callable[[float], object] = time.sleep,
        held: lease.Lease | None = None,
        keep_alive: Callable[[], None] | None = None,
    ) -> model.RunReport:
        """One pass; unless a dry run, under the lease (taken here, or `held` by the daemon), after finishing what
        a previous run left open. `keep_alive` is called while actions wait (the daemon's stop check)."""
        watches = self.select(names)
        self.registry = registry = self.registry or registry_client(self.settings)
        actuators = self.actuators(clock=clock, sleep=sleep)
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
        store = queries.Store(self.db)
        holder = held or self.new_lease(clock)
        if held is None:
            holder.acquire()
        try:
            deployer = deploy.Deployer(
                outbox=outbox.Outbox(self.db),
                actuators=actuators,
                clock=clock,
                keep_alive=keep_alive or holder.keep_alive,
            )
            runner = engine.Engine(
                registry=registry,
                store=store,
                clock=clock,
                workers=WORKERS,
                actions=outbox.Outbox(self.db),
                deployer=deployer,
            )
            return runner.run_pass(watches)
        finally:
            if held is None:
                holder.release()

    def new_lease(self, clock: engine.Clock) -> lease.Lease:
        return lease.Lease(store=queries.Store(self.db), clock=clock, ttl=self.settings.lease_ttl)

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
        holder = self.new_lease(clock)
        registry = self.registry = self.registry or registry_client(self.settings)
        counters = metrics.Metrics(
            registry_requests=lambda: registry.requests, ratelimit_remaining=lambda: registry.ratelimit_remaining
        )

        def run_pass(
            names: Sequence[str], keep_alive: Callable[[], None], sleep: Callable[[float], object]
        ) -> model.RunReport:
            return self.reconcile(
                names,
                dry_run=False,
                clock=clock,
                sleep=sleep,
                held=holder,
                keep_alive=keep_alive,
            )

        server = self.settings.server
        host, port = split_listen(server.listen)
        daemon.Daemon(
            watches=self.settings.watches,
            run_pass=run_pass,
            holder=holder,
            lease_ttl=self.settings.lease_ttl,
            status=lambda: self.status([], now=clock()),
            database_ok=self.database_ok,
            counters=counters,
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
