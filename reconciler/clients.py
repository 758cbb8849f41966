"""The clients built from settings, for the composition root (`app`) alone: HTTP sessions whose retries honour
`Retry-After` and end at once on the process's stop request, the registry client, the AWX server's credentials,
the Kubernetes API client (the database engine: `database`). Builds; decides nothing.
"""

from __future__ import annotations

import base64
import os
import threading
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from reconciler import config, engine, errors
from reconciler.actuators import awx, github_client
from reconciler.registry import auth, client
from reconciler.registry.credentials import Credentials, docker_config_credentials

if TYPE_CHECKING:
    from kubernetes import client as k8s

_PROXY_VARIABLES = tuple(v for n in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY") for v in (n, n.lower()))
USER_AGENT = "reconciler/0.1 (+https://github.com/xchem)"
WORKERS = engine.WORKERS


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
    from_docker = docker_config_credentials(docker_config)

    def credentials(registry: str) -> Credentials | None:
        configured = settings.registries.get(registry)
        if configured is not None and configured.username and configured.password:
            return Credentials(configured.username.reveal(), configured.password.reveal())
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
        other=0,  # urllib3 re-sends on "other" errors whatever the method: never a POST that may have arrived
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


def github_session(*, backoff: float = 0.5, stop: threading.Event | None = None) -> requests.Session:
    """A session for GitHub, retried as AWX's is: reads on 502/503/504 and failed connections, never a dispatch
    that may have arrived."""
    return awx_session(backoff=backoff, stop=stop)


def github_server(name: str, settings: config.GithubSettings) -> github_client.Server:
    assert settings.token is not None
    return github_client.Server(
        name=name,
        url=settings.url,
        authorization=f"Bearer {settings.token.reveal()}",
        timeout=settings.timeout,
        poll=settings.poll,
    )


def notify_session() -> requests.Session:
    """A session for webhook notifications: no retries here, as the notification outbox retries with back-off."""
    session = requests.Session()
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
    # hours, and a read that timed out three times more, past the lease and a stop request; the actuator asks again
    # itself, through its injected sleep.
    configuration.retries = Retry(total=3, read=0, respect_retry_after_header=False)
    return k8s.ApiClient(configuration)
