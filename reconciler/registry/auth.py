"""Registry authentication: challenges and the per-scope bearer-token cache.

Owns the Docker Hub flow of the token auth spec — a 401 names a realm, the token server is asked for the scope
(anonymously or with Basic credentials, or with an identity token over the OAuth2 POST variant), and the token is
reused for that scope until it expires. The credentials and their lookup in the Docker config and its credential
helpers (`Credentials`, `docker_config_credentials`) are in `credentials`.
Also owns reading what a registry or token server sends, for both boundaries: JSON (`json_body`, which survives
any nesting), text shown in a message (`one_line`) and redirects (`refuse_unfollowable_redirect`, a response hook
that stops a Location requests could not follow). Whatever a token server answers ends as a token or one
`RegistryError`: the token fetch has one guard for what nobody foresaw, a token must be printable ASCII (it goes
into a header), and its lifetime is clamped.
Never logs or raises a secret. Does not send registry requests itself, only token requests.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from reconciler import errors
from reconciler.registry.credentials import Credentials, basic_header, who

log = logging.getLogger(__name__)
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')
TOKEN_MARGIN = 10.0  # seconds before expiry at which a cached token is no longer used
DEFAULT_TOKEN_LIFETIME = 60.0  # token.md: "Default 60 if omitted"
MAX_TOKEN_LIFETIME = 86400.0  # a day: longer than any registry grants (ECR: 12 h), short of trusting a typo for ever
# What can go into `Authorization: Bearer …`: printable ASCII without spaces (RFC 6750's b64token is narrower; a
# JWT fits), and at most 64 KiB, past any real token and at most any server's header limit.
_TOKEN = re.compile(r"[\x21-\x7e]{1,65536}")
_SECONDS = re.compile(r"[0-9]{1,12}")  # an `expires_in` sent quoted; bounded, as int() of 5,000 digits fails


class UnfollowableRedirect(Exception):
    """A redirect whose Location requests would fail on (it raises ValueError, outside requests' own errors)."""


def one_line(text: str, limit: int = 200) -> str:
    """Text a server sent, fit for one line of a message: its first line, cut short, unprintable characters as '?'."""
    first = next(iter(text[: limit * 20].strip().splitlines()), "")[:limit]
    return "".join(c if c.isprintable() else "?" for c in first).strip()


def json_body(response: requests.Response) -> Any:
    """The body as JSON; ValueError when it is not, also when nested too deep for the parser (RecursionError)."""
    try:
        return json.loads(response.content)  # bytes: UTF-8/16/32 detected as RFC 8259 says
    except RecursionError:
        raise ValueError("JSON nested too deep") from None


def refuse_unfollowable_redirect(response: requests.Response, **_: Any) -> requests.Response:
    """A `response` hook: raise UnfollowableRedirect before requests follows a Location it cannot read.

    Reads the Location as `Session.resolve_redirects` and `should_strip_auth` do (latin-1 bytes as UTF-8, joined
    to the request URL, its port), which raise ValueError on `http://[`, a port past 65535 or bytes not UTF-8.
    """
    if response.is_redirect:
        try:
            location = response.headers["location"].encode("latin-1").decode("utf-8")
            _port = urlsplit(urljoin(response.url, location)).port
        except ValueError:  # UnicodeError is one
            raise UnfollowableRedirect from None
    return response


def token_lifetime(expires_in: object) -> float:
    """Seconds a token lives: `expires_in` clamped to (0, a day]; the default for a missing or unreadable one."""
    if isinstance(expires_in, str) and _SECONDS.fullmatch(expires_in):
        expires_in = int(expires_in)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return DEFAULT_TOKEN_LIFETIME
    if not expires_in > 0:  # also NaN. token.md: never issued with under 60 s; the default rather than none
        return DEFAULT_TOKEN_LIFETIME
    return float(min(expires_in, MAX_TOKEN_LIFETIME))  # min first: float() of a huge int overflows


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

    def identity(self, registry: str) -> str:
        """Who asks the registry, for a message: `user 'name'` or `anonymous access`; never a secret."""
        return who(self._creds_for(registry))

    def cached_header(self, registry: str, scope: str) -> dict[str, str]:
        """The Authorization header to send up front, when this registry's scheme is already known."""
        challenge = self._challenges.get(registry)
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            creds = self._creds_for(registry)
            return basic_header(creds) if creds else {}
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
            return basic_header(creds)
        key = self._key(registry, challenge, scope)
        with self._lock:
            fetching = self._fetching.setdefault(key, threading.Lock())
        with fetching:
            with self._lock:
                cached = self._tokens.get(key)
            if cached and cached[1] > self._clock() and f"Bearer {cached[0]}" != rejected:
                return {"Authorization": f"Bearer {cached[0]}"}  # another worker fetched it meanwhile
            token, seconds = self._guarded_fetch(registry, challenge, scope, creds, image)
            with self._lock:
                self._tokens[key] = (token, self._clock() + seconds - TOKEN_MARGIN)
        return {"Authorization": f"Bearer {token}"}

    def _key(self, registry: str, challenge: Challenge, scope: str) -> tuple[str, str, str, str]:
        creds = self._creds_for(registry)
        identity = creds.username if creds else ""
        return (challenge.params.get("realm", ""), challenge.params.get("service", ""), scope, identity)

    def _guarded_fetch(
        self, registry: str, challenge: Challenge, scope: str, creds: Credentials | None, image: str
    ) -> tuple[str, float]:
        """`_fetch_token`, with anything a token server's answer raises that no reader foresaw as a RegistryError."""
        try:
            return self._fetch_token(registry, challenge, scope, creds, image)
        except errors.ReconcilerError:
            raise
        except Exception as exc:  # the boundary: a watch's check must end in our error tree, whatever was sent
            log.debug("token server of registry %s: unreadable answer for %s", registry, image, exc_info=True)
            raise errors.RegistryError(
                f"the token server of registry {registry} sent an answer for {image} that cannot be read "
                f"({type(exc).__name__})"  # never str(exc): it may quote a header, and so a credential
            ) from None

    def _fetch_token(
        self, registry: str, challenge: Challenge, scope: str, creds: Credentials | None, image: str
    ) -> tuple[str, float]:
        realm = challenge.params.get("realm")
        if not realm or not realm.startswith(("http://", "https://")):
            raise errors.RegistryAuthError(f"registry {registry} sent a bearer challenge without a usable realm")
        service = challenge.params.get("service", "")
        hooks = {"response": [refuse_unfollowable_redirect]}
        try:
            if creds is not None and creds.identity_token:
                response = self._session.post(
                    realm,
                    timeout=self._timeout,
                    hooks=hooks,
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
                response = self._session.get(realm, params=params, auth=auth, timeout=self._timeout, hooks=hooks)
        except UnfollowableRedirect:
            raise errors.RegistryError(
                f"the token server of registry {registry} redirected the token request for {image} to a Location "
                "that cannot be followed"
            ) from None
        except requests.RequestException as exc:
            raise errors.RegistryError(
                f"cannot reach the token server of registry {registry} at {one_line(realm)}: {type(exc).__name__}"
            ) from None
        self.tokens_fetched += 1
        asking = who(creds)
        if response.status_code in (401, 403):
            raise errors.RegistryAuthError(
                f"the token server of registry {registry} refused {asking} to {image} ({response.status_code}); "
                "check the registry credentials"
            )
        if response.status_code != 200:
            raise errors.RegistryError(
                f"the token server of registry {registry} answered {response.status_code} for {image}"
            )
        try:
            body = json_body(response)
        except ValueError:
            body = None
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not token:
            raise errors.RegistryError(f"the token server of registry {registry} sent no token for {image}")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):  # it could not go into a header
            raise errors.RegistryError(
                f"the token server of registry {registry} sent an unusable token for {image} (not printable ASCII "
                "of at most 64 KiB)"
            )
        return token, token_lifetime(body.get("expires_in"))  # from receipt: `issued_at` would need the wall clock
