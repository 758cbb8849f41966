"""Registry authentication: challenges, credentials and the per-scope bearer-token cache.

Owns the Docker Hub flow of protocols.md §1.2 — a 401 names a realm, the token server is asked for the scope
(anonymously or with Basic credentials, or with an identity token over the OAuth2 POST variant), and the token is
reused for that scope until it expires. Credentials come from the configuration or, failing that, from the Docker
config and its credential helpers (read through the `docker` package; no engine needed).
Never logs or raises a secret. Does not send registry requests itself, only token requests.
"""

from __future__ import annotations

import base64
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from docker import auth as docker_auth
from docker import errors as docker_errors

from reconciler import errors

_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')
TOKEN_MARGIN = 10.0  # seconds before expiry at which a cached token is no longer used
DEFAULT_TOKEN_LIFETIME = 60.0  # token.md: "Default 60 if omitted"


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str = field(repr=False)
    password: str = field(repr=False)
    identity_token: bool = False  # password is an OAuth2 refresh token (credential helpers' "<token>" user)


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # "bearer" or "basic"
    params: Mapping[str, str]


def parse_challenge(header: str | None) -> Challenge | None:
    """`Bearer realm="…",service="…",scope="repository:a/b:pull,push"`; values may hold commas, so no split(",")."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): (quoted if quoted or not bare else bare) for k, quoted, bare in _PARAM.findall(rest)}
    return Challenge(scheme=scheme.lower(), params=params)


def docker_config_credentials(config_path: str | None = None) -> Callable[[str], Credentials | None]:
    """A lookup of credentials in the Docker config (`~/.docker/config.json`, `$DOCKER_CONFIG`) and its helpers."""
    loaded: list[Any] = []
    lock = threading.Lock()

    def lookup(registry: str) -> Credentials | None:
        with lock:
            if not loaded:
                loaded.append(docker_auth.load_config(config_path=config_path))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    found = docker_auth.resolve_authconfig(loaded[0], registry=registry)
            except docker_errors.DockerException as exc:
                raise errors.RegistryAuthError(
                    f"registry {registry}: the Docker credential helper failed: {exc.__class__.__name__}"
                ) from None
        if not found:
            return None
        # `auths` entries use lower-case keys, credential-store results capitalised ones.
        norm = {k.lower(): v for k, v in found.items()}
        if norm.get("identitytoken"):
            return Credentials(username=norm.get("username") or "", password=norm["identitytoken"], identity_token=True)
        if norm.get("username") and norm.get("password"):
            return Credentials(username=norm["username"], password=norm["password"])
        return None

    return lookup


class Authenticator:
    """Answers registry challenges and caches bearer tokens per (realm, service, scope, identity)."""

    def __init__(
        self,
        *,
        session: requests.Session,
        credentials: Callable[[str], Credentials | None],
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 30.0,
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._clock = clock
        self._timeout = timeout
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str, str, str], tuple[str, float]] = {}
        self._fetching: dict[tuple[str, str, str, str], threading.Lock] = {}
        self._creds: dict[str, Credentials | None] = {}
        self.tokens_fetched = 0

    def _creds_for(self, registry: str) -> Credentials | None:
        with self._lock:
            if registry not in self._creds:
                self._creds[registry] = self._credentials(registry)
            return self._creds[registry]

    def cached_header(self, registry: str, scope: str) -> dict[str, str]:
        """The Authorization header to send up front, when this registry's scheme is already known."""
        challenge = self._challenges.get(registry)
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            creds = self._creds_for(registry)
            return _basic(creds) if creds else {}
        key = self._key(registry, challenge, scope)
        with self._lock:
            cached = self._tokens.get(key)
        if cached and cached[1] > self._clock():
            return {"Authorization": f"Bearer {cached[0]}"}
        return {}

    def answer(
        self, *, registry: str, header: str | None, scope: str, image: str, rejected: str | None = None
    ) -> dict[str, str]:
        """The Authorization header that answers a 401's challenge; `rejected` is the header that got the 401.

        Concurrent callers for one scope wait for a single token fetch and share its token.
        """
        challenge = parse_challenge(header)
        if challenge is None or challenge.scheme not in ("bearer", "basic"):
            raise errors.RegistryAuthError(
                f"registry {registry} refused {image} (401) without a usable WWW-Authenticate challenge"
            )
        self._challenges[registry] = challenge
        creds = self._creds_for(registry)
        if challenge.scheme == "basic":
            if creds is None:
                raise errors.RegistryAuthError(
                    f"registry {registry} needs a username and password for {image}: set "
                    f'[registries."{registry}"] username_env/password_env or log in with docker login'
                )
            return _basic(creds)
        key = self._key(registry, challenge, scope)
        with self._lock:
            fetching = self._fetching.setdefault(key, threading.Lock())
        with fetching:
            with self._lock:
                cached = self._tokens.get(key)
            if cached and cached[1] > self._clock() and f"Bearer {cached[0]}" != rejected:
                return {"Authorization": f"Bearer {cached[0]}"}  # another worker fetched it meanwhile
            token, lifetime = self._fetch_token(registry, challenge, scope, creds, image)
            with self._lock:
                self._tokens[key] = (token, self._clock() + lifetime - TOKEN_MARGIN)
        return {"Authorization": f"Bearer {token}"}

    def _key(self, registry: str, challenge: Challenge, scope: str) -> tuple[str, str, str, str]:
        creds = self._creds_for(registry)
        identity = creds.username if creds else ""
        return (challenge.params.get("realm", ""), challenge.params.get("service", ""), scope, identity)

    def _fetch_token(
        self, registry: str, challenge: Challenge, scope: str, creds: Credentials | None, image: str
    ) -> tuple[str, float]:
        realm = challenge.params.get("realm")
        if not realm or not realm.startswith(("http://", "https://")):
            raise errors.RegistryAuthError(f"registry {registry} sent a bearer challenge without a usable realm")
        service = challenge.params.get("service", "")
        try:
            if creds is not None and creds.identity_token:
                response = self._session.post(
                    realm,
                    timeout=self._timeout,
                    data={
                        "grant_type": "refresh_token",
                        "refresh_token": creds.password,
                        "service": service,
                        "scope": scope,
                        "client_id": "reconciler",
                    },
                )
            else:
                params = {"service": service, "scope": scope} if service else {"scope": scope}
                auth = (creds.username, creds.password) if creds else None
                response = self._session.get(realm, params=params, auth=auth, timeout=self._timeout)
        except requests.RequestException as exc:
            raise errors.RegistryError(
                f"cannot reach the token server of registry {registry} at {realm}: {type(exc).__name__}"
            ) from None
        self.tokens_fetched += 1
        who = f"user {creds.username!r}" if creds and creds.username else "anonymous access"
        if response.status_code in (401, 403):
            raise errors.RegistryAuthError(
                f"the token server of registry {registry} refused {who} to {image} ({response.status_code}); "
                "check the registry credentials"
            )
        if response.status_code != 200:
            raise errors.RegistryError(
                f"the token server of registry {registry} answered {response.status_code} for {image}"
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            token, lifetime = None, 0.0
        if not isinstance(token, str) or not token:
            raise errors.RegistryError(f"the token server of registry {registry} sent no token for {image}")
        return token, lifetime if lifetime > 0 else DEFAULT_TOKEN_LIFETIME


def _basic(creds: Credentials) -> dict[str, str]:
    raw = f"{creds.username}:{creds.password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
